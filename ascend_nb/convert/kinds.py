"""What a source path holds, so a wrong ``KIND`` gets an error naming the right one."""

from __future__ import annotations

from pathlib import Path

from ascend_nb.errors import AscendNbError
from ascend_nb.files import read_config_json

GGUF_MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        return handle.read(4) == GGUF_MAGIC


def read_source_config(src: Path) -> dict:
    """``config.json`` of a source directory, with one-line errors for the usual breakages."""
    src = Path(src)
    if is_gguf(src):
        raise AscendNbError(f"{src} is a GGUF file: use `ascend-nb convert gguf {src} DST`")
    return read_config_json(src, "restore it from the original download")


def kind_of_config(config: dict) -> str:
    """``baichuan2``, ``aquila`` or ``llama`` (any other Llama-family model) from a ``config.json`` dict."""
    model_type = str(config.get("model_type", "")).lower()
    architectures = " ".join(config.get("architectures") or []).lower()
    if model_type == "baichuan" or "baichuan" in architectures:
        return "baichuan2"
    if model_type == "aquila" or "aquila" in architectures:
        return "aquila"
    return "llama"


def detect_kind(src: Path) -> str:
    """``gguf`` for a GGUF file, else :func:`kind_of_config` of the directory's config."""
    return "gguf" if is_gguf(src) else kind_of_config(read_source_config(src))


def require_kind(src: Path, kind: str) -> dict:
    """Raise unless ``src`` is a ``kind`` checkpoint directory; return its config."""
    config = read_source_config(src)  # raises for GGUF files and non-directories
    found = kind_of_config(config)
    if found != kind:
        suggestion = "safetensors" if found == "llama" else found  # a plain Llama only needs its .bin converted
        raise AscendNbError(f"{src} is not what `convert {kind}` expects: its config.json says model_type "
                            f"{config.get('model_type')!r}; use `ascend-nb convert {suggestion} SRC DST`")
    return config
