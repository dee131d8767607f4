"""Weight conversion: from what users download to plain, safe transformers Llama directories.

- :func:`convert_gguf`: GGUF (any type the ``gguf`` package dequantizes) -> safetensors + config + tokenizer.
- :func:`convert_bin_to_safetensors`: ``pytorch_model*.bin`` -> sharded safetensors (optional dtype cast).
- :func:`convert_baichuan2`: Baichuan2-7B (``W_pack``, ``NormHead``, SentencePiece) -> Llama.
- :func:`convert_aquila`: Aquila-7B (``AquilaForCausalLM``) -> Llama.
- :func:`patch_auto_map`: point ``config.json`` at the vendor's Ascend modeling file (the guides' edit).
- :func:`verify_conversion`: logits of the original architecture vs the converted model, per position.
- :func:`converter` (a kind's converter, from :data:`~ascend_nb.convert.sources.CONVERTERS`),
  :func:`original_encoder` and :func:`encoding_table`: the original tokenizer against the converted one.

Every converter writes into a temporary directory beside ``dst`` (disk space checked first), verifies
there, writes a ``checksums.sha256`` manifest, and renames it into place; it returns a
:class:`~ascend_nb.convert.output.Conversion`. The same operations are ``ascend-nb convert KIND SRC DST``.
Names are resolved lazily, so importing this package does not import torch or transformers.
"""

from __future__ import annotations

from ascend_nb.lazy import lazy_exports

_EXPORTS = {
    "convert_gguf": "ascend_nb.convert.sources.gguf",
    "convert_bin_to_safetensors": "ascend_nb.convert.sources.bin_to_safetensors",
    "convert_baichuan2": "ascend_nb.convert.sources.baichuan2",
    "convert_aquila": "ascend_nb.convert.sources.aquila",
    "patch_auto_map": "ascend_nb.convert.auto_map",
    "verify_conversion": "ascend_nb.convert.verify",
    "Conversion": "ascend_nb.convert.output",
    "VerifyReport": "ascend_nb.convert.verify",
    "converter": "ascend_nb.convert.sources",
    "original_encoder": "ascend_nb.convert.sources",
    "encoding_table": "ascend_nb.convert.tokenizer_files",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
