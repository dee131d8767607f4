"""``ascend-nb bench --sweep [--csv PATH] [--resume]`` and ``ascend-nb bench --compare A.csv B.csv``.

The sweep takes the bench command's :class:`~ascend_nb.bench.run.BenchConfig` (every option but
the one point's ``--batch-size``, ``--input-len`` and ``--output-len``, which it refuses) and the
grid of ``--batch-sizes``, ``--input-lens`` and ``--output-lens``; backends and kernel paths are
swept one after the other into the same CSV (:func:`ascend_nb.bench.run.run_sweep`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ascend_nb.bench.comparison import compare
from ascend_nb.bench.latency_sweep import GRIDS, grid_lengths
from ascend_nb.bench.run import BenchConfig, run_sweep
from ascend_nb.cli import options
from ascend_nb.errors import AscendNbError

SUMMARY_COLUMNS = ("backend", "kernels", "batch_size", "input_len", "output_len", "ttft_ms", "tpot_ms",
                   "decode_tokens_per_s", "pct_of_roofline")


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sweep and compare options to the ``bench`` parser."""
    group = parser.add_argument_group("sweep and compare")
    group.add_argument("--sweep", action="store_true",
                       help="run the grid batch sizes x input lengths x output lengths (the guides' performance test)")
    group.add_argument("--batch-sizes", type=options.numbers(int), default=None, metavar="N,N",
                       help="sweep batch sizes (default: 1)")
    grids = "; ".join(f"{name}: inputs {','.join(map(str, ins))} x outputs {','.join(map(str, outs))}"
                      for name, (ins, outs) in GRIDS.items())
    group.add_argument("--grid", choices=tuple(GRIDS), default=None,
                       help=f"the sweep's lengths, as sweep() and notebook 04 name them ({grids}; default: quick)")
    group.add_argument("--input-lens", type=options.numbers(int), default=None, metavar="N,N",
                       help="sweep input lengths (default: the --grid's)")
    group.add_argument("--output-lens", type=options.numbers(int), default=None, metavar="N,N",
                       help="sweep output lengths (default: the --grid's)")
    group.add_argument("--csv", metavar="PATH",
                       help="write each sweep row (or load level) to PATH as it finishes "
                            "(ours + the guides' or MindIE's columns)")
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


def _text(table: pd.DataFrame, digits: int = 2) -> str:
    return table.to_string(index=False, float_format=lambda v: f"{v:.{digits}f}")


def sweep_command(args: argparse.Namespace, config: BenchConfig) -> int:
    """Sweep every engine of ``config`` over the grid; print the rows (and each engine against the first)."""
    point = [flag for flag, value in (("--batch-size", args.batch_size), ("--input-len", args.input_len),
                                      ("--output-len", args.output_len)) if value is not None]
    if point:
        raise AscendNbError(f"--sweep measures the grid of --batch-sizes, --input-lens and --output-lens: drop "
                            f"{', '.join(point)}")
    csv_path = results_csv_path(args)
    input_lens, output_lens = grid_lengths(args.grid or "quick")
    rows = run_sweep(config, args.batch_sizes or (1,), args.input_lens or input_lens, args.output_lens or output_lens,
                     csv_path=csv_path, resume=True)
    everything = [row for label_rows in rows.values() for row in label_rows]
    if args.json:
        print(json.dumps(everything))
        return 0
    baseline, *others = rows
    print(_text(pd.DataFrame(everything).reindex(columns=SUMMARY_COLUMNS)))
    for label in others:
        print(f"\n{label} vs {baseline}:")
        print(_text(compare(rows[label], rows[baseline], labels=(label, baseline)), digits=3))
    if csv_path is not None:
        print(f"\nrows in {csv_path}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Print ``compare(A, B)`` for two CSV files."""
    first, second = args.compare
    table = compare(first, second, labels=(Path(first).stem, Path(second).stem))
    print(table.to_json(orient="records") if args.json else _text(table, digits=3))
    return 0


def run_sweep_or_compare(args: argparse.Namespace, config: BenchConfig) -> int | None:
    """Handle ``--sweep`` (of ``config``) or ``--compare``; ``None`` when neither was asked (a single-point bench)."""
    if args.compare and args.sweep:
        raise AscendNbError("--sweep and --compare are separate modes: run one at a time")
    if args.compare:
        return run_compare(args)
    if args.sweep:
        return sweep_command(args, config)
    if args.csv or args.resume:
        raise AscendNbError("--csv and --resume go with --sweep (or --backend openai)")
    if args.batch_sizes or args.input_lens or args.output_lens or args.grid:
        raise AscendNbError("--grid, --batch-sizes, --input-lens and --output-lens make the grid of --sweep: add --sweep, or "
                            "give one point with --batch-size, --input-len and --output-len")
    return None
