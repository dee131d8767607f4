"""Write tensors as sharded safetensors (``model-00001-of-00003.safetensors`` + index), one tensor in memory.

Every converter describes its output as a list of :class:`PlannedTensor` (name, shape, dtype and a
function that produces the tensor), so shard boundaries, every file's header and the disk space needed
are known before anything is read or written. Each file's header is written first, then each tensor is
produced, appended and released in turn (:func:`write_shard_file`), so writing holds one tensor, never
a shard. A single shard is written as ``model.safetensors`` without an index, as ``save_pretrained`` does.

The source side: :class:`SourceShards` keeps at most one ``.bin`` shard of the source memory-mapped and
drops it (every reference, so the mapping goes) when a tensor of another shard is asked for, or at the
end; pages read from a mapping count in the process's resident memory until it is unmapped, so a
conversion peaks at about one source shard plus one tensor, not at the whole checkpoint.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ascend_nb.dtypes import dtype_name
from ascend_nb.models.checkpoint import BIN_INDEX, SAFETENSORS_DTYPES, SAFETENSORS_INDEX, Checkpoint
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
    source_file: str = ""  # the source file it is read from (shown in the progress line)
    release: Callable[[], None] | None = None  # drops what ``load`` keeps open (called once all is written)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def produce(self) -> torch.Tensor:
        """The tensor in its output dtype and contiguous, copied only when a cast or a layout change needs it
        (so it may be a view of a memory-mapped source)."""
        tensor = self.load()
        if tuple(tensor.shape) != self.shape:
            raise AscendNbError(f"tensor {self.name} has shape {tuple(tensor.shape)}, expected {self.shape}: "
                                "the checkpoint does not match its config.json")
        return tensor.to(dtype=self.dtype).contiguous()

    def materialize(self) -> torch.Tensor:
        """The tensor in its output dtype, contiguous and owning its memory."""
        tensor = self.load()
        if tuple(tensor.shape) != self.shape:
            raise AscendNbError(f"tensor {self.name} has shape {tuple(tensor.shape)}, expected {self.shape}: "
                                "the checkpoint does not match its config.json")
        return tensor.to(dtype=self.dtype, memory_format=torch.contiguous_format, copy=True)


class SourceShards:
    """A checkpoint's tensors by name with at most one ``.bin`` shard memory-mapped at a time.

    Asking for a tensor of another shard first drops the current one (its tensors, so the mapping goes);
    :meth:`release` drops it at the end. Tensors of ``.safetensors`` sources are read into memory of their
    own (``Checkpoint.read``, no mapping kept). Shapes and dtypes come from ``checkpoint``.
    """

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        directory = checkpoint.directory
        if len(checkpoint.files) == 1:
            self._file_of = dict.fromkeys(checkpoint.names(), checkpoint.files[0])
        else:
            index = directory / (SAFETENSORS_INDEX if (directory / SAFETENSORS_INDEX).is_file() else BIN_INDEX)
            self._file_of = {name: directory / file for name, file in json.loads(index.read_text())["weight_map"].items()}
        self._path: Path | None = None
        self._tensors: dict[str, torch.Tensor] = {}
        self.loads = 0  # shards mapped so far (a shard read in order is mapped once)

    def file_of(self, name: str) -> Path:
        return self._file_of[name]

    def get(self, name: str) -> torch.Tensor:
        """The tensor: a view of its memory-mapped ``.bin`` shard, or a safetensors tensor read into memory."""
        path = self._file_of.get(name)
        if path is None or path.suffix == ".safetensors":
            return self.checkpoint.read(name) if path is not None else self.checkpoint.get(name)
        if path != self._path:
            self.release()
            # the shard was opened and checked (weights only, a state dict of tensors) by Checkpoint already
            self._tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
            self._path = path
            self.loads += 1
        return self._tensors[name]

    def release(self) -> None:
        """Drop the mapped shard (a tensor still held elsewhere keeps its pages until it goes)."""
        self._tensors, self._path = {}, None

    def copy(self, name: str, dtype: torch.dtype | None) -> PlannedTensor:
        """The plan for copying ``name`` (cast to ``dtype`` if given and floating-point)."""
        source_dtype = self.checkpoint.dtype(name)
        out_dtype = dtype if dtype is not None and source_dtype.is_floating_point else source_dtype
        return PlannedTensor(name, self.checkpoint.shape(name), out_dtype, lambda: self.get(name), source=name,
                             transform="copy" if out_dtype == source_dtype else f"cast to {dtype_name(out_dtype)}",
                             source_file=self.file_of(name).name, release=self.release)


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


SAFETENSORS_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
HEADER_ALIGNMENT = 8  # safetensors pads its JSON header with spaces so the data starts 8-byte aligned


def safetensors_header(tensors: Sequence[PlannedTensor], metadata: dict[str, str] | None = None) -> bytes:
    """The first bytes of a safetensors file of ``tensors`` (in this order): length, JSON header, padding."""
    header: dict[str, dict] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for tensor in tensors:
        if tensor.dtype not in SAFETENSORS_NAMES:
            raise AscendNbError(f"tensor {tensor.name} has dtype {tensor.dtype}, which this writer does not store")
        header[tensor.name] = {"dtype": SAFETENSORS_NAMES[tensor.dtype], "shape": list(tensor.shape),
                               "data_offsets": [offset, offset + tensor.nbytes]}
        offset += tensor.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % HEADER_ALIGNMENT)
    return len(text).to_bytes(8, "little") + text


def write_shard_file(path: Path, tensors: Sequence[PlannedTensor], done: Callable[[PlannedTensor], None] | None = None,
                     metadata: dict[str, str] | None = None) -> None:
    """Write one safetensors file: the header (known from the plan), then each tensor produced, appended and
    released in turn, so memory holds one tensor (a copy only when a cast needs it). ``done`` is called after each."""
    with open(path, "wb") as handle:
        handle.write(safetensors_header(tensors, metadata or {"format": "pt"}))
        for tensor in tensors:
            data = tensor.produce()
            if data.numel():
                handle.write(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
            del data
            if done is not None:
                done(tensor)


def write_safetensors(directory: Path, tensors: Sequence[PlannedTensor], max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
                      progress: bool = True) -> dict[str, str]:
    """Write ``tensors`` into ``directory`` as safetensors shards (+ index when more than one).

    Returns the weight map (tensor name -> file name). Memory holds one tensor at a time; every
    ``PlannedTensor.release`` is called at the end (sources dropped).
    """
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise AscendNbError(f"duplicate tensor names in the conversion plan: {sorted({n for n in names if names.count(n) > 1})}")
    shards = plan_shards(tensors, parse_size(max_shard_size))
    files = shard_file_names(len(shards))
    weight_map: dict[str, str] = {}
    bar = progress_bar(len(tensors), desc=f"write {Path(directory).name}", unit="tensor", disable=not progress)
    shown = [""]

    def advance(tensor: PlannedTensor, file_name: str) -> None:
        where = f"{file_name} <- {tensor.source_file}" if tensor.source_file else file_name
        if where != shown[0]:
            bar.set_postfix_str(where)
            shown[0] = where
        bar.update()

    try:
        with bar:
            for file_name, shard in zip(files, shards):
                write_shard_file(Path(directory) / file_name, shard, lambda t, f=file_name: advance(t, f))
                weight_map.update(dict.fromkeys((t.name for t in shard), file_name))
    finally:
        release_sources(tensors)
    if len(files) > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)},
                 "weight_map": dict(sorted(weight_map.items()))}
        (Path(directory) / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return weight_map


def release_sources(tensors: Sequence[PlannedTensor]) -> None:
    """Call each distinct ``PlannedTensor.release`` once."""
    for release in dict.fromkeys(t.release for t in tensors if t.release is not None):
        release()


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
