"""Latency sweeps over batch size x input length x output length, as the guides' performance test.

Each grid point runs random input ids (fixed seed) with EOS disabled, so the output length is
exact; ``warmup`` untimed short runs of the same shape come first, then ``repeat`` (default 3)
timed runs whose medians make the row, beside their minimum and spread; a row whose runs spread
more than ``SPREAD_FLAG_PCT`` or that beats the roofline is flagged. The default grid is a quick
one (``GRIDS["quick"]``); the guides' full 2^5..2^10 grid is ``GRIDS["guides"]``. Rows are yielded as they finish and appended to
``csv_path`` (the whole
file is rewritten atomically, so a crash or a kernel restart loses at most the point in flight);
a later call with the same CSV skips the points already there with the same settings
(:data:`KEY_FIELDS`), and measures the others beside them.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ascend_nb import device as devices
from ascend_nb.bench.guides_csv import GUIDE_COLUMNS, guide_values
from ascend_nb.bench.results_csv import ResultsCsv
from ascend_nb.bench.roofline_model import roofline
from ascend_nb.dtypes import dtype_name
from ascend_nb.models.dims import model_dims
from ascend_nb.models.footprint import kv_cache_bytes, prefill_activation_bytes
from ascend_nb.models.params import GenerationParams
from ascend_nb.errors import AscendNbError
from ascend_nb.models.registry import MODELS
from ascend_nb.progress import progress_bar

GUIDE_LENS = (32, 64, 128, 256, 512, 1024)  # the guides' 2^5..2^10
QUICK_INPUT_LENS, QUICK_OUTPUT_LENS = (32, 256, 1024), (32, 128)  # 6 points: a first run in minutes
GRIDS = {"quick": (QUICK_INPUT_LENS, QUICK_OUTPUT_LENS), "guides": (GUIDE_LENS, GUIDE_LENS)}
SPREAD_FLAG_PCT = 25.0  # (max - min) / median of the timed runs above this: a noisy point
WARMUP_TOKENS = 4  # new tokens per warm-up run: enough to run prefill and the decode path once
RUN_FIELDS = ("backend", "model", "device", "device_name", "dtype", "quantize", "kernels", "graphs", "tp",
              "max_seq_len")
MEASURE_FIELDS = ("seed", "warmup", "repeat")  # how each point is measured
# Everything that changes a row's figures: a resumed CSV reuses a row only when all of these match.
KEY_FIELDS = RUN_FIELDS + ("batch_size", "input_len", "output_len") + MEASURE_FIELDS
RESULT_FIELDS = RUN_FIELDS + ("batch_size", "input_len", "output_len") + MEASURE_FIELDS + ("ttft_ms", "tpot_ms",
                              "decode_tokens_per_s", "e2e_ms", "peak_memory_mb", "roofline_tokens_per_s",
                              "pct_of_roofline",
                              "ttft_ms_min", "tpot_ms_min", "ttft_spread_pct", "tpot_spread_pct", "flags")
CSV_COLUMNS = RESULT_FIELDS + tuple(c for c in GUIDE_COLUMNS if c not in RESULT_FIELDS)
_INT_FIELDS = {"tp", "max_seq_len", "batch_size", "input_len", "output_len", *MEASURE_FIELDS, "input_seq_len(Encoding)",
               "output_seq_len(Decoding)"}
_TEXT_FIELDS = (*(field for field in RUN_FIELDS if field not in _INT_FIELDS), "flags")
_OPTIONAL_FIELDS = ("peak_memory_mb",)  # None where the device reports no peak; a row fills every other figure


@dataclass(frozen=True)
class SweepPoint:
    batch_size: int
    input_len: int
    output_len: int


@dataclass
class SweepPlan:
    """The grid points that will run, in order, and the ones trimmed away with the reason."""

    points: list[SweepPoint] = field(default_factory=list)
    skipped: list[tuple[SweepPoint, str]] = field(default_factory=list)


def _positive_ints(name: str, values: Sequence[int], minimum: int = 1) -> list[int]:
    values = list(values)
    if not values or any(int(v) != v or v < minimum for v in values):
        raise AscendNbError(f"{name} must be a non-empty list of integers >= {minimum}, got {values}")
    return [int(v) for v in values]


def point_memory_bytes(engine, point: SweepPoint) -> int:
    """A rough upper estimate of the memory one point needs beyond the weights: the KV cache at full
    length, eager prefill attention scores (fp32), MLP activations and the logits."""
    dims = model_dims(engine)
    b, t = point.batch_size, point.input_len
    kv = kv_cache_bytes(dims, engine.dtype, t + point.output_len, b)
    return kv + prefill_activation_bytes(dims, engine.dtype, b, t)


def require_local_model(engine) -> None:
    """Sweeps and traces need the model here (its config, dtype and device), not behind a server."""
    if getattr(engine, "config", None) is None or getattr(engine, "dtype", None) is None:
        raise AscendNbError(f"the {engine.backend} backend has no local model to measure: "
                            "use the transformers or accelerated backend")


def grid_lengths(grid: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(input lengths, output lengths)`` of a named grid: ``quick`` or ``guides``."""
    if grid not in GRIDS:
        raise AscendNbError(f"unknown grid {grid!r}: use one of {', '.join(GRIDS)}")
    return GRIDS[grid]


