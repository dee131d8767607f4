"""The memory a run holds on one device (one tensor-parallel rank with ``tp > 1``), before anything is loaded.

- weights: every linear layer (q/k/v/o, gate/up/down per layer and the LM head, each in its
  ``quantize`` format), the RMSNorm weights in the compute dtype, plus the embedding when it is
  stored apart from the LM head, as it is for untied models and for any quantized LM head;
- the KV cache the accelerated engine preallocates: ``[batch, kv_heads, max_seq_len, head_dim]``
  for K and for V in every layer, in the compute dtype;
- activations of one prefill of ``max_seq_len`` tokens per sequence (eager attention scores in
  fp32, MLP activations, the last position's logits): a generous upper estimate;
- a fixed framework overhead (runtime context, allocator workspace), per device kind.

The verdict is ``fits`` under 90% of the device's memory, ``tight`` up to 100%, else ``does not
fit``. :func:`require_fit` refuses a load whose weights and KV cache cannot fit, in one line naming
the largest setting that does. The planner (:mod:`ascend_nb.bench.planner`) adds the devices of
``data/devices.csv`` and the decode speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ascend_nb import device as devices
from ascend_nb.dtypes import bytes_per_element, dtype_name
from ascend_nb.errors import AscendNbError
from ascend_nb.files import read_config_json
from ascend_nb.models.dims import KNOWN_DIMS, LlamaDims, model_dims
from ascend_nb.quant_formats import QuantFormat, down_quantize, head_quantize, quant_format

VERDICTS = ("fits", "tight", "does not fit")
FITS_SHARE = 0.9  # above this share of the device's memory a run is "tight"
OVERHEAD_BYTES = {"npu": 3 * 2**29, "cuda": 2**30, "cpu": 2**29}  # runtime context + workspace, estimated
MAX_BATCH = 4096  # the largest batch searched


def weight_bytes(model, dtype: str | torch.dtype, quantize: str | None = None) -> int:
    """Bytes of weights one decode step reads: every linear layer, the LM head and the RMSNorm weights
    (the embedding lookup reads one row per token and is left out). ``model``: see :func:`model_dims`."""
    dims = model_dims(model)
    element = bytes_per_element(dtype)

    def linear_bytes(out_features: int, in_features: int, fmt: QuantFormat | None) -> int:
        if fmt is None:
            return out_features * in_features * element
        groups = 1 if fmt.group_size is None else -(-in_features // fmt.group_size)
        return out_features * in_features * fmt.bits // 8 + out_features * groups * fmt.params_per_group * fmt.param_bytes

    *layers, head = dims.linear_shapes()
    per_layer = len(layers) // dims.num_hidden_layers  # q, k, v, o, gate, up, down: each layer's down comes last
    fmt, down = quant_format(quantize), quant_format(down_quantize(quantize))
    total = (2 * dims.num_hidden_layers + 1) * dims.hidden_size * element  # RMSNorm weights
    total += sum(linear_bytes(out, inp, down if i % per_layer == per_layer - 1 else fmt) for i, (out, inp) in enumerate(layers))
    return total + linear_bytes(*head, quant_format(head_quantize(quantize)))


def model_weights_bytes(model, dtype: str | torch.dtype, quantize: str | None = None) -> int:
    """Bytes of every weight tensor held: the per-step bytes plus a separately stored embedding."""
    dims = model_dims(model)
    embedding = dims.vocab_size * dims.hidden_size * bytes_per_element(dtype)
    shared = dims.tie_word_embeddings and quantize in (None, "none")
    return weight_bytes(dims, dtype, quantize) + (0 if shared else embedding)


def kv_cache_bytes(model, dtype: str | torch.dtype, seq_len: float, batch_size: int = 1) -> int:
    """Bytes of K and V cache for ``batch_size`` sequences of ``seq_len`` tokens."""
    dims = model_dims(model)
    per_token = 2 * dims.num_hidden_layers * dims.num_key_value_heads * dims.head_dim * bytes_per_element(dtype)
    return int(per_token * seq_len * batch_size)


def prefill_activation_bytes(model, dtype: str | torch.dtype, batch_size: int, input_len: int) -> int:
    """A rough upper estimate of one prefill's transient memory: eager attention scores (fp32),
    MLP activations and the last position's logits (fp32)."""
    dims = model_dims(model)
    element = bytes_per_element(dtype)
    b, t = batch_size, input_len
    scores = b * dims.num_attention_heads * t * t * 4
    activations = b * t * (4 * dims.hidden_size + 2 * dims.intermediate_size) * element
    return scores + activations + b * dims.vocab_size * 4


def named_dims(model) -> tuple[str, LlamaDims]:
    """A registry name, a model directory, a config (object or dict) or a LlamaDims -> (label, dims)."""
    if not isinstance(model, (str, Path)):
        return str(getattr(model, "_name_or_path", None) or "model"), model_dims(model)
    if str(model) in KNOWN_DIMS:
        return str(model), KNOWN_DIMS[str(model)]
    path = Path(model).expanduser()
    if not path.is_dir():
        raise AscendNbError(f"unknown model {str(model)!r}: give a registry name ({', '.join(KNOWN_DIMS)}) "
                            "or a model directory with a config.json")
    return str(model), LlamaDims.from_config(read_config_json(path, "restore it or re-convert the model"))


