"""One device layer: pick npu > cuda > cpu, synchronize, memory statistics, dtype support, and the
one placement decision (:func:`place`): device, dtype, CPU features, kernel path, graph mode and
tensor-parallel group, resolved once per engine and read by every layer above.

Nothing here crashes when torch_npu or CANN is absent: the reason NPU is unavailable is recorded
and reported. ``TORCH_DEVICE_BACKEND_AUTOLOAD=0`` is set by ``ascend_nb/__init__.py`` before torch
is imported (torch >= 2.5 would otherwise try to autoload torch_npu and fail without CANN);
torch_npu is then imported explicitly here, only when NPU is probed.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from dataclasses import dataclass

import torch

from ascend_nb import dtypes, native
from ascend_nb.cpu_features import CpuFeatures, cpu_features
from ascend_nb.errors import AscendNbError
from ascend_nb.parallel import TensorParallel, check_ranks, init_tensor_parallel, local_device

DEVICE_TYPES = ("npu", "cuda", "cpu")
# torch_npu._C._npu_get_soc_version(): 200-205 are the 310P family (Atlas 300I DUO), no bf16.
SOC_310P = range(200, 206)
SOC_NAMES = {220: "910B1", 221: "910B2", 222: "910B2C", 223: "910B3", 224: "910B4", 225: "910B4_1"}
DTYPES = dtypes.DTYPES  # the names users may type (ascend_nb.dtypes holds them)


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
        """An Atlas 300I DUO chip (310P family): no bfloat16, fp16 attention only."""
        return is_310p(self.soc_version, self.name)


def is_310p(soc_version: int | None, name: str) -> bool:
    """Whether a SoC version or device name is of the 310P family."""
    return soc_version in SOC_310P or "310P" in name


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
        return DeviceInfo("npu", index, name, soc, not is_310p(soc, name), total / 2**20)
    return DeviceInfo("cuda", index, name, None, torch.cuda.is_bf16_supported(), total / 2**20)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else the machine architecture."""
    return cpu_features().name


def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 / AMX / AVX-NE-CONVERT)."""
    return cpu_features().onednn_bf16


def choose_dtype(dtype: str | torch.dtype, kind: str, supports_bf16: bool, name: str) -> torch.dtype:
    """The compute dtype on a device of ``kind`` (here or planned for); ``"auto"`` is fp16 on NPU, bf16
    where supported, else fp32. Asking for bf16 on a device without it (Atlas 300I DUO / 310P) is a clear error."""
    if (dtype or "auto") == "auto":
        return torch.float16 if kind == "npu" else torch.bfloat16 if supports_bf16 else torch.float32
    chosen = dtype if isinstance(dtype, torch.dtype) else dtypes.parse_dtype(dtype)
    if chosen == torch.bfloat16 and kind == "npu" and not supports_bf16:
        raise AscendNbError(f"{name} (310P) has no bfloat16 support: use --dtype float16")
    return chosen


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device = "auto") -> torch.dtype:
    """Pick the compute dtype on ``device`` of this machine (:func:`choose_dtype`)."""
    info = device_info(device)
    return choose_dtype(dtype, info.type, info.supports_bf16, info.name)


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


def host_memory() -> tuple[int | None, int | None]:
    """(total, available) bytes of RAM from /proc/meminfo, the one place it is read ((None, None) without it)."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None, None
    values = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def kib(key: str) -> int | None:
        return int(values[key].split()[0]) * 1024 if key in values else None

    return kib("MemTotal"), kib("MemAvailable")


def free_memory_bytes(device: str | torch.device) -> int:
    """Free memory for new tensors: the accelerator's free memory, or the host's MemAvailable."""
    dev = torch.device(device)
    if dev.type != "cpu":
        return int(memory_stats(dev)["free_mb"] * 2**20)
    available = host_memory()[1]
    return available if available is not None else os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def set_thread_device(device: str | torch.device) -> None:
    """Bind the calling thread to the device; torch_npu needs this in every worker thread."""
    dev = torch.device(device)
    if dev.type in ("cuda", "npu"):
        _backend(dev.type).set_device(dev)


# -- the placement decision --------------------------------------------------------------------------
# Kernel paths of the accelerated backend per device type, fastest first (CPU order measured:
# docs/benchmarks.md); "torch" is the plain-PyTorch reference twin, runnable everywhere.
KERNEL_PATHS = {
    "npu": ("npu-torch_npu", "torch"),
    "cuda": ("cuda-sdpa", "torch"),
    "cpu": ("cpu-avx512bf16-gemv", "cpu-avx512-gemv", "cpu-onednn", "cpu-avx2-gemv", "cpu-aten", "torch"),
}
# what a CPU kernel path needs: (CPU features, instruction set of its native kernels or None)
CPU_PATH_NEEDS = {
    "cpu-avx512bf16-gemv": (lambda cpu: cpu.avx512f and cpu.avx512bw and cpu.avx512_bf16 and cpu.avx512_vnni and cpu.f16c,
                            "avx512bf16"),
    "cpu-avx512-gemv": (lambda cpu: cpu.avx512f and cpu.avx512bw and cpu.f16c, "avx512"),
    "cpu-onednn": (lambda cpu: cpu.onednn_bf16, None),
    "cpu-avx2-gemv": (lambda cpu: cpu.avx2 and cpu.fma and cpu.f16c, "avx2"),
    "cpu-aten": (lambda cpu: True, None),
    "torch": (lambda cpu: True, None),
}
GRAPH_MODES = {"cuda": "cuda-graph", "npu": "torchair", "cpu": "torch.compile"}
KERNELS_ENV = "ASCEND_NB_KERNELS"


