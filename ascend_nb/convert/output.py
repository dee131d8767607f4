"""The common end of every converter: checks before writing, the atomic write, verification, provenance.

A converter validates its source, builds its list of :class:`PlannedTensor` and a function writing
the small files (config, tokenizer, ...); :func:`write_converted` then writes the shards and those
files into a temporary directory beside ``dst``, verifies the result there, writes
``conversion.json`` and the sha256 manifest, and only then renames it to ``dst``. A failed check
leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ascend_nb.atomic import atomic_directory, check_free_space
from ascend_nb.convert.shards import DEFAULT_MAX_SHARD_SIZE, PlannedTensor, write_safetensors
from ascend_nb.dtypes import dtype_name
from ascend_nb.dtypes import parse_dtype as _parse_dtype
from ascend_nb.errors import AscendNbError

CONVERSION_FILE = "conversion.json"
SMALL_FILES_MARGIN = 64 << 20  # tokenizer, config and manifest
LICENSE_PATTERNS = ("LICENSE*", "NOTICE*", "*License*.pdf", "*license*.pdf", "*LICENSE*.pdf")


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"float16"``, ``torch.float16`` -> ``torch.float16``; ``None`` or ``"auto"`` -> None (keep the source's)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    return _parse_dtype(dtype, float64=True)


@dataclass
class Conversion:
    """What a converter wrote: the directory, every tensor's provenance and the verification report."""

    path: Path
    kind: str
    tensors: Sequence[PlannedTensor]
    weight_map: dict[str, str]
    verification: object | None = None  # ascend_nb.convert.verify.VerifyReport

    def tensor_table(self):
        """One row per converted tensor: name, shape, dtype, source tensor(s), transform, file."""
        import pandas as pd

        return pd.DataFrame([{"name": t.name, "shape": "x".join(map(str, t.shape)), "dtype": dtype_name(t.dtype),
                              "MiB": round(t.nbytes / 2**20, 3), "source": t.source, "transform": t.transform,
                              "file": self.weight_map[t.name]} for t in self.tensors])


def preflight(dst: Path, force: bool, tensors: Sequence[PlannedTensor], source: Path) -> None:
    """Refuse a ``dst`` that holds ``source`` or lies inside it, an existing ``dst`` without ``force``,
    and too little disk space, before any work is done."""
    dst = Path(dst)
    where, origin = dst.resolve(), Path(source).resolve()
    if origin.is_relative_to(where) or where.is_relative_to(origin):
        relation = ("is" if where == origin else "holds" if origin.is_relative_to(where) else "lies inside")
        raise AscendNbError(f"{dst} {relation} the source {source}: writing there could delete the source; "
                            "write the conversion to a directory outside the source")
    if dst.exists() and not force:
        raise AscendNbError(f"{dst} already exists: pass --force to overwrite it")
    check_free_space(dst.parent, sum(t.nbytes for t in tensors) + SMALL_FILES_MARGIN)


def copy_license_files(src: Path, out: Path) -> None:
    """Keep the model's license texts with the converted weights."""
    for pattern in LICENSE_PATTERNS:
        for path in Path(src).glob(pattern):
            if path.is_file() and not (out / path.name).exists():
                shutil.copy2(path, out / path.name)


def write_converted(dst: Path, kind: str, source: Path, tensors: Sequence[PlannedTensor],
                    write_files: Callable[[Path], None], *, force: bool = False, progress: bool = True,
                    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
                    verify: Callable[[Path], object] | None = None) -> Conversion:
    """Write shards + small files into a temporary directory, verify there, then rename it to ``dst``."""
    preflight(dst, force, tensors, source)
    with atomic_directory(Path(dst), force=force) as out:
        weight_map = write_safetensors(out, tensors, max_shard_size, progress)
        write_files(out)
        report = verify(out) if verify is not None else None
        provenance = {"kind": kind, "source": str(Path(source).resolve()),
                      "dtypes": sorted({dtype_name(t.dtype) for t in tensors}),
                      "verification": report.as_dict() if report is not None else None}
        (out / CONVERSION_FILE).write_text(json.dumps(provenance, indent=2, ensure_ascii=False) + "\n")
    return Conversion(path=Path(dst), kind=kind, tensors=tensors, weight_map=weight_map, verification=report)
