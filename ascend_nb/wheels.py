"""Reference wheels: a pinned PyPI wheel fetched once with ``pip download --no-deps`` into the cache
(``<cache home>/wheels/``, beside the embedded model) and read as a zip file, never installed or imported.

The torch_npu wheel is the oracle of our NPU calls: it cannot be imported without CANN, but its Python files
hold each op's registered schema (``torch_npu/csrc/aten/npu_native_functions_by_codegen.yaml``), its documented
schema and semantics (``torch_npu/_op_plugin_docs.py``) and Huawei's meta functions, the output shapes and
dtypes (``torch_npu/op_plugin/meta/_meta_registrations.py``). Any wheel of a version holds the same Python
files; one platform is pinned so that every machine reads the same bytes (checked by sha256).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ascend_nb.atomic import file_lock
from ascend_nb.errors import AscendNbError
from ascend_nb.files import cache_home


@dataclass(frozen=True)
class ReferenceWheel:
    """One pinned wheel: the requirement pip downloads, the file it gives, its sha256 and pip's platform options."""

    requirement: str
    filename: str
    sha256: str
    pip_options: tuple[str, ...] = ()


TORCH_NPU_REFERENCE = ReferenceWheel(
    "torch-npu==2.12.0", "torch_npu-2.12.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    "22b92017af5c625caa8dcad0fad0b92517176372b28d7aa242e7ee26e9f92ab8",
    ("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp"))

# the torch_npu files the oracle reads
TORCH_NPU_SCHEMAS = "torch_npu/csrc/aten/npu_native_functions_by_codegen.yaml"
TORCH_NPU_DOCS = "torch_npu/_op_plugin_docs.py"
TORCH_NPU_META = "torch_npu/op_plugin/meta/_meta_registrations.py"


def wheels_dir() -> Path:
    """Where reference wheels are cached (``$ASCEND_NB_HOME/wheels``)."""
    return cache_home() / "wheels"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(wheel: ReferenceWheel = TORCH_NPU_REFERENCE) -> Path:
    """The cached wheel file, downloaded the first time (``pip download --no-deps``, checked by sha256, then
    renamed into place, so the cache holds a whole wheel or none). Safe from several processes at once."""
    folder = wheels_dir()
    target = folder / wheel.filename
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / f".{wheel.filename}.lock"):
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as workdir:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
                   *wheel.pip_options, "-d", workdir, wheel.requirement]
            done = subprocess.run(cmd, capture_output=True, text=True)
            got = Path(workdir) / wheel.filename
            if done.returncode != 0 or not got.is_file():
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise AscendNbError(f"could not download {wheel.requirement} ({wheel.filename}) from the package index "
                                    f"({last}); check pip's index access")
            digest = _sha256(got)
            if digest != wheel.sha256:
                raise AscendNbError(f"{wheel.filename} from the package index has sha256 {digest}, not the pinned "
                                    f"{wheel.sha256}: check the index (a mirror serving another file?)")
            os.replace(got, target)
    return target


def read_wheel_text(path: Path, member: str) -> str:
    """One file of a wheel, as text (read from the zip; nothing is extracted)."""
    with zipfile.ZipFile(path) as archive:
        try:
            return archive.read(member).decode("utf-8")
        except KeyError:
            raise AscendNbError(f"{path.name} has no {member}: is it the pinned wheel?") from None
