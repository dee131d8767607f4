"""One device layer: pick npu > cuda > cpu, synchronize, memory statistics and dtype support.

Nothing here crashes when torch_npu or CANN is absent: the reason NPU is unavailable is recorded
and reported. ``TORCH_DEVICE_BACKEND_AUTOLOAD=0`` is set by ``ascend_nb/__init__.py`` before torch
is imported (torch >= 2.5 would otherwise try to autoload torch_npu and fail without CANN);
torch_npu is then imported explicitly here, only when NPU is probed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ascend_nb.errors import AscendNbError

DEVICE_TYPES = ("npu", "cuda", "cpu")
# torch_npu._C._npu_get_soc_version(): 200-205 are the 310P family (Atlas 300I DUO), no bf16.
SOC_310P = range(200, 206)
SOC_NAMES = {220: "910B1", 221: "910B2", 222: "910B2C", 223: "910B3", 224: "910B4", 225: "910B4_1"}
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@functools.lru_cache(maxsize=1)
def npu_unavailable_reason() -> str | None:
    """Return why the NPU cannot be used here, or None when torch_npu sees at least one NPU."""
    try:
        import torch_npu  # noqa: F401  (registers torch.npu)
    except ModuleNotFoundError:
        return "torch_npu is not installed (pip install 'ascend-nb[npu]' with the torch your CANN needs)"
    except Exception as exc:  # noqa: BLE001 - e.g. OSError libhccl.so when CANN is not sourced
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"import torch_npu failed: {first_line} (source the CANN set_env.sh first)"
    if not torch.npu.is_available():
        return "torch_npu is installed but torch.npu.is_available() is False (check the driver: npu-smi info)"
    return None


def npu_available() -> bool:
    """True when torch_npu imports and reports at least one NPU."""
    return npu_unavailable_reason() is None


def available_device_types() -> list[str]:
    """Device types usable here, best first."""
    found = []
    if npu_available():
        found.append("npu")
    if torch.cuda.is_available():
        found.append("cuda")
    found.append("cpu")
    return found


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"npu"``, ``"cuda:1"``, ... into a torch.device, or raise a clear error."""
    if isinstance(device, torch.device):
        device = str(device)
    device = (device or "auto").strip().lower()
    if device == "auto":
        return torch.device(available_device_types()[0])
    kind = device.split(":")[0]
    if kind not in DEVICE_TYPES:
        raise AscendNbError(f"unknown device {device!r}: use one of auto, npu, cuda, cpu (optionally with :INDEX)")
    if kind == "npu" and not npu_available():
        raise AscendNbError(f"device 'npu' is not available: {npu_unavailable_reason()}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise AscendNbError("device 'cuda' is not available: torch.cuda.is_available() is False; use --device cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise AscendNbError(f"invalid device {device!r}: use auto, npu, cuda or cpu, optionally with :INDEX") from exc
    if kind == "cpu" and resolved.index not in (None, 0):
        raise AscendNbError(f"device {device!r} does not exist: the CPU is one device, use cpu (or cpu:0)")
    if kind != "cpu" and resolved.index is not None and resolved.index >= _backend(kind).device_count():
        raise AscendNbError(f"device {device!r} does not exist: only {_backend(kind).device_count()} {kind} device(s)")
    return resolved


def _backend(kind: str):
    return getattr(torch, kind)


@dataclass(frozen=True)
class DeviceInfo:
    """What the rest of the package needs to know about one device."""

    type: str
    index: int
    name: str
    soc_version: int | None
    supports_bf16: bool
    total_memory_mb: float | None

    @property
    def is_310p(self) -> bool:
        return self.soc_version in SOC_310P or "310P" in self.name


def device_info(device: str | torch.device = "auto") -> DeviceInfo:
    """Describe a device: name, SoC version (NPU), bf16 support and total memory."""
    dev = resolve_device(device)
    index = dev.index or 0
    if dev.type == "cpu":
        return DeviceInfo("cpu", 0, cpu_name(), None, cpu_supports_bf16(), None)
    backend = _backend(dev.type)
    name = backend.get_device_name(index)
    free, total = backend.mem_get_info(index)
    if dev.type == "npu":
        import torch_npu

        soc = int(torch_npu._C._npu_get_soc_version())
        bf16 = soc not in SOC_310P and "310P" not in name
        return DeviceInfo("npu", index, name, soc, bf16, total / 2**20)
    return DeviceInfo("cuda", index, name, None, torch.cuda.is_bf16_supported(), total / 2**20)


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else the machine architecture."""
    import platform
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX / AVX-NE-CONVERT)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device = "auto") -> torch.dtype:
    """Pick the compute dtype; ``"auto"`` is fp16 on NPU, bf16 on CUDA/CPU where supported, else fp32.

    Asking for bf16 on a device without it (Atlas 300I DUO / 310P) is a clear error.
    """
    info = device_info(device)
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    elif (dtype or "auto") == "auto":
        if info.type == "npu":
            return torch.float16
        return torch.bfloat16 if info.supports_bf16 else torch.float32
    elif dtype in DTYPES:
        chosen = DTYPES[dtype]
    else:
        raise AscendNbError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16")
    if chosen == torch.bfloat16 and info.type == "npu" and not info.supports_bf16:
        raise AscendNbError(f"{info.name} (310P) has no bfloat16 support: use --dtype float16")
    return chosen


def synchronize(device: str | torch.device = "cpu") -> None:
    """Wait for all queued work on the device; call before every clock read."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type in ("cuda", "npu"):
        _backend(dev.type).synchronize(dev)


def reset_peak_memory(device: str | torch.device) -> None:
    """Reset the peak-allocated counter (no-op on CPU)."""
    dev = torch.device(device)
    if dev.type in ("cuda", "npu"):
        _backend(dev.type).reset_peak_memory_stats(dev)


def memory_stats(device: str | torch.device) -> dict[str, float | None]:
    """Allocated, peak allocated and total memory in MB; CPU reports the process's peak RSS."""
    dev = torch.device(device)
    if dev.type in ("cuda", "npu"):
        backend = _backend(dev.type)
        free, total = backend.mem_get_info(dev)
        return {"allocated_mb": backend.memory_allocated(dev) / 2**20,
                "peak_mb": backend.max_memory_allocated(dev) / 2**20,
                "free_mb": free / 2**20, "total_mb": total / 2**20}
    import resource

    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"allocated_mb": None, "peak_mb": peak_rss_mb, "free_mb": None, "total_mb": None}


def set_thread_device(device: str | torch.device) -> None:
    """Bind the calling thread to the device; torch_npu needs this in every worker thread."""
    dev = torch.device(device)
    if dev.type in ("cuda", "npu"):
        _backend(dev.type).set_device(dev)
