"""Run ``npu-smi info`` and parse its device table (910B and 310P layouts) into devices.

Each NPU takes two rows of three ``|``-separated cells. Row one: ``NPU  Name | Health | Power Temp
Hugepages``; row two: ``Chip [Device] | Bus-Id | AICore  Memory-Usage [HBM-Usage]``. On 910B the
last ``used / total`` pair of row two is HBM; the 310P (Atlas 300I DUO) has no HBM column, so its
last pair is the chip's memory. The process table that follows has four cells per row and is skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass

USAGE_PAIR = re.compile(r"(\d+)\s*/\s*(\d+)")
BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")
VERSION = re.compile(r"Version:\s*(\S+)")
FAILURE_MARKERS = ("dcmi module initialize failed", "command not found", "permission denied", "error")


@dataclass(frozen=True)
class NpuDevice:
    """One NPU chip as ``npu-smi info`` shows it."""

    npu_id: int
    chip_id: int
    name: str
    health: str
    memory_used_mb: int
    memory_total_mb: int
    bf16: bool  # the 310P family (Atlas 300I DUO) has no bfloat16

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NpuSmiResult:
    """What ``npu-smi info`` reported: devices, or the error text when it failed."""

    executable: str
    version: str | None
    devices: tuple[NpuDevice, ...]
    error: str | None


def _cells(line: str) -> list[str]:
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|")):
        return []
    return [cell.strip() for cell in line[1:-1].split("|")]


def parse_npu_smi(text: str) -> tuple[str | None, list[NpuDevice]]:
    """The npu-smi version and the devices in ``npu-smi info`` output (no devices: an empty list)."""
    version_match = VERSION.search(text)
    devices: list[NpuDevice] = []
    pending: tuple[int, str, str] | None = None  # (npu_id, name, health) from row one
    for line in text.splitlines():
        cells = _cells(line)
        if len(cells) != 3 or not cells[0] or not cells[0].split()[0].isdigit():
            continue
        words = cells[0].split()
        if BUS_ID.match(cells[1]) and pending is not None:
            pairs = USAGE_PAIR.findall(cells[2])
            used, total = (int(v) for v in pairs[-1]) if pairs else (0, 0)
            npu_id, name, health = pending
            devices.append(NpuDevice(npu_id, int(words[0]), name, health, used, total, "310P" not in name))
            pending = None
        elif len(words) >= 2:
            pending = (int(words[0]), " ".join(words[1:]), cells[1])
    return (version_match[1] if version_match else None), devices


def run_npu_smi(env: Mapping[str, str], timeout: float = 20.0) -> NpuSmiResult | None:
    """Run ``npu-smi info`` from ``env``'s PATH; None when npu-smi is not on PATH.

    A failure (non-zero exit, ``dcmi module initialize failed. ret is -8005``, no device rows) is
    returned as ``error`` (the first meaningful output line), never raised.
    """
    executable = shutil.which("npu-smi", path=env.get("PATH", ""))
    if executable is None:
        return None
    try:
        done = subprocess.run([executable, "info"], capture_output=True, text=True, timeout=timeout,
                              env=dict(env), errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return NpuSmiResult(executable, None, (), f"npu-smi info did not run: {exc}")
    output = done.stdout + done.stderr
    version, devices = parse_npu_smi(output)
    error = None
    if done.returncode != 0 or not devices:
        lines = [line.strip(" |") for line in output.splitlines() if line.strip(" |+=-")]
        flagged = [line for line in lines if any(m in line.lower() for m in FAILURE_MARKERS)]
        detail = (flagged or lines or ["no output"])[0]
        error = f"npu-smi info exited {done.returncode}: {detail}" if done.returncode else f"no NPU rows: {detail}"
    return NpuSmiResult(executable, version, tuple(devices), error)
