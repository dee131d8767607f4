"""``pytorch_model*.bin`` -> sharded safetensors: same tensors and files, no pickle, optional dtype cast.

The ``.bin`` files are read with ``torch.load(weights_only=True)`` (tensors only, never arbitrary
objects) and memory-mapped one shard at a time (each released once its tensors are written), the output
is written one tensor at a time, and every written tensor is read back (into memory of its own, no
mapping kept) and compared with its source before the directory is renamed into place. Everything else
in the directory (config, tokenizer, remote-code files, license) is copied unchanged, except the
``dtype`` recorded in ``config.json`` when the weights are cast.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ascend_nb.models.checkpoint import BIN_INDEX, SAFETENSORS_INDEX, Checkpoint
from ascend_nb.convert.kinds import read_source_config
from ascend_nb.convert.output import Conversion, dtype_name, parse_dtype, write_converted
from ascend_nb.convert.shards import DEFAULT_MAX_SHARD_SIZE, PlannedTensor, SourceShards, release_sources
from ascend_nb.errors import AscendNbError


@dataclass
class TensorCheck:
    """Read-back comparison of every written tensor with its (cast) source."""

    tensors: int
    mismatched: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatched

    def summary(self) -> str:
        if self.passed:
            return f"PASS: all {self.tensors} tensors read back equal to the source"
        return f"FAIL: {len(self.mismatched)} of {self.tensors} tensors differ, first {self.mismatched[0]}"

    def as_dict(self) -> dict:
        return {"passed": self.passed, "tensors": self.tensors, "mismatched": self.mismatched}


def check_written_tensors(directory: Path, tensors: list[PlannedTensor]) -> TensorCheck:
    """Compare each tensor in ``directory``'s safetensors files with ``PlannedTensor.produce()``, one at a
    time: the written one is read into memory of its own (no mapping of the output is kept), the source
    one from its shard (one mapped at a time)."""
    written = Checkpoint(directory)
    check = TensorCheck(tensors=len(tensors))
    try:
        for tensor in tensors:
            if not torch.equal(written.read(tensor.name), tensor.produce()):
                check.mismatched.append(tensor.name)
    finally:
        release_sources(tensors)
    return check


def _is_weight_file(path: Path, weights: list[Path]) -> bool:
    return path in weights or path.name in (BIN_INDEX, SAFETENSORS_INDEX)


def convert_bin_to_safetensors(src: Path, dst: Path, dtype: str | torch.dtype | None = None,
                               max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE, force: bool = False,
                               progress: bool = True, verify: bool = True) -> Conversion:
    """Rewrite the checkpoint directory ``src`` as safetensors shards in ``dst`` (atomically).

    ``dtype`` (float16, bfloat16, float32; None keeps each tensor's) applies to floating-point
    tensors only. With ``verify`` each written tensor is read back and compared.
    """
    src, dst = Path(src), Path(dst)
    config = read_source_config(src)
    checkpoint = Checkpoint(src)
    source = SourceShards(checkpoint)
    dtype = parse_dtype(dtype)
    tensors = [source.copy(name, dtype) for name in checkpoint.names()]

    def write_files(out: Path) -> None:
        for path in sorted(src.iterdir()):
            if path.is_file() and not _is_weight_file(path, checkpoint.files) and path.name != "config.json":
                shutil.copy2(path, out / path.name)
        if dtype is not None:
            config.pop("torch_dtype", None)
            config["dtype"] = dtype_name(dtype)
        (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    def check(out: Path) -> TensorCheck:
        result = check_written_tensors(out, tensors)
        if not result.passed:
            raise AscendNbError(f"written tensors differ from the source ({result.summary()}): check the disk and retry")
        return result

    return write_converted(dst, "safetensors", src, tensors, write_files, force=force, progress=progress,
                           max_shard_size=max_shard_size, verify=check if verify else None)
