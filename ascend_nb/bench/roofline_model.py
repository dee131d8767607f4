"""Decode roofline: tokens/s <= memory bandwidth / bytes read per decode step.

Every decode step reads each linear weight once (shared by the whole batch: q/k/v/o, gate/up/down
per layer and the LM head), the RMSNorm weights, and each sequence's KV cache up to its current
length: :func:`ascend_nb.models.footprint.weight_bytes` and :func:`~ascend_nb.models.footprint.kv_cache_bytes`.
``quantize`` applies to every linear layer, the LM head included; the KV cache stays in the compute dtype.

Bandwidth is a device's spec-sheet ceiling (``data/devices.csv``) when ``device`` names one there
(``"A100"``, ``"Atlas 300I DUO"``, ...), and this machine's measured figure when ``device`` is a torch
device such as ``"cpu"`` or ``"cuda"``: one figure per machine and boot (:func:`machine_bandwidth`),
so every notebook's roofline is drawn against the same number, shown with how it was measured.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ascend_nb import device as devices
from ascend_nb.bench import published
from ascend_nb.errors import AscendNbError
from ascend_nb.files import atomic_write_text, cache_home
from ascend_nb.models.footprint import kv_cache_bytes, weight_bytes

MIN_WORKING_SET, MACHINE_WORKING_SET = 64 * 2**20, 2**30  # a cache's speed below; 1 GiB: past every L3 seen here
READS = 10  # timed reads after one warm-up read; the median is the figure, (max - min) / median its spread
CACHE_FILE = "bandwidth.json"  # under $ASCEND_NB_HOME: one figure per machine, device and boot


@dataclass(frozen=True)
class Bandwidth:
    """A measured read bandwidth and how it was measured."""

    gbs: float
    spread_pct: float
    working_set_mb: int
    threads: int
    reads: int = READS

    @property
    def method(self) -> str:
        return (f"median of {self.reads} reads of {self.working_set_mb} MB on {self.threads} threads, "
                f"spread {self.spread_pct:.0f} %")


def _measure(device: str, size_bytes: int) -> Bandwidth:
    """Read a buffer of ``size_bytes`` once to warm up, then :data:`READS` times, on the threads decoding uses."""
    data = torch.ones(size_bytes // 4, dtype=torch.float32, device=device)
    times = []
    for index in range(READS + 1):
        devices.synchronize(device)
        start = time.perf_counter()
        data.sum()
        devices.synchronize(device)
        if index:
            times.append(time.perf_counter() - start)
    rates = sorted(data.numel() * 4 / t / 1e9 for t in times)
    median = statistics.median(rates)
    return Bandwidth(round(median, 2), round(100 * (rates[-1] - rates[0]) / median, 1), size_bytes // 2**20,
                     torch.get_num_threads())


def _machine_key(device: str) -> str:
    """What a bandwidth figure holds for: this device on this machine, with these threads, until it reboots."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown boot"
    return f"{device} | {devices.cpu_name()} | {torch.get_num_threads()} threads | boot {boot}"


@functools.cache
def machine_bandwidth(device: str = "cpu") -> Bandwidth:
    """The read bandwidth of a torch device on this machine: one figure per machine, device, thread count
    and boot, kept in ``$ASCEND_NB_HOME/bandwidth.json``, so every notebook and run on the machine draws
    the same roofline. Measured over :data:`MACHINE_WORKING_SET` (past the caches: decode streams weights
    from memory), the median of :data:`READS` reads after a warm-up, with its spread."""
    device = str(devices.resolve_device(device))
    path, key = cache_home() / CACHE_FILE, _machine_key(device)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), dict):
        try:
            return Bandwidth(**known[key])
        except TypeError:
            pass  # written by another version: measure again
    measured = _measure(device, MACHINE_WORKING_SET)
    others = known if isinstance(known, dict) else {}
    atomic_write_text(path, json.dumps({**others, key: dataclasses.asdict(measured)}, indent=1))
    return measured