def plan_sweep(engine, batch_sizes: Sequence[int] = (1,), input_lens: Sequence[int] = QUICK_INPUT_LENS,
               output_lens: Sequence[int] = QUICK_OUTPUT_LENS) -> SweepPlan:
    """The grid in the guides' order (batch, then input, then output), without the points that do not
    fit ``engine.max_seq_len`` or the memory free now."""
    require_local_model(engine)
    batch_sizes = _positive_ints("batch sizes", batch_sizes)
    input_lens = _positive_ints("input lengths", input_lens)
    output_lens = _positive_ints("output lengths (TPOT needs two tokens)", output_lens, minimum=2)
    free = devices.free_memory_bytes(engine.device)
    plan = SweepPlan()
    for batch_size in batch_sizes:
        for input_len in input_lens:
            for output_len in output_lens:
                point = SweepPoint(batch_size, input_len, output_len)
                need = point_memory_bytes(engine, point)
                if input_len + output_len > engine.max_seq_len:
                    plan.skipped.append((point, f"input + output exceeds max_seq_len {engine.max_seq_len}"))
                elif need > free:
                    plan.skipped.append((point, f"needs about {need / 2**20:.0f} MB, {free / 2**20:.0f} MB free"))
                else:
                    plan.points.append(point)
    return plan


def run_fields(engine) -> dict:
    """What identifies a run in a results row (:data:`RUN_FIELDS`): backend, model, device, device
    name, dtype, quantize, kernel path, graph mode, tensor-parallel size and static token budget."""
    tp = getattr(engine, "tp", None)
    return {"backend": engine.backend,
            "model": engine.spec.name if engine.spec.name in MODELS else engine.model_dir.name,
            "device": str(engine.device), "device_name": devices.device_info(engine.device).name,
            "dtype": dtype_name(engine.dtype),
            "quantize": getattr(engine, "quantize", None) or "none",
            "kernels": engine.kernels, "graphs": engine.graphs or "none",
            "tp": tp.world_size if tp is not None else 1, "max_seq_len": engine.max_seq_len}


