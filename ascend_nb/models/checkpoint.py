"""Read a model directory's weights lazily: ``pytorch_model*.bin`` (sharded or not) or ``*.safetensors``.

``.bin`` files are opened with ``torch.load(weights_only=True, mmap=True)``: only tensors and plain
containers are unpickled (never arbitrary objects), and tensor data stays on disk until a tensor
is used, so converting a 7B checkpoint does not need 7B parameters of RAM. Every shard is opened
(and so checked) before anything is written: a corrupt, truncated or missing shard is an
:class:`AscendNbError` up front.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from ascend_nb.errors import AscendNbError

BIN_INDEX = "pytorch_model.bin.index.json"
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}


def weight_files(directory: Path) -> list[Path]:
    """The weight files of ``directory`` in load order: index-listed shards, or the single file.

    Raises when the directory has no weights or when an index names a shard that is missing.
    """
    directory = Path(directory)
    for index_name, single in ((SAFETENSORS_INDEX, "model.safetensors"), (BIN_INDEX, "pytorch_model.bin")):
        index = directory / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise AscendNbError(f"{index} is corrupt ({exc}): restore it from the original download") from exc
            names = list(dict.fromkeys(weight_map.values()))
            missing = [name for name in names if not (directory / name).is_file()]
            if missing:
                raise AscendNbError(f"shard {missing[0]} listed in {index_name} is missing from {directory}: "
                                    "download every shard again")
            return [directory / name for name in names]
        if (directory / single).is_file():
            return [directory / single]
    raise AscendNbError(f"no weights in {directory}: expected pytorch_model.bin, {BIN_INDEX}, "
                        f"model.safetensors or {SAFETENSORS_INDEX}")


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    zipped = zipfile.is_zipfile(path)  # torch.save's format since 1.6; a truncated one has lost its directory
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"GLOBAL (\S+)", str(exc))  # torch's weights-only unpickler names the import it refused
        if zipped or unsafe:
            imports = f" (it imports {unsafe.group(1)})" if unsafe else ""
            raise AscendNbError(f"{path} was refused as unsafe pickle{imports}: it holds objects other than tensors "
                                "and was not unpickled; re-download it, or convert it where you trust its origin") from exc
        raise AscendNbError(f"{path} is corrupt or truncated (not a PyTorch file); re-download it") from exc
    except Exception as exc:  # noqa: BLE001 - bytes that are not a pickle fail the unpickler in any way (EOFError, IndexError...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AscendNbError(f"{path} is corrupt or truncated ({first}); re-download it") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AscendNbError(f"{path} is not a state dict of tensors: point at a model's pytorch_model*.bin")
    return state


def _safetensors_layout(path: Path) -> dict[str, tuple[int, torch.dtype, tuple[int, ...]]]:
    """Where each tensor's bytes begin in a safetensors file: ``name -> (offset, dtype, shape)``, the offset
    from the file's start (an 8-byte little-endian header length, the JSON header, then the data)."""
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
    data = 8 + length
    return {name: (data + entry["data_offsets"][0], SAFETENSORS_DTYPES[entry["dtype"]], tuple(entry["shape"]))
            for name, entry in header.items() if name != "__metadata__"}


class Checkpoint:
    """Lazy, read-only access to every tensor of a model directory, by name."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.files = weight_files(self.directory)
        self._tensors: dict[str, torch.Tensor] = {}
        self._handles: dict[str, object] = {}
        self._file_of: dict[str, Path] = {}
        self._layouts: dict[Path, dict[str, tuple]] = {}  # safetensors file -> name -> (offset, dtype, shape)
        for path in self.files:
            if path.suffix == ".safetensors":
                self._open_safetensors(path)
            else:
                for name, tensor in _load_bin(path).items():
                    self._tensors[name] = tensor
                    self._file_of[name] = path

    def _open_safetensors(self, path: Path) -> None:
        from safetensors import safe_open

        try:
            handle = safe_open(path, framework="pt")
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own SafetensorError
            raise AscendNbError(f"{path} is corrupt or truncated ({exc}); re-download it") from exc
        for name in handle.keys():
            self._handles[name] = handle
            self._file_of[name] = path

    def names(self) -> list[str]:
        """Tensor names in file order."""
        return list(self._file_of)

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self._tensors:
            return tuple(self._tensors[name].shape)
        return tuple(self._handles[name].get_slice(name).get_shape())

    def dtype(self, name: str) -> torch.dtype:
        if name in self._tensors:
            return self._tensors[name].dtype
        return SAFETENSORS_DTYPES[self._handles[name].get_slice(name).get_dtype()]

    def get(self, name: str) -> torch.Tensor:
        """The tensor (memory-mapped where the format allows)."""
        if name not in self._file_of:
            raise AscendNbError(f"tensor {name!r} is not in {self.directory}: the checkpoint is incomplete or "
                                "not the kind you named")
        if name in self._tensors:
            return self._tensors[name]
        return self._handles[name].get_tensor(name)

    def read(self, name: str, dtype: torch.dtype | None = None, dim: int = 0, start: int = 0,
             stop: int | None = None) -> torch.Tensor:
        """The tensor (or its rows, ``dim=0``, or columns, ``dim=1``, ``start:stop``) in memory of its own,
        as ``dtype``: read from a safetensors file straight into its final buffer (no mapping of the file
        outlives the call, so a loaded model holds its weights once, and a load peaks at the model plus
        one tensor); from a memory-mapped ``.bin``, a copy."""
        shape = self.shape(name)
        stop = shape[dim] if stop is None else stop
        if name in self._handles and (dim == 0 or len(shape) == 1):
            tensor = self._read_rows(name, start, stop)
        else:  # a .bin tensor (already mapped), or columns: slice, then copy
            tensor = self.get_part(name, dim, start, stop) if (start, stop) != (0, shape[dim]) else self.get(name)
            tensor = tensor.clone() if (dtype or tensor.dtype) == tensor.dtype else tensor
        return tensor if dtype is None or tensor.dtype == dtype else tensor.to(dtype)

    def _read_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        path = self._file_of[name]
        if path not in self._layouts:
            self._layouts[path] = _safetensors_layout(path)
        begin, dtype, shape = self._layouts[path][name]
        row_bytes = dtype.itemsize * math.prod(shape[1:])
        out = torch.empty((stop - start) * row_bytes, dtype=torch.uint8)
        view, offset = memoryview(out.numpy()), begin + start * row_bytes
        with open(path, "rb", buffering=0) as handle:
            filled = 0
            while filled < len(view):
                read = os.preadv(handle.fileno(), [view[filled:]], offset + filled)
                if read == 0:
                    raise AscendNbError(f"{path} ends inside tensor {name!r}: it is truncated; re-download it")
                filled += read
        return out.view(dtype).view(stop - start, *shape[1:]) if shape else out.view(dtype).view(())

    def get_part(self, name: str, dim: int, start: int, stop: int) -> torch.Tensor:
        """Rows (``dim=0``) or columns (``dim=1``) ``start:stop`` of a tensor, reading only that part
        from safetensors files (a tensor-parallel rank loads just its shard)."""
        if name in self._handles:
            part = self._handles[name].get_slice(name)
            return part[start:stop] if dim == 0 else part[:, start:stop]
        return self.get(name).narrow(dim, start, stop - start)

    def nbytes(self, dtype: torch.dtype | None = None) -> int:
        """Total size of all tensors, stored as ``dtype`` (default: as they are)."""
        total = 0
        for name in self._file_of:
            numel = 1
            for n in self.shape(name):
                numel *= n
            total += numel * (dtype or self.dtype(name)).itemsize
        return total
