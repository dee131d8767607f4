"""``ascend-nb bench --backend openai``: the load benchmark of a served model (``vllm bench serve``'s rows).

``--concurrency 1,2,4`` and/or ``--request-rate 1,4,inf`` make the load levels; the bench options
``--model`` (the served model's name), ``--input-len``, ``--output-len``, ``--seed``, ``--csv``,
``--resume`` and ``--json`` apply as well.
"""

from __future__ import annotations

import argparse
import json
import math

import pandas as pd

from ascend_nb.bench.mindie_csv import write_mindie_csv
from ascend_nb.bench.serve_bench import serve_load
from ascend_nb.bench.serve_metrics import knee, level_label, parse_slo
from ascend_nb.cli import options
from ascend_nb.cli.bench_sweep import results_csv_path
from ascend_nb.errors import AscendNbError

SUMMARY_COLUMNS = ("level", "completed", "failed", "request_throughput", "output_throughput", "request_goodput",
                   "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "p99_itl_ms", "p99_e2el_ms")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the served-model load options to the ``bench`` parser."""
    group = parser.add_argument_group("served model under load (--backend openai)")
    group.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL)")
    group.add_argument("--api-key", default=None, help="API key (default: $OPENAI_API_KEY)")
    group.add_argument("--concurrency", type=options.numbers(int), default=None, metavar="N,N",
                       help="load levels: requests in flight at most (default: 1 unless --request-rate is given)")
    group.add_argument("--request-rate", type=options.numbers(float), default=None, metavar="R,R",
                       help="load levels: Poisson arrivals per second, seeded (inf: all at once)")
    group.add_argument("--num-prompts", type=int, default=16, help="requests per load level (default: %(default)s)")
    group.add_argument("--dataset", default=None, metavar="PATH",
                       help="ShareGPT JSON file or C-Eval-format directory (default: random ids of --input-len tokens)")
    group.add_argument("--tokenizer", default=None, metavar="DIR",
                       help="tokenizer for random prompts (default: --model, when it is local)")
    group.add_argument("--slo", default=None, metavar="ttft_ms=500,tpot_ms=50",
                       help="service-level objectives for goodput and the knee (ttft_ms, tpot_ms, e2el_ms)")
    group.add_argument("--ignore-eos", action="store_true", help="ask for exactly --output-len tokens (vLLM / MindIE)")
    group.add_argument("--request-timeout", type=float, default=300.0,
                       help="seconds a whole request may take (past it, it counts as failed)")
    group.add_argument("--level-timeout", type=float, default=1800.0, help="seconds a load level may take")
    group.add_argument("--mindie-csv", default=None, metavar="PATH",
                       help="also write the levels as a MindIE ModelTest performance CSV")


def format_levels(rows: list[dict], slo: dict) -> str:
    """The summary table and, with SLOs, the highest load that meets them."""
    table = pd.DataFrame(rows)
    table.insert(0, "level", [level_label(row) for row in rows])
    lines = [table.reindex(columns=SUMMARY_COLUMNS).to_string(index=False, float_format=lambda v: f"{v:.2f}")]
    if slo:
        best = knee(rows, slo)
        lines.append(f"highest load meeting {rows[0]['slo']} at p99: "
                     + (level_label(best) if best else "none (every level misses an SLO or lost requests)"))
    return "\n".join(lines)


def run_serve_load(args: argparse.Namespace) -> int | None:
    """Handle ``--backend openai``; None when the bench targets local backends."""
    if "openai" not in args.backend:
        if args.concurrency or args.request_rate:
            raise AscendNbError("--concurrency and --request-rate load a served model: add --backend openai --base-url URL")
        return None
    if args.backend != ("openai",):
        raise AscendNbError("the openai backend is benchmarked under load on its own: run --backend openai separately")
    if getattr(args, "sweep", False) or getattr(args, "compare", None):
        raise AscendNbError("--sweep and --compare measure local backends: drop them for --backend openai")
    slo = parse_slo(args.slo)
    lens = {name: getattr(args, name) for name in ("input_len", "output_len") if getattr(args, name) is not None}
    rows = []
    for row in serve_load(args.base_url, args.model, concurrency=args.concurrency or (None if args.request_rate else (1,)),
                          request_rates=args.request_rate, num_prompts=args.num_prompts, **lens,
                          dataset=args.dataset, tokenizer=args.tokenizer, slo=slo,
                          seed=args.seed, ignore_eos=args.ignore_eos, csv_path=results_csv_path(args), resume=True,
                          api_key=args.api_key, request_timeout_s=args.request_timeout,
                          level_timeout_s=args.level_timeout, progress=not args.json):
        rows.append(row)
    if args.mindie_csv:
        write_mindie_csv(rows, args.mindie_csv)
    if args.json:  # strict JSON: an unbounded request rate is "inf", as in vLLM's result files
        print(json.dumps([{k: "inf" if v == math.inf else v for k, v in row.items()} for row in rows]))
    else:
        print(format_levels(rows, slo))
    return 0
