"""CLI: ``ascend-nb bench`` (backends head to head on one batch / input / output point)."""

from __future__ import annotations

import argparse
import json

from ascend_nb.cli import options
from ascend_nb.bench.run import BenchConfig, run_bench_rank, speedups
from ascend_nb.cli.bench_serve import add_serve_arguments, run_serve_load
from ascend_nb.cli.bench_sweep import add_sweep_arguments, run_sweep_or_compare


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of one benchmark point (shared by every bench mode)."""
    options.add(parser, "--model")
    options.add(parser, "--backend", default="transformers,accelerated", type=options.names, choices=None,
                help="comma-separated backends, run in interleaved rounds (default: %(default)s)")
    for flag in ("--device", "--dtype", "--quantize", "--tp"):
        options.add(parser, flag)
    parser.add_argument("--graphs", action="store_true",
                        help="accelerated backend: decode through captured graphs (CUDA graphs; torch.compile on CPU)")
    options.add(parser, "--kernels", default="", type=options.names,
                help="accelerated backend: comma-separated kernel paths to run side by side, e.g. "
                             "cpu-avx512-gemv,cpu-onednn (default: this machine's fastest; see `ascend-nb doctor`)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"rows per batch (default: {BenchConfig.batch_size})")
    parser.add_argument("--input-len", type=int, default=None,
                        help=f"random prompt tokens per row, fixed seed (default: {BenchConfig.input_len})")
    parser.add_argument("--output-len", type=int, default=None,
                        help=f"generated tokens per row, EOS disabled (default: {BenchConfig.output_len})")
    parser.add_argument("--max-seq-len", type=int, default=None,
                        help="static token budget per sequence (default: input + output; with --sweep the longest "
                             "input + output, capped at the model's limit, and points beyond it are skipped)")
    parser.add_argument("--repeat", type=int, default=BenchConfig.repeat, help="timed rounds; rows hold the medians")
    parser.add_argument("--warmup", type=int, default=BenchConfig.warmup,
                        help="untimed short runs per backend before the first round")
    parser.add_argument("--seed", type=int, default=BenchConfig.seed, help="seed of the random input ids")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    parser.add_argument("--speculative", default=None, metavar="METHOD",
                        help="plain against speculative decoding on the accelerated backend, batch 1, greedy: "
                             "prompt-lookup or draft:MODEL[@QUANT] (e.g. draft:self@int8), over --dataset grounded "
                             "(built in: summarise / quote / edit / answer from a passage; the default) or open")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The one :class:`BenchConfig` of a bench command; a point option left out keeps BenchConfig's default."""
    point = {name: getattr(args, name) for name in ("batch_size", "input_len", "output_len")
             if getattr(args, name) is not None}
    return BenchConfig(model=args.model, backends=args.backend, device=args.device, dtype=args.dtype,
                       quantize=args.quantize, graphs=args.graphs, kernels=args.kernels, tp=args.tp,
                       max_seq_len=args.max_seq_len, repeat=args.repeat, warmup=args.warmup, seed=args.seed,
                       **_speculative_options(args), **point)


def _speculative_options(args: argparse.Namespace) -> dict:
    """``--speculative`` and, with it, ``--dataset`` as a built-in prompt set name (default grounded)."""
    speculative = getattr(args, "speculative", None)
    if not speculative:
        return {}
    return {"speculative": speculative, "dataset": getattr(args, "dataset", None) or "grounded"}


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="latency benchmark: TTFT, TPOT, decode tokens/s per backend")
    add_bench_arguments(bench)
    add_sweep_arguments(bench)
    add_serve_arguments(bench)
    bench.set_defaults(func=run_bench_command)


def format_rows(rows: list[dict]) -> str:
    """A fixed-width table of the rows, then each backend's speed-up over transformers."""
    header = ("backend", "kernels", "graphs", "dtype", "quantize", "batch", "in", "out", "TTFT ms", "TPOT ms",
              "decode tok/s", "E2E ms", "peak MB")
    lines = [f"{rows[0]['model']} on {rows[0]['device']}",
             "  ".join(f"{h:>12}" for h in header)]
    for r in rows:
        peak = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        cells = (r["backend"], r["kernels"], r["graphs"], r["dtype"], r["quantize"], r["batch_size"], r["input_len"],
                 r["output_len"],
                 f"{r['ttft_ms']:.1f}", f"{r['tpot_ms']:.2f}", f"{r['decode_tokens_per_s']:.1f}",
                 f"{r['e2e_ms']:.0f}", peak)
        lines.append("  ".join(f"{c:>12}" for c in cells))
    for label, ratio in speedups(rows).items():
        lines.append(f"{label} vs transformers: decode {ratio['decode']:.2f}x, TTFT {ratio['ttft']:.2f}x")
    return "\n".join(lines)


def format_speculative_rows(rows: list[dict]) -> str:
    """Plain and speculative rows per prompt, then the medians over prompts."""
    from ascend_nb.bench.run import speculative_summary

    header = ("prompt", "mode", "in", "out", "TTFT ms", "TPOT ms", "decode tok/s", "accept", "tok/step", "draft ms",
              "verify ms", "same")
    first = rows[0]
    spec = next(r["speculative"] for r in rows if r["speculative"])
    lines = [f"{first['model']} on {first['device']} ({first['kernels']}, {first['dtype']}"
             f"{', ' + first['quantize'] if first['quantize'] else ''}): plain vs {spec}, dataset {first['dataset']}",
             "  ".join(f"{h:>12}" for h in header)]

    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    for r in rows:
        cells = (r["prompt_id"][:12], r["label"], r["input_len"], r["output_len"], f"{r['ttft_ms']:.1f}",
                 f"{r['tpot_ms']:.2f}", f"{r['decode_tokens_per_s']:.1f}", cell(r["acceptance_rate"], ".2f"),
                 cell(r["tokens_per_step"], ".2f"), cell(r["draft_ms"], ".1f"), cell(r["verify_ms"], ".1f"),
                 "-" if r["same_tokens"] is None else ("yes" if r["same_tokens"] else "NO"))
        lines.append("  ".join(f"{c:>12}" for c in cells))
    summary = speculative_summary(rows)
    lines.append(f"median over {summary['prompts']} prompts: decode {summary['decode_speedup']:.2f}x plain, acceptance "
                 f"{summary['acceptance_rate']:.2f}, {summary['tokens_per_step']:.2f} tokens/step, "
                 f"greedy tokens {'identical' if summary['same_tokens'] else 'DIFFERENT'}")
    return "\n".join(lines)


def run_bench_command(args: argparse.Namespace) -> int:
    handled = run_serve_load(args)
    if handled is not None:
        return handled
    config = config_from_args(args)
    handled = run_sweep_or_compare(args, config)
    if handled is not None:
        return handled
    if config.speculative:
        from ascend_nb.bench.run import run_speculative_bench

        rows = run_speculative_bench(config)
        print(json.dumps(rows) if args.json else format_speculative_rows(rows))
        return 0
    rows = run_bench_rank(config)
    if rows is None:
        return 0  # tensor parallel: rank 0 prints
    if args.json:
        print(json.dumps(rows))
    else:
        print(format_rows(rows))
    return 0
