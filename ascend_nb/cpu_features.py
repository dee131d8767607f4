"""What this CPU can do, read once from ``/proc/cpuinfo`` (and oneDNN's own bf16 probe).

The kernel-path choice of :mod:`ascend_nb.device` reads these flags; nothing else probes the CPU.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

# /proc/cpuinfo flag -> our field (x86-64 and aarch64 hosts of Ascend cards)
FLAGS = {"avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx512f": "avx512f", "avx512bw": "avx512bw",
         "avx512vl": "avx512vl", "avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16", "amx_bf16": "amx_bf16",
         "amx_int8": "amx_int8", "asimd": "neon", "sve": "sve"}


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set features that decide which CPU kernels can run."""

    name: str
    arch: str
    avx2: bool = False
    fma: bool = False
    f16c: bool = False
    avx512f: bool = False
    avx512bw: bool = False
    avx512vl: bool = False
    avx512_vnni: bool = False
    avx512_bf16: bool = False
    amx_bf16: bool = False
    amx_int8: bool = False
    neon: bool = False
    sve: bool = False
    onednn_bf16: bool = False  # oneDNN has native bf16 kernels here (AVX512-BF16, AMX or AVX-NE-CONVERT)

    @property
    def cpu_class(self) -> str:
        """``amx``, ``avx512-bf16``, ``avx512``, ``avx2``, ``neon`` or ``generic``: the rows of docs/benchmarks.md."""
        if self.amx_bf16:
            return "amx"
        if self.avx512_bf16:
            return "avx512-bf16"
        if self.avx512f and self.avx512bw:
            return "avx512"
        if self.avx2 and self.fma:
            return "avx2"
        return "neon" if self.neon else "generic"

    @property
    def flags(self) -> list[str]:
        """The features present, in a fixed order (for reports)."""
        return [field for field in dict.fromkeys(FLAGS.values()) if getattr(self, field)] + (
            ["onednn_bf16"] if self.onednn_bf16 else [])


def parse_cpuinfo(text: str, arch: str, onednn_bf16: bool = False) -> CpuFeatures:
    """Features from the text of ``/proc/cpuinfo`` (``flags`` on x86-64, ``Features`` on aarch64)."""
    name, flags = arch, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and name == arch:
            name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    present = {field: True for flag, field in FLAGS.items() if flag in flags}
    return CpuFeatures(name=name, arch=arch, onednn_bf16=onednn_bf16, **present)


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's CPU features (cached for the process)."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text(errors="replace") if cpuinfo.exists() else ""
    arch = platform.machine() or "unknown"
    features = parse_cpuinfo(text, arch, onednn_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    if features.name == arch and platform.processor():
        return parse_cpuinfo(f"model name: {platform.processor()}\n" + text, arch, features.onednn_bf16)
    return features
