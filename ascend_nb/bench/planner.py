"""Will it fit? Memory and decode speed of a model on a device, before anything is loaded.

:func:`plan` is the memory footprint of :mod:`ascend_nb.models.footprint` (weights, KV cache,
prefill activations and overhead on one device, or one tensor-parallel rank with ``tp > 1``, and
the largest ``max_seq_len`` and batch that still fit) plus the decode roofline at the point asked.

The device's memory is measured when it is here (``cpu``: ``MemAvailable``; ``cuda``/``npu``: free
memory), else it is a row of ``data/devices.csv`` (``310P3``, ``910B4-64GB``, ``A100-80GB``...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd
import torch

from ascend_nb import device as devices
from ascend_nb.bench import published
from ascend_nb.bench.roofline_model import roofline
from ascend_nb.errors import AscendNbError
from ascend_nb.models.footprint import OVERHEAD_BYTES, Footprint, Target, footprint, local_target, named_dims


@dataclass(frozen=True)
class MemoryPlan(Footprint):
    """A :class:`~ascend_nb.models.footprint.Footprint` and the decode roofline at the same point."""

    decode_tokens_per_s: float
    bandwidth_gbs: float

    def as_dict(self) -> dict:
        """The ``--json`` object."""
        return asdict(self)

    def to_text(self) -> str:
        """A few lines for a terminal."""
        gb = lambda n: f"{n / 1e9:.2f} GB"  # noqa: E731
        setting = f"{self.dtype}{'' if not self.quantize else ' ' + self.quantize}, max_seq_len {self.max_seq_len}, " \
                  f"batch {self.batch_size}" + (f", tp {self.tp} (per rank)" if self.tp > 1 else "")
        return "\n".join([
            f"{self.model} on {self.device} ({setting})",
            f"  weights      {gb(self.weights_bytes)}",
            f"  KV cache     {gb(self.kv_cache_bytes)}",
            f"  activations  {gb(self.activation_bytes)}",
            f"  overhead     {gb(self.overhead_bytes)}",
            f"  total        {gb(self.total_bytes)} of {gb(self.device_bytes)} ({self.device_source}): {self.verdict}",
            f"  largest max_seq_len that fits at batch {self.batch_size}: {self.max_seq_len_that_fits}",
            f"  largest batch that fits at max_seq_len {self.max_seq_len}: {self.max_batch_that_fits}",
            f"  decode roofline: {self.decode_tokens_per_s:.1f} tokens/s ({self.bandwidth_gbs:.0f} GB/s)",
        ])


def target(device: str | torch.device) -> Target:
    """``auto``, ``cpu``, ``cuda[:i]``, ``npu[:i]`` (measured free memory here) or a ``data/devices.csv`` row."""
    name = str(device)
    table = published.devices()
    if name in set(table["device"]):
        row = published.device_spec(name)
        if pd.notna(row.get("usable_memory_mb")):
            memory, source = int(row["usable_memory_mb"]) * 2**20, f"data/devices.csv {name}"
        else:
            memory = int(row["memory_gb_min"] * 2**30)
            spread = "" if row["memory_gb_min"] == row["memory_gb_max"] else f", smallest variant of {name}"
            source = f"data/devices.csv {name}{spread}"
        if row.get("kind") not in OVERHEAD_BYTES:
            raise AscendNbError(f"data/devices.csv row {name!r} needs a kind (npu or cuda) to be planned for")
        return Target(name, row["kind"], memory, source, bool(row["supports_bf16"]))
    if name.split(":")[0].strip().lower() not in (*devices.DEVICE_TYPES, "auto"):
        raise AscendNbError(f"unknown device {name!r}: use cpu, cuda, npu or a row of data/devices.csv "
                            f"({', '.join(table['device'])})")
    return local_target(name)


def plan(model, device: str | torch.device = "cpu", dtype: str | torch.dtype = "auto", quantize: str | None = None,
         max_seq_len: int | None = None, batch_size: int = 1, tp: int = 1, bandwidth_gbs: float | None = None
         ) -> MemoryPlan:
    """Plan a run of ``model`` (a registry name, a model directory or a config) on ``device``.

    ``max_seq_len`` defaults to the model's ``max_position_embeddings``; ``tp`` splits heads and
    FFN over that many devices of this kind (the numbers are per rank). ``bandwidth_gbs`` overrides
    the roofline's bandwidth (spec sheet for a ``data/devices.csv`` row, else measured here).
    """
    fp = footprint(model, target(device), dtype, quantize, max_seq_len, batch_size, tp)
    rank = named_dims(model)[1].split(tp)
    speed = roofline(rank, fp.device, fp.dtype, fp.quantize, fp.max_seq_len, batch_size, bandwidth_gbs)
    return MemoryPlan(**asdict(fp), decode_tokens_per_s=speed.tokens_per_s, bandwidth_gbs=speed.bandwidth_gbs)


def plan_table(models=("aquila-7b", "baichuan2-7b-chat"), device_names=None, dtype: str = "float16",
               quantizes=(None, "int8"), max_seq_len: int | None = None, batch_size: int = 1, tp: int = 1
               ) -> pd.DataFrame:
    """One plan per model x device x quantize: ``device_names`` default to every ``data/devices.csv`` row."""
    names = list(device_names) if device_names is not None else list(published.devices()["device"])
    rows = []
    for model in models:
        for name in names:
            for quantize in quantizes:
                p = plan(model, name, dtype, quantize, max_seq_len, batch_size, tp)
                rows.append({"model": p.model, "device": p.device, "tp": p.tp, "dtype": p.dtype,
                             "quantize": p.quantize or "none", "max_seq_len": p.max_seq_len,
                             "total_gb": p.total_bytes / 1e9, "device_gb": p.device_bytes / 1e9, "verdict": p.verdict,
                             "max_seq_len_that_fits": p.max_seq_len_that_fits,
                             "max_batch_that_fits": p.max_batch_that_fits,
                             "decode_tokens_per_s": p.decode_tokens_per_s})
    return pd.DataFrame(rows)


def fit_grid(model, device: str | torch.device, dtype: str | torch.dtype = "auto", quantize: str | None = None,
             batch_sizes=(1, 2, 4, 8, 16, 32), seq_lens=None, tp: int = 1) -> pd.DataFrame:
    """``batch_size, max_seq_len, total_bytes, device_bytes, verdict`` over a batch x context grid
    (``seq_lens`` default: powers of two from 256 up to the model's limit)."""
    if seq_lens is None:
        top = named_dims(model)[1].max_position_embeddings or 4096
        seq_lens = [2**k for k in range(8, top.bit_length()) if 2**k <= top]
    where = target(device)
    rows = []
    for batch in batch_sizes:
        for seq_len in seq_lens:
            p = footprint(model, where, dtype, quantize, seq_len, batch, tp)
            rows.append({"batch_size": batch, "max_seq_len": seq_len, "total_bytes": p.total_bytes,
                         "device_bytes": p.device_bytes, "verdict": p.verdict})
    return pd.DataFrame(rows)
