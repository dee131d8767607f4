"""CLI: ``ascend-nb plan --model M --device D --dtype T [--quantize int8|w8a8|int4] [--max-seq-len N] [--batch-size B]
[--tp K] [--json]``."""

from __future__ import annotations

import argparse
import json

from ascend_nb.cli import options


def register(subparsers) -> None:
    parser = subparsers.add_parser("plan", help="will a model fit a device (here or in data/devices.csv), the longest "
                                                "context and largest batch that do, and the decode roofline")
    options.add(parser, "--model", required=True,
                help="registry name (aquila-7b, baichuan2-7b-chat, ...) or model directory")
    options.add(parser, "--device", required=True,
                help="cpu, cuda, npu (free memory measured here) or a data/devices.csv row (310P3, 910B4-64GB, "
                             "A100-80GB, ...)")
    options.add(parser, "--dtype", required=True)
    options.add(parser, "--quantize")
    parser.add_argument("--max-seq-len", type=int, default=None,
                        help="prompt + new tokens per sequence (default: the model's max_position_embeddings)")
    parser.add_argument("--batch-size", type=int, default=1)
    options.add(parser, "--tp", help="tensor-parallel ranks (numbers are per rank)")
    parser.add_argument("--json", action="store_true", help="print the plan as a JSON object")
    parser.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    """Exit 0 when the plan fits or is tight, 1 when it does not fit."""
    from ascend_nb.bench.planner import plan

    result = plan(args.model, args.device, args.dtype, args.quantize, args.max_seq_len, args.batch_size, args.tp)
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.to_text())
    return 1 if result.verdict == "does not fit" else 0
