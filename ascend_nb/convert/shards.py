"""Write tensors as sharded safetensors (``model-00001-of-00003.safetensors`` + index), one shard in memory.

Every converter describes its output as a list of :class:`PlannedTensor` (name, shape, dtype and a
function that produces the tensor), so shard boundaries and the disk space needed are known before
anything is read or written; each shard's tensors are produced, saved and released in turn. A single
shard is written as ``model.safetensors`` without an index, as ``save_pretrained`` does.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ascend_nb.models.checkpoint import SAFETENSORS_INDEX
from ascend_nb.errors import AscendNbError
from ascend_nb.progress import progress_bar

DEFAULT_MAX_SHARD_SIZE = "5GB"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: its name, shape and dtype, where it comes from, and how to produce it."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    load: Callable[[], torch.Tensor]
    source: str = ""  # the source tensor name(s)
    transform: str = "copy"  # what was done to it, in words

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def materialize(self) -> torch.Tensor:
        """The tensor in its output dtype, contiguous and owning its memory (safetensors needs both)."""
        tensor = self.load()
        if tuple(tensor.shape) != self.shape:
            raise AscendNbError(f"tensor {self.name} has shape {tuple(tensor.shape)}, expected {self.shape}: "
                                "the checkpoint does not match its config.json")
        return tensor.to(dtype=self.dtype, memory_format=torch.contiguous_format, copy=True)


def parse_size(size: str | int) -> int:
    """``"5GB"`` -> 5_000_000_000, ``"500MiB"`` -> 524_288_000, ``1024`` -> 1024."""
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", str(size).upper())
        if not match or match.group(2) not in _UNITS:
            raise AscendNbError(f"cannot read the size {size!r}: write it like 5GB, 500MB, 2GiB or a byte count")
        value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise AscendNbError(f"the shard size must be positive, got {size!r}")
    return value


def plan_shards(tensors: Sequence[PlannedTensor], max_shard_size: int) -> list[list[PlannedTensor]]:
    """Group tensors in order into shards of at most ``max_shard_size`` bytes (a bigger tensor gets its own)."""
    shards: list[list[PlannedTensor]] = []
    size = 0
    for tensor in tensors:
        if not shards or (size + tensor.nbytes > max_shard_size and shards[-1]):
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def shard_file_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def write_safetensors(directory: Path, tensors: Sequence[PlannedTensor], max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
                      progress: bool = True) -> dict[str, str]:
    """Write ``tensors`` into ``directory`` as safetensors shards (+ index when more than one).

    Returns the weight map (tensor name -> file name). Memory holds one shard's tensors at a time.
    """
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise AscendNbError(f"duplicate tensor names in the conversion plan: {sorted({n for n in names if names.count(n) > 1})}")
    shards = plan_shards(tensors, parse_size(max_shard_size))
    files = shard_file_names(len(shards))
    weight_map: dict[str, str] = {}
    bar = progress_bar(len(tensors), desc=f"write {Path(directory).name}", unit="tensor", disable=not progress)
    with bar:
        for file_name, shard in zip(files, shards):
            bar.set_postfix_str(file_name)
            produced = {}
            for tensor in shard:
                produced[tensor.name] = tensor.materialize()
                bar.update()
            save_file(produced, Path(directory) / file_name, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(produced, file_name))
    if len(files) > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)},
                 "weight_map": dict(sorted(weight_map.items()))}
        (Path(directory) / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return weight_map


def read_weight_map(directory: Path) -> dict[str, str]:
    """Tensor name -> file name of a safetensors model directory (from its index, or its single file)."""
    from safetensors import safe_open

    directory = Path(directory)
    index = directory / SAFETENSORS_INDEX
    if index.is_file():
        return json.loads(index.read_text())["weight_map"]
    with safe_open(directory / "model.safetensors", framework="pt") as handle:
        return dict.fromkeys(handle.keys(), "model.safetensors")


def parameter_count(tensors: list[PlannedTensor]) -> int:
    """Elements in all ``tensors`` (the model's parameter count)."""
    return sum(math.prod(t.shape) for t in tensors)
