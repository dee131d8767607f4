"""Atomic output directories with a sha256 manifest, and a disk-space check before writing."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ascend_nb.errors import AscendNbError

MANIFEST = "checksums.sha256"  # `sha256sum -c checksums.sha256` format


def check_free_space(directory: Path, needed_bytes: int) -> None:
    """Raise a clear error when ``directory``'s file system has less than ``needed_bytes`` free."""
    directory = Path(directory)
    probe = directory if directory.exists() else next(p for p in directory.parents if p.exists())
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise AscendNbError(f"not enough disk space in {probe}: need {needed_bytes / 2**30:.2f} GiB, "
                            f"{free / 2**30:.2f} GiB free; free some space or choose another destination")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> Path:
    """Write ``checksums.sha256`` listing every file under ``directory``."""
    directory = Path(directory)
    lines = [f"{sha256_file(p)}  {p.relative_to(directory).as_posix()}"
             for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST]
    target = directory / MANIFEST
    target.write_text("\n".join(lines) + "\n")
    return target


def verify_manifest(directory: Path, digest_of: Callable[[Path], str] = sha256_file) -> list[str]:
    """Names of files whose checksum no longer matches the manifest (missing files included).

    ``digest_of`` computes a file's sha256 (a cache may answer for files that did not change)."""
    directory = Path(directory)
    bad = []
    for line in (directory / MANIFEST).read_text().splitlines():
        digest, name = line.split("  ", 1)
        path = directory / name
        if not path.is_file() or digest_of(path) != digest:
            bad.append(name)
    return bad


@contextmanager
def atomic_directory(dst: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``dst``; on success write the manifest and rename it to ``dst``.

    On any failure (or Ctrl-C) the temporary directory is removed, so ``dst`` is either absent, the
    old version, or complete. An existing ``dst`` is only replaced with ``force=True``.
    """
    dst = Path(dst)
    if dst.exists() and not force:
        raise AscendNbError(f"{dst} already exists: pass --force to overwrite it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        write_manifest(tmp)
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
            os.replace(dst, old / dst.name)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
