"""``ascend-nb bench --sweep [--csv PATH] [--resume]`` and ``ascend-nb bench --compare A.csv B.csv``.

The bench command's own options (``--model``, ``--backend``, ``--device``, ``--dtype``,
``--quantize``, ``--repeat``, ``--warmup``, ``--seed``, ``--json``) apply to the sweep too; the
grid comes from ``--batch-sizes``, ``--input-lens`` and ``--output-lens``. Backends are swept one
after the other into the same CSV.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ascend_nb.bench.comparison import compare
from ascend_nb.bench.run import QUANTIZABLE_BACKENDS
from ascend_nb.bench.latency_sweep import GUIDE_LENS, sweep
from ascend_nb.cli import options
from ascend_nb.errors import AscendNbError
from ascend_nb.engine.loading import load, resolve_model_dir
from ascend_nb.models.validation import read_config

SUMMARY_COLUMNS = ("backend", "batch_size", "input_len", "output_len", "ttft_ms", "tpot_ms", "decode_tokens_per_s",
                   "pct_of_roofline")


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sweep and compare options to the ``bench`` parser."""
    group = parser.add_argument_group("sweep and compare")
    group.add_argument("--sweep", action="store_true",
                       help="run the grid batch sizes x input lengths x output lengths (the guides' performance test)")
    group.add_argument("--batch-sizes", type=options.numbers(int), default=(1,), metavar="N,N", help="sweep batch sizes (default: 1)")
    lens = ",".join(map(str, GUIDE_LENS))
    group.add_argument("--input-lens", type=options.numbers(int), default=GUIDE_LENS, metavar="N,N",
                       help=f"sweep input lengths (default: {lens})")
    group.add_argument("--output-lens", type=options.numbers(int), default=GUIDE_LENS, metavar="N,N",
                       help=f"sweep output lengths (default: {lens})")
    group.add_argument("--max-seq-len", type=int, default=None,
                       help="token budget per sequence (default: longest input + output, capped at the model's limit); "
                            "points beyond it are skipped")
    group.add_argument("--csv", metavar="PATH",
                       help="write each sweep row (or load level) to PATH as it finishes (ours + the guides' or MindIE's columns)")
    group.add_argument("--resume", action="store_true", help="continue the sweep (or load run) already in --csv PATH")
    group.add_argument("--compare", nargs=2, metavar=("A.csv", "B.csv"),
                       help="compare two result CSVs (ours or the guides'); speedup = B time / A time")


def results_csv_path(args: argparse.Namespace) -> Path | None:
    """``--csv PATH`` checked against ``--resume``: a new file, or an existing one only with ``--resume``."""
    if args.csv is None:
        if args.resume:
            raise AscendNbError("--resume continues the run in a CSV: add --csv PATH")
        return None
    path = Path(args.csv)
    if path.exists() and not args.resume:
        raise AscendNbError(f"{path} already exists: add --resume to continue that run, or choose another --csv path")
    return path


def _max_seq_len(args: argparse.Namespace) -> int:
    if args.max_seq_len is not None:
        return args.max_seq_len
    limit = read_config(resolve_model_dir(args.model)).get("max_position_embeddings")
    wanted = max(args.input_lens) + max(args.output_lens)
    return min(wanted, limit) if limit else wanted


def _text(table: pd.DataFrame, digits: int = 2) -> str:
    return table.to_string(index=False, float_format=lambda v: f"{v:.{digits}f}")


def run_sweep(args: argparse.Namespace) -> int:
    """Sweep every ``--backend`` over the grid; print the rows (and each backend against the first)."""
    if len(args.kernels) > 1:
        raise AscendNbError("--sweep runs one kernel path per backend: give one --kernels (compare paths with "
                            "`ascend-nb bench --kernels A,B`, or sweep each into its own --csv)")
    csv_path = results_csv_path(args)
    max_seq_len = _max_seq_len(args)
    rows: dict[str, list[dict]] = {}
    for backend in args.backend:
        options = {}
        if backend in QUANTIZABLE_BACKENDS:
            options = {"quantize": args.quantize, "graphs": args.graphs or None,
                       "kernels": args.kernels[0] if args.kernels else None}
        engine = load(args.model, device=args.device, dtype=args.dtype, backend=backend, max_seq_len=max_seq_len,
                      **options)
        rows[backend] = list(sweep(engine, args.batch_sizes, args.input_lens, args.output_lens, repeat=args.repeat,
                                   warmup=args.warmup, csv_path=csv_path, resume=True, seed=args.seed))
        del engine  # free its memory before the next backend loads
    everything = [row for backend_rows in rows.values() for row in backend_rows]
    if args.json:
        print(json.dumps(everything))
        return 0
    baseline, *others = rows
    print(_text(pd.DataFrame(everything).reindex(columns=SUMMARY_COLUMNS)))
    for backend in others:
        print(f"\n{backend} vs {baseline}:")
        print(_text(compare(rows[backend], rows[baseline], labels=(backend, baseline)), digits=3))
    if csv_path is not None:
        print(f"\nrows in {csv_path}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Print ``compare(A, B)`` for two CSV files."""
    first, second = args.compare
    table = compare(first, second, labels=(Path(first).stem, Path(second).stem))
    print(table.to_json(orient="records") if args.json else _text(table, digits=3))
    return 0


def run_sweep_or_compare(args: argparse.Namespace) -> int | None:
    """Handle ``--sweep`` or ``--compare``; ``None`` when neither was asked (a single-point bench)."""
    if args.compare and args.sweep:
        raise AscendNbError("--sweep and --compare are separate modes: run one at a time")
    if args.compare:
        return run_compare(args)
    if args.sweep:
        return run_sweep(args)
    if args.csv or args.resume:
        raise AscendNbError("--csv and --resume go with --sweep (or --backend openai)")
    return None
