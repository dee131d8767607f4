"""Will it fit? Memory and decode speed of a model on a device, before anything is loaded.

:func:`plan` adds up what a run holds on one device (one tensor-parallel rank with ``tp > 1``):

- weights: every tensor of the checkpoint in the compute dtype (the roofline's bytes read per
  decode step, plus the embedding when it is stored apart from the LM head, as it is for untied
  models and for any quantized LM head);
- the KV cache the accelerated engine preallocates: ``[batch, kv_heads, max_seq_len, head_dim]``
  for K and for V in every layer;
- activations of one prefill of ``max_seq_len`` tokens per sequence (eager attention scores in
  fp32, MLP activations, the last position's logits): a generous upper estimate;
- a fixed framework overhead (runtime context, allocator workspace), per device kind.

The device's memory is measured when it is here (``cpu``: ``MemAvailable``; ``cuda``/``npu``: free
memory), else it is a row of ``data/devices.csv`` (``310P3``, ``910B4-64GB``, ``A100-80GB``...).
The verdict is ``fits`` under 90% of it, ``tight`` up to 100%, else ``does not fit``; the plan also
names the longest ``max_seq_len`` (at the batch size asked) and the largest batch (at the
``max_seq_len`` asked) that still fit, and the decode roofline at the point asked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from ascend_nb import device as devices
from ascend_nb.bench import reference
from ascend_nb.dtypes import bytes_per_element, dtype_name
from ascend_nb.bench.roofline_model import (KNOWN_SHAPES, ModelShape, kv_cache_bytes, model_shape, roofline,
                                      weight_bytes)
from ascend_nb.parallel import check_divisible
from ascend_nb.errors import AscendNbError
from ascend_nb.files import read_config_json

VERDICTS = ("fits", "tight", "does not fit")
FITS_SHARE = 0.9  # above this share of the device's memory a plan is "tight"
OVERHEAD_BYTES = {"npu": 3 * 2**29, "cuda": 2**30, "cpu": 2**29}  # runtime context + workspace, estimated
MAX_BATCH = 4096  # the largest batch the planner searches


@dataclass(frozen=True)
class Target:
    """A device to plan for: its memory per rank, where that number comes from, and its kind."""

    name: str
    kind: str  # npu, cuda or cpu (decides the overhead and the default dtype)
    memory_bytes: int
    source: str
    supports_bf16: bool


@dataclass(frozen=True)
class MemoryPlan:
    """The bytes a run needs on one device (one rank), against what the device has."""

    model: str
    device: str
    dtype: str
    quantize: str | None
    max_seq_len: int
    batch_size: int
    tp: int
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    overhead_bytes: int
    total_bytes: int
    device_bytes: int
    device_source: str
    verdict: str
    max_seq_len_that_fits: int
    max_batch_that_fits: int
    decode_tokens_per_s: float
    bandwidth_gbs: float

    @property
    def static_bytes(self) -> int:
        """What loading allocates for good: weights, the preallocated KV cache and the overhead."""
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes

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


def prefill_activation_bytes(model, dtype: str | torch.dtype, batch_size: int, input_len: int) -> int:
    """A rough upper estimate of one prefill's transient memory: eager attention scores (fp32),
    MLP activations and the last position's logits (fp32)."""
    shape = model_shape(model)
    element = bytes_per_element(dtype)
    b, t = batch_size, input_len
    scores = b * shape.num_attention_heads * t * t * 4
    activations = b * t * (4 * shape.hidden_size + 2 * shape.intermediate_size) * element
    return scores + activations + b * shape.vocab_size * 4


SIZE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def _model(model) -> tuple[str, ModelShape]:
    """A registry name, a model directory, a config (object or dict) or a ModelShape -> (label, shape)."""
    if not isinstance(model, (str, Path)):
        get = model.get if isinstance(model, dict) else lambda key: getattr(model, key, None)
        missing = [key for key in SIZE_KEYS if not isinstance(model, ModelShape) and get(key) is None]
        if missing:
            raise AscendNbError(f"cannot size this model: its config has no {', '.join(missing)}")
        name = getattr(model, "_name_or_path", None) or "model"
        return str(name), model_shape(model)
    if str(model) in KNOWN_SHAPES:
        return str(model), KNOWN_SHAPES[str(model)]
    path = Path(model).expanduser()
    if not path.is_dir():
        raise AscendNbError(f"unknown model {str(model)!r}: give a registry name ({', '.join(KNOWN_SHAPES)}) "
                            "or a model directory with a config.json")
    return str(model), ModelShape.from_config(read_config_json(path, "restore it or re-convert the model"))