@dataclass(frozen=True)
class Target:
    """A device to plan for: its memory per rank, where that number comes from, and its kind."""

    name: str
    kind: str  # npu, cuda or cpu (decides the overhead and the default dtype)
    memory_bytes: int
    source: str
    supports_bf16: bool


def local_target(device: str | torch.device) -> Target:
    """``auto``, ``cpu``, ``cuda[:i]`` or ``npu[:i]`` of this machine, with its memory free now."""
    resolved = devices.resolve_device(device)
    info = devices.device_info(resolved)
    source = "MemAvailable in /proc/meminfo" if resolved.type == "cpu" else f"free memory of {resolved} now"
    return Target(str(resolved), resolved.type, devices.free_memory_bytes(resolved), source, info.supports_bf16)


def _dtype_name(dtype: str | torch.dtype, where: Target) -> str:
    return dtype_name(devices.choose_dtype(dtype, where.kind, where.supports_bf16, where.name))


def _largest(fits, high: int) -> int:
    """The largest n in 1..high with ``fits(n)`` (fits is monotone), 0 when even 1 does not fit."""
    if not fits(1):
        return 0
    low = 1
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


@dataclass(frozen=True)
class Footprint:
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

    @property
    def static_bytes(self) -> int:
        """What loading allocates for good: weights, the preallocated KV cache and the overhead."""
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes


def footprint(model, device: str | torch.device | Target = "cpu", dtype: str | torch.dtype = "auto",
              quantize: str | None = None, max_seq_len: int | None = None, batch_size: int = 1, tp: int = 1
              ) -> Footprint:
    """The memory a run of ``model`` (a registry name, a model directory, a config or a LlamaDims) holds
    on ``device`` (a device of this machine, or a :class:`Target`) and the largest settings that fit.

    ``max_seq_len`` defaults to the model's ``max_position_embeddings``; ``tp`` splits heads and
    FFN over that many devices of this kind (the numbers are per rank).
    """
    label, dims = named_dims(model)
    where = device if isinstance(device, Target) else local_target(device)
    dtype = _dtype_name(dtype, where)
    quantize = None if quantize in (None, "none") else quantize
    limit = dims.max_position_embeddings
    max_seq_len = limit if max_seq_len is None else max_seq_len
    if not max_seq_len or max_seq_len < 1 or (limit and max_seq_len > limit):
        bound = f"1..{limit} (the model's max_position_embeddings)" if limit else ">= 1"
        raise AscendNbError(f"max_seq_len must be in {bound}, got {max_seq_len}")
    if batch_size < 1:
        raise AscendNbError(f"batch size must be >= 1, got {batch_size}")
    rank = dims.split(tp)
    memory = where.memory_bytes // tp if where.kind == "cpu" else where.memory_bytes  # cpu ranks share the RAM
    weights = model_weights_bytes(rank, dtype, quantize)
    overhead = OVERHEAD_BYTES[where.kind]

    def total(seq_len: int, batch: int) -> int:
        return (weights + kv_cache_bytes(rank, dtype, seq_len, batch)
                + prefill_activation_bytes(rank, dtype, batch, seq_len) + overhead)

    need = total(max_seq_len, batch_size)
    return Footprint(
        model=label, device=where.name, dtype=dtype, quantize=quantize, max_seq_len=max_seq_len,
        batch_size=batch_size, tp=tp, weights_bytes=weights,
        kv_cache_bytes=kv_cache_bytes(rank, dtype, max_seq_len, batch_size),
        activation_bytes=prefill_activation_bytes(rank, dtype, batch_size, max_seq_len), overhead_bytes=overhead,
        total_bytes=need, device_bytes=memory, device_source=where.source,
        verdict="fits" if need <= FITS_SHARE * memory else "tight" if need <= memory else "does not fit",
        max_seq_len_that_fits=_largest(lambda n: total(n, batch_size) <= memory, limit or max(max_seq_len, 2**20)),
        max_batch_that_fits=_largest(lambda n: total(max_seq_len, n) <= memory, MAX_BATCH))


def require_fit(model, device: str | torch.device | Target, dtype: str | torch.dtype, quantize: str | None = None,
                max_seq_len: int | None = None, batch_size: int = 1, tp: int = 1) -> Footprint | None:
    """Refuse, in one line naming the largest setting that fits, a run whose weights and KV cache
    cannot fit the device; return the footprint otherwise (None for a config it cannot size). Called
    before anything is allocated."""
    try:
        named_dims(model)
    except AscendNbError:
        return None  # not a Llama-family config that can be sized: nothing to check
    where = device if isinstance(device, Target) else local_target(device)
    p = footprint(model, where, dtype, quantize, max_seq_len, batch_size, tp)
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
    single = footprint(model, where, dtype, quantize, max_seq_len, 1, tp).max_seq_len_that_fits
    if single:
        raise AscendNbError(f"{head}: the largest that fits is max_seq_len {single} at batch 1 "
                            "(check with `ascend-nb plan`)")
    if p.quantize is None and footprint(model, where, dtype, "int8", 1, 1, tp).max_seq_len_that_fits:
        raise AscendNbError(f"{head}: even the weights do not fit; with quantize int8 they do "
                            "(check with `ascend-nb plan --quantize int8`)")
    raise AscendNbError(f"{head}: even the weights do not fit; use a device with more memory or more tp ranks")