def measure_bandwidth(device: str | torch.device = "cpu", working_set_bytes: int | None = None) -> float:
    """Memory read bandwidth of a torch device in GB/s: this machine's figure (:func:`machine_bandwidth`), or,
    with ``working_set_bytes`` (64 MiB to 1 GiB), a fresh measurement of a buffer that size by the same method."""
    name = str(devices.resolve_device(device))
    if working_set_bytes is None:
        return machine_bandwidth(name).gbs
    size = min(MACHINE_WORKING_SET, max(MIN_WORKING_SET, int(working_set_bytes) // 2**20 * 2**20))  # whole MiB
    return _measure(name, size).gbs


def resolve_bandwidth(device: str | torch.device) -> tuple[float, str]:
    """``(GB/s, source)``: the spec-sheet ceiling of a device named in ``data/devices.csv``, else this
    machine's measured figure with its method (:func:`machine_bandwidth`)."""
    name = str(device)
    known = published.devices()
    if name in set(known["device"]):
        return float(published.device_spec(name)["bandwidth_gbs_max"]), f"spec sheet ({name})"
    torch_device = str(devices.resolve_device(device))
    measured = machine_bandwidth(torch_device)
    return measured.gbs, f"measured on {torch_device}: {measured.method}"


@dataclass(frozen=True)
class Roofline:
    """The decode ceiling for one model, dtype, device, batch size and context length."""

    device: str
    bandwidth_gbs: float
    bandwidth_source: str
    weight_bytes: int
    kv_bytes: int
    batch_size: int
    seq_len: float

    @property
    def bytes_per_step(self) -> int:
        return self.weight_bytes + self.kv_bytes

    @property
    def tokens_per_s(self) -> float:
        """Ceiling on decode throughput (all sequences of the batch together)."""
        return self.batch_size * self.bandwidth_gbs * 1e9 / self.bytes_per_step

    @property
    def tpot_ms(self) -> float:
        """Floor on the time per output token."""
        return 1000.0 * self.batch_size / self.tokens_per_s

    def percent(self, decode_tokens_per_s: float) -> float:
        """How close a measured decode throughput comes to this ceiling, in %."""
        return 100.0 * decode_tokens_per_s / self.tokens_per_s


def roofline(model, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
             quantize: str | None = None, seq_len: float = 0, batch_size: int = 1,
             bandwidth_gbs: float | None = None) -> Roofline:
    """Decode tokens/s ceiling: bandwidth / (weight bytes + KV cache bytes at ``seq_len``).

    ``model`` is an engine (its device, dtype and ``quantize`` are the defaults), a transformers
    config, a config dict or a known model name (``aquila-7b``, ``baichuan2-7b-chat``, ``llama-2-7b``).
    ``device`` is a torch device (this machine's measured bandwidth, :func:`machine_bandwidth`) or
    a ``data/devices.csv`` name (spec sheet);
    ``bandwidth_gbs`` overrides both.
    """
    device = device if device is not None else getattr(model, "device", None)
    dtype = dtype if dtype is not None else getattr(model, "dtype", None)
    quantize = quantize if quantize is not None else getattr(model, "quantize", None)
    if device is None or dtype is None:
        raise AscendNbError("roofline needs a device and a dtype: pass an engine, or device= and dtype=")
    weights = weight_bytes(model, dtype, quantize)
    if bandwidth_gbs is None:
        bandwidth_gbs, source = resolve_bandwidth(device)
    else:
        source = "given"
    return Roofline(device=str(device), bandwidth_gbs=float(bandwidth_gbs), bandwidth_source=source,
                    weight_bytes=weights,
                    kv_bytes=kv_cache_bytes(model, dtype, seq_len, batch_size),
                    batch_size=batch_size, seq_len=seq_len)


def roofline_table(model, dtype: str | torch.dtype, quantize: str | None = None, seq_len: float = 0,
                   batch_size: int = 1, this_device: str | torch.device | None = "cpu") -> pd.DataFrame:
    """The decode ceiling of one model on every device of ``data/devices.csv`` (spec sheet) and on
    ``this_device`` (measured here; ``None`` leaves it out)."""
    targets = list(published.devices()["device"]) + ([this_device] if this_device is not None else [])
    rows = []
    for target in targets:
        limit = roofline(model, target, dtype, quantize, seq_len, batch_size)
        rows.append({"device": str(target), "bandwidth_gbs": limit.bandwidth_gbs, "source": limit.bandwidth_source,
                     "weights_gb": limit.weight_bytes / 1e9, "kv_cache_gb": limit.kv_bytes / 1e9,
                     "roofline_tokens_per_s": limit.tokens_per_s, "min_tpot_ms": limit.tpot_ms})
    return pd.DataFrame(rows)


def _mean_context(row: pd.Series) -> float:
    """Mean KV length over the decode steps of a published row: mid input + half the mid output."""
    if pd.isna(row.get("input_len_min")) or pd.isna(row.get("output_len_min")):
        return 0.0
    return (row["input_len_min"] + row["input_len_max"]) / 2 + (row["output_len_min"] + row["output_len_max"]) / 4


def with_roofline(table: pd.DataFrame) -> pd.DataFrame:
    """Published rows (:func:`ascend_nb.bench.published.performance`) with ``roofline_tokens_per_s``
    (spec-sheet bandwidth of the row's device, one chip per row's ``chips``) and ``pct_of_roofline``."""
    table = table.copy()
    ceilings = []
    for _, row in table.iterrows():
        limit = roofline(row["model"], row["device"], row["dtype"], row["quantize"], _mean_context(row),
                         int(row["batch_size"]))
        ceilings.append(limit.tokens_per_s * row.get("chips", 1))
    table["roofline_tokens_per_s"] = ceilings
    table["pct_of_roofline"] = 100.0 * table["decode_tokens_per_s"] / table["roofline_tokens_per_s"]
    return table