def rank_shape(shape: ModelShape, tp: int) -> ModelShape:
    """What one of ``tp`` tensor-parallel ranks holds: its heads and FFN slice (the rest is replicated)."""
    if tp < 1:
        raise AscendNbError(f"tp must be >= 1, got {tp}")
    if tp == 1:
        return shape
    check_divisible(shape, tp)
    return replace(shape, num_attention_heads=shape.num_attention_heads // tp,
                   num_key_value_heads=shape.num_key_value_heads // tp, intermediate_size=shape.intermediate_size // tp)


def model_weights_bytes(shape: ModelShape, dtype: str | torch.dtype, quantize: str | None = None) -> int:
    """Bytes of every weight tensor held: the roofline's per-step bytes plus a separately stored embedding."""
    embedding = shape.vocab_size * shape.hidden_size * bytes_per_element(dtype)
    shared = shape.tie_word_embeddings and quantize in (None, "none")
    return weight_bytes(shape, dtype, quantize) + (0 if shared else embedding)


def target(device: str | torch.device) -> Target:
    """``auto``, ``cpu``, ``cuda[:i]``, ``npu[:i]`` (measured free memory here) or a ``data/devices.csv`` row."""
    name = str(device)
    table = reference.devices()
    if name in set(table["device"]):
        row = reference.device_spec(name)
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

    resolved = devices.resolve_device(name)
    info = devices.device_info(resolved)
    source = "MemAvailable in /proc/meminfo" if resolved.type == "cpu" else f"free memory of {resolved} now"
    return Target(str(resolved), resolved.type, devices.free_memory_bytes(resolved), source, info.supports_bf16)


def _dtype_name(dtype: str | torch.dtype, where: Target) -> str:
    if isinstance(dtype, torch.dtype):
        return dtype_name(dtype)
    if dtype == "auto":
        return "float16" if where.kind == "npu" else "bfloat16" if where.supports_bf16 else "float32"
    chosen = dtype_name(dtype)  # raises on an unknown name
    if chosen == "bfloat16" and where.kind == "npu" and not where.supports_bf16:
        raise AscendNbError(f"{where.name} has no bfloat16 (310P): use --dtype float16")
    return chosen


def _largest(fits, high: int) -> int:
    """The largest n in 1..high with ``fits(n)`` (fits is monotone), 0 when even 1 does not fit."""
    if not fits(1):
        return 0
    low = 1
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def plan(model, device: str | torch.device = "cpu", dtype: str | torch.dtype = "auto", quantize: str | None = None,
         max_seq_len: int | None = None, batch_size: int = 1, tp: int = 1, bandwidth_gbs: float | None = None
         ) -> MemoryPlan:
    """Plan a run of ``model`` (a registry name, a model directory or a config) on ``device``.

    ``max_seq_len`` defaults to the model's ``max_position_embeddings``; ``tp`` splits heads and
    FFN over that many devices of this kind (the numbers are per rank). ``bandwidth_gbs`` overrides
    the roofline's bandwidth (spec sheet for a ``data/devices.csv`` row, else measured here).
    """
    label, shape = _model(model)
    where = target(device)
    dtype_name = _dtype_name(dtype, where)
    quantize = None if quantize in (None, "none") else quantize
    limit = shape.max_position_embeddings
    max_seq_len = limit if max_seq_len is None else max_seq_len
    if not max_seq_len or max_seq_len < 1 or (limit and max_seq_len > limit):
        bound = f"1..{limit} (the model's max_position_embeddings)" if limit else ">= 1"
        raise AscendNbError(f"max_seq_len must be in {bound}, got {max_seq_len}")
    if batch_size < 1:
        raise AscendNbError(f"batch size must be >= 1, got {batch_size}")
    rank = rank_shape(shape, tp)
    memory = where.memory_bytes // tp if where.kind == "cpu" else where.memory_bytes  # cpu ranks share the RAM
    weights = model_weights_bytes(rank, dtype_name, quantize)
    overhead = OVERHEAD_BYTES[where.kind]

    def total(seq_len: int, batch: int) -> int:
        return (weights + kv_cache_bytes(rank, dtype_name, seq_len, batch)
                + prefill_activation_bytes(rank, dtype_name, batch, seq_len) + overhead)

    need = total(max_seq_len, batch_size)
    verdict = "fits" if need <= FITS_SHARE * memory else "tight" if need <= memory else "does not fit"
    longest = _largest(lambda n: total(n, batch_size) <= memory, limit or max(max_seq_len, 2**20))
    widest = _largest(lambda n: total(max_seq_len, n) <= memory, MAX_BATCH)
    speed = roofline(rank, where.name, dtype_name, quantize, max_seq_len, batch_size, bandwidth_gbs)
    return MemoryPlan(
        model=label, device=where.name, dtype=dtype_name, quantize=quantize, max_seq_len=max_seq_len,
        batch_size=batch_size, tp=tp, weights_bytes=weights,
        kv_cache_bytes=kv_cache_bytes(rank, dtype_name, max_seq_len, batch_size),
        activation_bytes=prefill_activation_bytes(rank, dtype_name, batch_size, max_seq_len), overhead_bytes=overhead,
        total_bytes=need, device_bytes=memory, device_source=where.source, verdict=verdict,
        max_seq_len_that_fits=longest, max_batch_that_fits=widest, decode_tokens_per_s=speed.tokens_per_s,
        bandwidth_gbs=speed.bandwidth_gbs)


def require_fit(model, device: str | torch.device, dtype: str | torch.dtype, quantize: str | None = None,
                max_seq_len: int | None = None, batch_size: int = 1, tp: int = 1) -> MemoryPlan | None:
    """Refuse, in one line naming the largest setting that fits, a run whose weights and KV cache
    cannot fit the device; return the plan otherwise (None for a config it cannot size). Called
    before anything is allocated."""
    try:
        _model(model)
    except AscendNbError:
        return None  # not a Llama-family config the planner can size: nothing to check
    p = plan(model, device, dtype, quantize, max_seq_len, batch_size, tp, bandwidth_gbs=1.0)
    if p.static_bytes <= p.device_bytes:
        return p
    head = (f"{p.model} in {p.dtype}{' ' + p.quantize if p.quantize else ''} with max_seq_len {p.max_seq_len} "
            f"x batch {p.batch_size} needs {p.total_bytes / 1e9:.1f} GB on {p.device}, which has "
            f"{p.device_bytes / 1e9:.1f} GB ({p.device_source})")
    if p.max_seq_len_that_fits:
        raise AscendNbError(f"{head}: the largest that fits is max_seq_len {p.max_seq_len_that_fits} at batch "
                            f"{p.batch_size} (check with `ascend-nb plan`)")
    if p.max_batch_that_fits:
        raise AscendNbError(f"{head}: the largest that fits is batch {p.max_batch_that_fits} at max_seq_len "
                            f"{p.max_seq_len} (check with `ascend-nb plan`)")
    single = plan(model, device, dtype, quantize, max_seq_len, 1, tp, bandwidth_gbs=1.0).max_seq_len_that_fits
    if single:
        raise AscendNbError(f"{head}: the largest that fits is max_seq_len {single} at batch 1 "
                            "(check with `ascend-nb plan`)")
    if p.quantize is None and plan(model, device, dtype, "int8", 1, 1, tp, bandwidth_gbs=1.0).max_seq_len_that_fits:
        raise AscendNbError(f"{head}: even the weights do not fit; with quantize int8 they do "
                            "(check with `ascend-nb plan --quantize int8`)")
    raise AscendNbError(f"{head}: even the weights do not fit; use a device with more memory or more tp ranks")


def plan_table(models=("aquila-7b", "baichuan2-7b-chat"), device_names=None, dtype: str = "float16",
               quantizes=(None, "int8"), max_seq_len: int | None = None, batch_size: int = 1, tp: int = 1
               ) -> pd.DataFrame:
    """One plan per model x device x quantize: ``device_names`` default to every ``data/devices.csv`` row."""
    names = list(device_names) if device_names is not None else list(reference.devices()["device"])
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
    _, shape = _model(model)
    if seq_lens is None:
        top = shape.max_position_embeddings or 4096
        seq_lens = [2**k for k in range(8, top.bit_length()) if 2**k <= top]
    rows = []
    for batch in batch_sizes:
        for seq_len in seq_lens:
            p = plan(model, device, dtype, quantize, seq_len, batch, tp, bandwidth_gbs=1.0)
            rows.append({"batch_size": batch, "max_seq_len": seq_len, "total_bytes": p.total_bytes,
                         "device_bytes": p.device_bytes, "verdict": p.verdict})
    return pd.DataFrame(rows)
