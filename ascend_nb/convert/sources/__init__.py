"""One converter per source format users download: GGUF (and its reader), Baichuan2, Aquila, ``pytorch_model*.bin``.

:data:`CONVERTERS` is the one table of them (the CLI's ``convert KIND`` and the notebooks pick from it).
The shared machinery they write through lives one level up (:mod:`ascend_nb.convert.output`, ``shards``,
``kinds``, ``llama_target``, ``tokenizer_files``, ``verify``, ``original``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from ascend_nb.errors import AscendNbError

# kind -> "module:function"; imported on first use, so naming the kinds stays light
CONVERTERS = {
    "gguf": "ascend_nb.convert.sources.gguf:convert_gguf",
    "safetensors": "ascend_nb.convert.sources.bin_to_safetensors:convert_bin_to_safetensors",
    "baichuan2": "ascend_nb.convert.sources.baichuan2:convert_baichuan2",
    "aquila": "ascend_nb.convert.sources.aquila:convert_aquila",
}
TOKENIZER_KINDS = ("baichuan2", "aquila")  # sources whose tokenizer the converter rebuilds (original_encoder)


def _module(kind: str):
    if kind not in CONVERTERS:
        raise AscendNbError(f"unknown conversion kind {kind!r}: use one of {', '.join(CONVERTERS)}")
    return importlib.import_module(CONVERTERS[kind].split(":")[0])


def converter(kind: str) -> Callable:
    """The converter function of ``kind`` (``convert_gguf``, ``convert_baichuan2``...)."""
    return getattr(_module(kind), CONVERTERS[kind].split(":")[1])


def original_encoder(kind: str, src: str | Path) -> Callable[[str], list[int]]:
    """How the original checkpoint at ``src`` encodes text (no special tokens), as its users run it today."""
    if kind not in TOKENIZER_KINDS:
        raise AscendNbError(f"{kind} sources keep their tokenizer: compare tokenizers of {', '.join(TOKENIZER_KINDS)}")
    return _module(kind).original_encoder(Path(src))
