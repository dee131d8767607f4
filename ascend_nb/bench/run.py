"""What a benchmark runs (:class:`BenchConfig`, validated once) and the two ways to run it.

:func:`run_bench` is ``ascend-nb bench``: several backends, one process, one point. Every
backend is loaded once; then ``repeat`` rounds run each backend in turn on the same seeded
random prompts with EOS disabled (so every run produces exactly ``output_len`` tokens). Running
the backends interleaved, rather than one after the other, spreads slow phases of a shared
machine over all of them, so their ratio stays fair. A row per backend holds the medians.
:func:`run_sweep` is ``ascend-nb bench --sweep``: the same engines, one after the other, over a
batch x input x output grid (:func:`~ascend_nb.bench.latency_sweep.sweep`). Both load their
engines through :func:`engine_loaders`, so a setting means the same in either.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ascend_nb.bench.latency_sweep import SweepPoint, measure_point, run_fields, sweep
from ascend_nb.errors import AscendNbError
from ascend_nb.engine.loading import DEFAULT_MODEL, check_backend, load, resolve_model_dir
from ascend_nb.models.footprint import require_fit
from ascend_nb.models.validation import read_config
from ascend_nb.parallel import check_ranks, is_main_process

SPECULATIVE_DATASETS = ("grounded", "open")  # data/grounded_prompts/<name>.jsonl
QUANTIZABLE_BACKENDS = ("accelerated",)  # take quantize and graphs; the transformers reference runs as it is
ROW_FIELDS = ("backend", "model", "device", "dtype", "quantize", "kernels", "graphs", "tp", "max_seq_len",
              "batch_size", "input_len", "output_len", "ttft_ms", "tpot_ms", "decode_tokens_per_s", "e2e_ms",
              "peak_memory_mb")


@dataclass(frozen=True)
class BenchConfig:
    """What to run: the model, the backends to compare, how each is loaded and measured, and one
    (batch, input, output) point (a sweep's grid replaces the point: :func:`run_sweep`)."""

    model: str = DEFAULT_MODEL
    backends: tuple[str, ...] = ("transformers", "accelerated")
    device: str = "auto"
    dtype: str = "auto"
    quantize: str | None = None
    graphs: bool = False
    kernels: tuple[str, ...] = ()  # accelerated kernel paths to run side by side (default: the machine's fastest)
    tp: int = 1
    max_seq_len: int | None = None  # static token budget per sequence (default: what the point or grid needs)
    batch_size: int = 1
    input_len: int = 128
    output_len: int = 64
    repeat: int = 3
    warmup: int = 1
    seed: int = 0
    speculative: str | None = None  # prompt-lookup | draft:MODEL[@QUANT]: plain against speculative (run_speculative_bench)
    dataset: str = "grounded"  # the built-in prompt set of a speculative run (SPECULATIVE_DATASETS)

    def __post_init__(self) -> None:
        for name in ("backends", "kernels"):  # lists (from JSON, or a caller) become tuples: the config stays hashable
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.backends:
            raise AscendNbError("give at least one backend, e.g. --backend transformers,accelerated")
        for backend in self.backends:
            check_backend(backend)
        if len(set(self.backends)) != len(self.backends):
            raise AscendNbError(f"a backend is named twice in {','.join(self.backends)}")
        if self.batch_size < 1 or self.input_len < 1 or self.output_len < 2:
            raise AscendNbError("batch size and input length must be >= 1 and output length >= 2 (TPOT needs two tokens)")
        if self.max_seq_len is not None and self.max_seq_len < 3:
            raise AscendNbError("--max-seq-len must hold an input and two output tokens (>= 3), "
                                f"got {self.max_seq_len}")
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
        from ascend_nb.models.params import check_speculative

        object.__setattr__(self, "speculative", check_speculative(self.speculative))
        if self.dataset not in SPECULATIVE_DATASETS:
            raise AscendNbError(f"unknown dataset {self.dataset!r}: use one of {', '.join(SPECULATIVE_DATASETS)}")
        if self.speculative and ("accelerated" not in self.backends or self.batch_size != 1 or self.tp != 1):
            raise AscendNbError("--speculative benchmarks the accelerated backend at batch 1 without tensor parallelism: "
                                "use --backend accelerated --batch-size 1")

    @property
    def point(self) -> SweepPoint:
        return SweepPoint(self.batch_size, self.input_len, self.output_len)

    @property
    def point_max_seq_len(self) -> int:
        """The token budget of a one-point run: ``max_seq_len``, or exactly input + output tokens."""
        need = self.input_len + self.output_len
        if self.max_seq_len is not None and self.max_seq_len < need:
            raise AscendNbError(f"input + output ({need} tokens) exceeds --max-seq-len {self.max_seq_len}: "
                                "raise it, or shorten --input-len / --output-len")
        return self.max_seq_len or need

    def to_json(self) -> str:
        """The config as one JSON object (:meth:`from_json` reads it back): how a launcher hands it to its ranks."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BenchConfig:
        return cls(**json.loads(text))


def engine_loaders(config: BenchConfig, max_seq_len: int) -> dict[str, Callable]:
    """How to load each engine ``config`` compares, by row label, each with ``max_seq_len``: one per
    backend, and one accelerated engine per kernel path in ``config.kernels`` (label
    ``accelerated[PATH]``). Each value is a call without arguments that loads that engine, so a
    sweep can load them one at a time."""
    loaders = {}
    for backend in config.backends:
        if backend in QUANTIZABLE_BACKENDS:
            base = {"quantize": config.quantize, "graphs": config.graphs or None,
                    **({"tp": config.tp} if config.tp != 1 else {})}
            paths = config.kernels or (None,)  # None: the machine's fastest
            variants = {backend if len(paths) == 1 else f"{backend}[{path}]": {**base, "kernels": path}
                        for path in paths}
        else:
            variants = {backend: {}}
        for label, options in variants.items():
            loaders[label] = partial(load, config.model, device=config.device, dtype=config.dtype, backend=backend,
                                     max_seq_len=max_seq_len, **options)
    return loaders


def load_engines(config: BenchConfig) -> dict:
    """The engines of :func:`engine_loaders`, loaded, each with a static budget of
    :attr:`BenchConfig.point_max_seq_len`; a point whose batch cannot fit the device is refused
    first (:func:`~ascend_nb.models.footprint.require_fit`)."""
    max_seq_len = config.point_max_seq_len
    if "openai" not in config.backends:  # a served model has no local weights to plan
        require_fit(config.model, config.device, config.dtype, config.quantize, max_seq_len, config.batch_size,
                    config.tp)
    return {label: load_one() for label, load_one in engine_loaders(config, max_seq_len).items()}


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
               "peak_memory_mb": max(peaks, default=None), "repeat": config.repeat}
        rows.append(row)
    return rows


def run_bench(config: BenchConfig) -> list[dict]:
    """Load every backend of ``config`` and return its rows (fields: :data:`ROW_FIELDS` and more)."""
    return run_rounds(load_engines(config), config)


def run_bench_rank(config: BenchConfig) -> list[dict] | None:
    """:func:`run_bench` on one rank of a torchrun launch (every rank must measure: the collectives need
    them all): the rows on rank 0 (and without tensor parallelism), None on the other ranks."""
    engines = load_engines(config)
    rows = run_rounds(engines, config)
    return rows if all(is_main_process(engine) for engine in engines.values()) else None


def sweep_max_seq_len(config: BenchConfig, input_lens: Sequence[int], output_lens: Sequence[int]) -> int:
    """A sweep's token budget: ``config.max_seq_len``, or the longest input + output capped at the model's limit."""
    if config.max_seq_len is not None:
        return config.max_seq_len
    limit = read_config(resolve_model_dir(config.model)).get("max_position_embeddings")
    wanted = max(input_lens) + max(output_lens)
    return min(wanted, limit) if limit else wanted


def run_sweep(config: BenchConfig, batch_sizes: Sequence[int], input_lens: Sequence[int],
              output_lens: Sequence[int], csv_path: str | Path | None = None, resume: bool = True,
              progress: bool = True) -> dict[str, list[dict]]:
    """Sweep each engine of ``config`` over the grid, one engine loaded at a time, into one CSV.

    The grid replaces ``config``'s point; every other setting applies as in :func:`run_bench`.
    Returns the rows by engine label (see :func:`engine_loaders`), in ``config.backends`` order.
    A sweep runs in one process, so ``config.tp`` must be 1 (:func:`~ascend_nb.bench.distributed.bench_tensor_parallel`
    measures tensor-parallel sizes).
    """
    if config.speculative:
        raise AscendNbError("--speculative is measured on its prompt sets (--dataset), not over a sweep grid: "
                            "drop --sweep or --speculative")
    if config.tp != 1:
        raise AscendNbError(f"--sweep runs in one process, --tp {config.tp} needs torchrun: sweep with --tp 1, and "
                            "measure tensor parallel one point at a time (ascend-nb bench --tp N under torchrun)")
    rows: dict[str, list[dict]] = {}
    for label, load_one in engine_loaders(config, sweep_max_seq_len(config, input_lens, output_lens)).items():
        engine = load_one()
        rows[label] = list(sweep(engine, batch_sizes, input_lens, output_lens, repeat=config.repeat,
                                 warmup=config.warmup, csv_path=csv_path, resume=resume, seed=config.seed,
                                 progress=progress))
        del engine  # free its memory before the next engine loads
    return rows


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


# -- speculative decoding: plain against speculative on real prompts --------------------------------------
SPECULATIVE_FIELDS = ("acceptance_rate", "tokens_per_step", "draft_ms", "verify_ms")


def speculative_prompts(dataset: str) -> list[dict]:
    """The built-in prompt set ``dataset`` (``data/grounded_prompts/<dataset>.jsonl``: ``id``, ``task``, ``prompt``)."""
    from ascend_nb.files import data_dir

    if dataset not in SPECULATIVE_DATASETS:
        raise AscendNbError(f"unknown dataset {dataset!r}: use one of {', '.join(SPECULATIVE_DATASETS)}")
    path = data_dir() / "grounded_prompts" / f"{dataset}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_speculative_bench(config: BenchConfig, limit: int | None = None) -> list[dict]:
    """``ascend-nb bench --speculative``: each prompt of ``config.dataset`` (chat template applied) through the
    accelerated engine greedily, ``config.output_len`` tokens with EOS disabled, plain and with
    ``config.speculative`` in interleaved rounds (``config.repeat``; medians). Greedy speculation gives
    the plain tokens, so both runs decode the same text. One row per prompt and mode ("plain",
    "speculative") with TTFT/TPOT/decode tokens/s and, for speculative rows, :data:`SPECULATIVE_FIELDS`."""
    from ascend_nb.models.params import GenerationParams

    prompts = speculative_prompts(config.dataset)[:limit]
    engine_options = {"quantize": config.quantize, "graphs": config.graphs or None,
                      "kernels": config.kernels[0] if config.kernels else None}
    engine = load(config.model, device=config.device, dtype=config.dtype, backend="accelerated",
                  max_seq_len=config.max_seq_len or sweep_max_seq_len(config, [2048 - config.output_len], [config.output_len]),
                  **engine_options)
    encoded = [engine.encode_chat([{"role": "user", "content": p["prompt"]}], config.output_len) for p in prompts]
    longest = max(len(ids) for ids in encoded)
    if longest + config.output_len > engine.max_seq_len:
        raise AscendNbError(f"a prompt ({longest} tokens) + --output-len {config.output_len} exceeds max_seq_len "
                            f"{engine.max_seq_len}: raise --max-seq-len")
    plain = GenerationParams(max_new_tokens=config.output_len, ignore_eos=True)
    modes = {"plain": plain, "speculative": plain.replace(speculative=config.speculative)}
    for _ in range(config.warmup):
        for params in modes.values():
            engine.generate(encoded[0], params.replace(max_new_tokens=min(8, config.output_len)))
    runs: dict[tuple[int, str], list] = {}
    for _ in range(config.repeat):
        for index, ids in enumerate(encoded):
            for mode, params in modes.items():
                runs.setdefault((index, mode), []).append(engine.generate(ids, params))
    rows = []
    for (index, mode), results in runs.items():
        row = {**run_fields(engine), "label": mode, "speculative": config.speculative if mode != "plain" else None,
               "dataset": config.dataset, "prompt_id": prompts[index]["id"], "task": prompts[index]["task"],
               "batch_size": 1, "input_len": len(encoded[index]), "output_len": config.output_len,
               "ttft_ms": statistics.median(r.timings.ttft_ms for r in results),
               "tpot_ms": statistics.median(r.timings.tpot_ms for r in results),
               "e2e_ms": statistics.median(r.timings.e2e_ms for r in results),
               "peak_memory_mb": max((r.timings.peak_memory_mb or 0 for r in results), default=None),
               "repeat": config.repeat, "same_tokens": None}
        row["decode_tokens_per_s"] = 1000.0 / row["tpot_ms"] if row["tpot_ms"] else 0.0
        for name in SPECULATIVE_FIELDS:
            row[name] = (statistics.median(r.speculative.as_dict()[name] for r in results)
                         if results[0].speculative else None)
        if mode != "plain":
            row["same_tokens"] = all(r.token_ids == runs[(index, "plain")][0].token_ids for r in results)
        rows.append(row)
    return rows


def speculative_summary(rows: Sequence[dict]) -> dict[str, float]:
    """Median over prompts of the speculative / plain decode tokens/s ratio, acceptance and tokens per step."""
    plain = {r["prompt_id"]: r for r in rows if r["label"] == "plain"}
    spec = [r for r in rows if r["label"] != "plain"]
    if not spec:
        return {}
    return {"decode_speedup": statistics.median(r["decode_tokens_per_s"] / plain[r["prompt_id"]]["decode_tokens_per_s"]
                                                for r in spec),
            "acceptance_rate": statistics.median(r["acceptance_rate"] for r in spec),
            "tokens_per_step": statistics.median(r["tokens_per_step"] for r in spec),
            "prompts": len(spec), "same_tokens": all(r["same_tokens"] for r in spec)}