def random_prompts(vocab_size: int, batch_size: int, input_len: int, seed: int) -> list[list[int]]:
    """``batch_size`` prompts of ``input_len`` random token ids (the guides' dummy inputs), seeded."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch_size, input_len), generator=generator).tolist()


def _spread_pct(values: list[float]) -> float:
    """(max - min) / median of the timed runs, in %; 0 for one run."""
    return 100.0 * (max(values) - min(values)) / statistics.median(values)


def flags(row: dict) -> str:
    """Why a row should not be trusted at a glance: noisy runs, or faster than the roofline allows."""
    found = [f"{metric} spread {row[f'{metric}_spread_pct']:.0f}%" for metric in ("ttft", "tpot")
             if (row.get(f"{metric}_spread_pct") or 0) > SPREAD_FLAG_PCT]
    if (row.get("pct_of_roofline") or 0) > 100:
        found.append("above roofline")
    return "; ".join(found)


def measure_point(engine, point: SweepPoint, repeat: int = 3, warmup: int = 1, seed: int = 0) -> dict:
    """Median, minimum and spread of TTFT / TPOT (median E2E) over ``repeat`` timed runs of one grid
    point, after ``warmup`` short runs."""
    prompts = random_prompts(engine.config.vocab_size, point.batch_size, point.input_len, seed)
    params = GenerationParams(max_new_tokens=point.output_len, ignore_eos=True)
    for _ in range(warmup):
        engine.generate(prompts, params.replace(max_new_tokens=min(point.output_len, WARMUP_TOKENS)))
    timings = [engine.generate(prompts, params)[0].timings for _ in range(repeat)]
    if any(t.tokens != point.output_len for t in timings):
        raise AscendNbError(f"the {engine.backend} backend stopped before {point.output_len} tokens with "
                            "ignore_eos=True: its EOS handling is broken")
    ttfts, tpots = [t.ttft_ms for t in timings], [t.tpot_ms for t in timings]
    tpot_ms = statistics.median(tpots)
    peaks = [t.peak_memory_mb for t in timings if t.peak_memory_mb is not None]
    return {"batch_size": point.batch_size, "input_len": point.input_len, "output_len": point.output_len,
            "repeat": repeat, "ttft_ms": statistics.median(ttfts), "tpot_ms": tpot_ms,
            "decode_tokens_per_s": 1000.0 * point.batch_size / tpot_ms,
            "e2e_ms": statistics.median(t.e2e_ms for t in timings), "peak_memory_mb": max(peaks, default=None),
            "ttft_ms_min": min(ttfts), "tpot_ms_min": min(tpots), "ttft_spread_pct": _spread_pct(ttfts),
            "tpot_spread_pct": _spread_pct(tpots)}


def sweep(engine, batch_sizes: Sequence[int] = (1,), input_lens: Sequence[int] = QUICK_INPUT_LENS,
          output_lens: Sequence[int] = QUICK_OUTPUT_LENS, repeat: int = 3, warmup: int = 1,
          csv_path: str | Path | None = None, resume: bool = True, seed: int = 0, progress: bool = True,
          bandwidth_gbs: float | None = None) -> Iterator[dict]:
    """Run the latency grid on ``engine`` and yield one row per point as it finishes.

    Rows carry the bench field names (``backend, model, device, dtype, quantize, batch_size,
    input_len, output_len, ttft_ms, tpot_ms, decode_tokens_per_s, e2e_ms, peak_memory_mb``), the
    decode roofline at the point's mean context (``roofline_tokens_per_s``, ``pct_of_roofline``;
    bandwidth measured here over the weights' size unless ``bandwidth_gbs`` is given), the runs'
    minimum and spread, ``flags`` (see :func:`flags`) and the guides' columns. The progress bar
    (a notebook output that keeps its final state, or tqdm) shows an ETA.
    With ``csv_path`` every row is appended to that CSV as it lands; with ``resume`` (default) the
    points of this run already in the CSV (every :data:`KEY_FIELDS` value equal: a row measured with
    another setting is never reused) are yielded from it instead of measured again, while
    ``resume=False`` starts the file over. Points that do not fit ``max_seq_len`` or free memory
    are skipped (see :func:`plan_sweep`).
    """
    if repeat < 1 or warmup < 0:
        raise AscendNbError(f"repeat must be >= 1 and warmup >= 0, got repeat={repeat}, warmup={warmup}")
    plan = plan_sweep(engine, batch_sizes, input_lens, output_lens)
    if not plan.points:
        raise AscendNbError(f"no grid point fits (max_seq_len {engine.max_seq_len}, free memory): "
                            "use shorter input/output lengths or smaller batch sizes")
    results = ResultsCsv(csv_path, CSV_COLUMNS, KEY_FIELDS, text_fields=_TEXT_FIELDS, int_fields=_INT_FIELDS,
                         optional_fields=_OPTIONAL_FIELDS, resume=resume, kind="sweep")
    identity = {**run_fields(engine), "seed": seed, "warmup": warmup, "repeat": repeat}
    if bandwidth_gbs is None:
        ceiling = roofline(engine)
        bandwidth, bandwidth_note = ceiling.bandwidth_gbs, f"{ceiling.bandwidth_gbs:.1f} GB/s, {ceiling.bandwidth_source}"
    else:
        bandwidth, bandwidth_note = bandwidth_gbs, f"{bandwidth_gbs:.1f} GB/s, given"
    todo = [p for p in plan.points if results.find({**identity, **vars(p)}) is None]
    bar = progress_bar(len(plan.points), initial=len(plan.points) - len(todo), desc=f"sweep {engine.backend}",
                       unit="points", disable=not progress)
    if todo and progress:
        bar.write(f"sweep {engine.backend}: {len(todo)} point(s) x ({warmup} warm-up + {repeat} timed) runs; "
                  f"decode roofline at {bandwidth_note}")
    if plan.skipped:
        bar.write(f"skipping {len(plan.skipped)} grid point(s), e.g. {vars(plan.skipped[0][0])}: {plan.skipped[0][1]}")
    try:
        for point in plan.points:
            previous = results.find({**identity, **vars(point)})
            if previous is not None:
                yield previous
                continue
            row = {**identity, **measure_point(engine, point, repeat, warmup, seed)}
            limit = roofline(engine, seq_len=point.input_len + point.output_len / 2, batch_size=point.batch_size,
                             bandwidth_gbs=bandwidth)
            row["roofline_tokens_per_s"] = limit.tokens_per_s
            row["pct_of_roofline"] = limit.percent(row["decode_tokens_per_s"])
            row["flags"] = flags(row)
            row.update(guide_values(row))
            results.append(row)
            bar.update(1)
            bar.set_postfix(ttft_ms=f"{row['ttft_ms']:.1f}", tpot_ms=f"{row['tpot_ms']:.1f}")
            yield dict(row)
    finally:
        bar.close()