@dataclass(frozen=True)
class Placement:
    """Where and how one engine runs, decided once by :func:`place` and only read afterwards."""

    device: torch.device
    dtype: torch.dtype
    cpu: CpuFeatures
    kernels: str  # a name of KERNEL_PATHS (accelerated backend) or "transformers"
    graphs: str | None  # a GRAPH_MODES value, or None for eager decoding
    tp: TensorParallel | None = None  # this rank's tensor-parallel place; None on one device

    @property
    def dtype_name(self) -> str:
        return dtypes.dtype_name(self.dtype)


def native_isa(path: str) -> str | None:
    """The instruction set of the native kernels a kernel path decodes with (None: no native kernels)."""
    return CPU_PATH_NEEDS.get(path, (None, None))[1]


def _runnable(path: str) -> bool:
    supported, isa = CPU_PATH_NEEDS[path]
    return supported(cpu_features()) and (isa is None or native.load_native(isa))


def runnable_kernel_paths(device_type: str = "cpu") -> list[str]:
    """The accelerated backend's kernel paths this machine can run on ``device_type``, fastest first.

    A GEMV path counts only once its native library is built and loaded (built here on first ask).
    """
    paths = KERNEL_PATHS[device_type]
    return [path for path in paths if _runnable(path)] if device_type == "cpu" else list(paths)


def _choose_kernels(device_type: str, requested: str | None) -> str:
    requested = requested or os.environ.get(KERNELS_ENV) or None
    known = KERNEL_PATHS[device_type]
    if requested is None:
        return next(path for path in known if device_type != "cpu" or _runnable(path))
    if requested not in known:
        raise AscendNbError(f"unknown kernel path {requested!r} for {device_type}: use one of {', '.join(known)}")
    if device_type == "cpu" and not _runnable(requested):
        isa = native_isa(requested)
        if isa is not None and CPU_PATH_NEEDS[requested][0](cpu_features()):
            raise AscendNbError(f"kernel path {requested!r} needs the native {isa} kernels, which could not be built "
                                f"here ({native.failure(isa)}): install g++ and ninja and run `ascend-nb fetch`, or "
                                f"use one of {', '.join(runnable_kernel_paths('cpu'))}")
        raise AscendNbError(f"kernel path {requested!r} cannot run on this CPU ({cpu_features().name}): "
                            f"use one of {', '.join(runnable_kernel_paths('cpu'))}")
    return requested


def _choose_graphs(device: torch.device, graphs: bool | None, tp: TensorParallel | None, kernels: str) -> str | None:
    if graphs is None:
        graphs = device.type == "cuda" and tp is None
    if not graphs:
        return None
    if tp is not None:
        raise AscendNbError("decode graphs with tensor parallel are not supported (a captured step would replay "
                            "stale collectives): drop --graphs or use --tp 1")
    if device.type == "npu":
        import importlib.util

        if importlib.util.find_spec("torchair") is None:
            raise AscendNbError(f"decode graphs are not available on {device} for kernel path {kernels}: "
                                "install torchair, or use graphs=False")
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "clang++", "c++")):
        raise AscendNbError(f"decode graphs are not available on cpu for kernel path {kernels}: install a C++ "
                            "compiler such as g++ (torch.compile needs one), or use graphs=False")
    return GRAPH_MODES[device.type]


def place(device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", backend: str = "transformers",
          kernels: str | None = None, graphs: bool | None = None, tp: int = 1) -> Placement:
    """Decide, once, where and how an engine runs.

    ``tp > 1`` (under ``torchrun``) first joins the process group and moves to this rank's device;
    the dtype is then chosen for that device. ``kernels`` (or ``$ASCEND_NB_KERNELS``) forces any
    kernel path this machine can run (accelerated backend); ``graphs`` turns captured decode steps
    on or off (default: on for CUDA only).
    """
    check_ranks(tp)
    if backend != "accelerated" and (tp > 1 or graphs):
        raise AscendNbError(f"{'--tp' if tp > 1 else '--graphs'} needs backend 'accelerated' "
                            f"(the {backend} backend runs eagerly on one device)")
    torch_device = resolve_device(device)
    group = None
    if tp > 1:
        group = init_tensor_parallel(tp, torch_device.type)
        torch_device = local_device(torch_device.type)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if backend != "accelerated":
        if kernels not in (None, backend):
            raise AscendNbError(f"kernel paths belong to the accelerated backend, not {backend!r}: drop kernels=")
        return Placement(torch_device, torch_dtype, cpu_features(), backend, None, group)
    path = _choose_kernels(torch_device.type, kernels)
    return Placement(torch_device, torch_dtype, cpu_features(), path, _choose_graphs(torch_device, graphs, group, path),
                     group)
