"""The head-to-head latency benchmark behind ``ascend-nb bench``: several backends, one process.

Every backend is loaded once; then ``repeat`` rounds run each backend in turn on the same seeded
random prompts with EOS disabled (so every run produces exactly ``output_len`` tokens). Running
the backends interleaved, rather than one after the other, spreads slow phases of a shared
machine over all of them, so their ratio stays fair. A row per backend holds the medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from ascend_nb.bench.latency_sweep import SweepPoint, measure_point, run_fields
from ascend_nb.errors import AscendNbError
from ascend_nb.engine.loading import DEFAULT_MODEL, check_backend, load
from ascend_nb.models.footprint import require_fit
from ascend_nb.parallel import check_ranks

QUANTIZABLE_BACKENDS = ("accelerated",)  # take quantize and graphs; the transformers reference runs as it is
ROW_FIELDS = ("backend", "model", "device", "dtype", "quantize", "kernels", "graphs", "batch_size", "input_len",
              "output_len", "ttft_ms", "tpot_ms", "decode_tokens_per_s", "e2e_ms", "peak_memory_mb")


@dataclass(frozen=True)
class BenchConfig:
    """What to run: the model, the backends to compare and one (batch, input, output) point."""

    model: str = DEFAULT_MODEL
    backends: tuple[str, ...] = ("transformers", "accelerated")
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None
    graphs: bool = False
    kernels: tuple[str, ...] = ()  # accelerated kernel paths to run side by side (default: the machine's fastest)
    tp: int = 1
    batch_size: int = 1
    input_len: int = 128
    output_len: int = 64
    repeat: int = 3
    warmup: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.backends:
            raise AscendNbError("give at least one backend, e.g. --backend transformers,accelerated")
        for backend in self.backends:
            check_backend(backend)
        if len(set(self.backends)) != len(self.backends):
            raise AscendNbError(f"a backend is named twice in {','.join(self.backends)}")
        if self.batch_size < 1 or self.input_len < 1 or self.output_len < 2:
            raise AscendNbError("batch size and input length must be >= 1 and output length >= 2 (TPOT needs two tokens)")
        if self.repeat < 1 or self.warmup < 0:
            raise AscendNbError(f"repeat must be >= 1 and warmup >= 0, got {self.repeat} and {self.warmup}")
        check_ranks(self.tp)
        if self.tp != 1 and self.backends != ("accelerated",):
            raise AscendNbError(f"--tp {self.tp} benchmarks the accelerated backend alone: use --backend accelerated "
                                "under torchrun, and compare with a --tp 1 run")
        if (self.quantize or self.graphs or self.kernels) and not any(b in QUANTIZABLE_BACKENDS for b in self.backends):
            raise AscendNbError(f"quantize, graphs and kernels apply to {', '.join(QUANTIZABLE_BACKENDS)} only: "
                                "add it to --backend")
        if len(set(self.kernels)) != len(self.kernels):
            raise AscendNbError(f"a kernel path is named twice in {','.join(self.kernels)}")

    @property
    def point(self) -> SweepPoint:
        return SweepPoint(self.batch_size, self.input_len, self.output_len)


def load_engines(config: BenchConfig) -> dict:
    """The engines to compare, each with a static budget of exactly input + output tokens: one per
    backend, and one accelerated engine per kernel path in ``config.kernels``; a point whose batch
    cannot fit the device is refused first (:func:`~ascend_nb.models.footprint.require_fit`)."""
    if "openai" not in config.backends:  # a served model has no local weights to plan
        require_fit(config.model, config.device, config.dtype, config.quantize, config.input_len + config.output_len,
                    config.batch_size, config.tp)
    engines = {}
    for backend in config.backends:
        variants = [{}]
        if backend in QUANTIZABLE_BACKENDS:
            base = {"quantize": config.quantize, "graphs": config.graphs or None,
                    **({"tp": config.tp} if config.tp != 1 else {})}
            variants = [{**base, "kernels": path} for path in config.kernels] or [base]
        for options in variants:
            engine = load(config.model, device=config.device, dtype=config.dtype, backend=backend,
                          max_seq_len=config.input_len + config.output_len, **options)
            label = backend if len(variants) == 1 else f"{backend}[{engine.kernels}]"
            engines[label] = engine
    return engines


def run_rounds(engines: dict, config: BenchConfig) -> list[dict]:
    """``config.repeat`` interleaved rounds over ``engines``; one row of medians per backend."""
    runs: dict[str, list[dict]] = {name: [] for name in engines}
    for round_index in range(config.repeat):
        for name, engine in engines.items():
            warmup = config.warmup if round_index == 0 else 0
            runs[name].append(measure_point(engine, config.point, repeat=1, warmup=warmup, seed=config.seed))
    rows = []
    for name, engine in engines.items():
        measured = runs[name]
        tpot_ms = statistics.median(m["tpot_ms"] for m in measured)
        peaks = [m["peak_memory_mb"] for m in measured if m["peak_memory_mb"] is not None]
        row = {**run_fields(engine), "label": name, **vars(config.point),
               "ttft_ms": statistics.median(m["ttft_ms"] for m in measured), "tpot_ms": tpot_ms,
               "decode_tokens_per_s": 1000.0 * config.batch_size / tpot_ms,
               "e2e_ms": statistics.median(m["e2e_ms"] for m in measured),
               "peak_memory_mb": max(peaks, default=None), "tp": config.tp, "repeat": config.repeat}
        rows.append(row)
    return rows


def run_bench(config: BenchConfig) -> list[dict]:
    """Load every backend of ``config`` and return its rows (fields: :data:`ROW_FIELDS` and more)."""
    return run_rounds(load_engines(config), config)


def speedups(rows: Sequence[dict], baseline: str = "transformers") -> dict[str, dict[str, float]]:
    """Each other engine (by row label) against ``baseline``: decode throughput ratio and TTFT ratio (baseline / it)."""
    def label(row: dict) -> str:
        return row.get("label", row["backend"])

    base = next((r for r in rows if label(r) == baseline), None)
    if base is None:
        return {}
    return {label(r): {"decode": r["decode_tokens_per_s"] / base["decode_tokens_per_s"],
                       "ttft": base["ttft_ms"] / r["ttft_ms"]}
            for r in rows if label(r) != baseline}
