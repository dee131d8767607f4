"""CLI: ``eval`` (C-Eval-style accuracy table; ``--perplexity`` on a text; ``--formats``: what each quantization format
costs) and ``compare`` (layer-by-layer agreement of two engines)."""

from __future__ import annotations

import argparse
import json
import sys

from ascend_nb.cli import options
from ascend_nb import dtypes
from ascend_nb.cli.models import add_model_arguments, load_from_args
from ascend_nb.engine.loading import check_quantize_backend
from ascend_nb.errors import AscendNbError
from ascend_nb.precision.ceval import PROTOCOLS, SAMPLE_DATA_DIR, SPLITS
from ascend_nb.precision.perplexity import DEFAULT_WINDOW
from ascend_nb.quant_formats import QUANTIZE_CHOICES


def register(subparsers) -> None:
    evaluate = subparsers.add_parser(
        "eval", help="multiple-choice accuracy on a C-Eval/MMLU directory: STEM, Social Science, Humanities, Other, Avg acc")
    evaluate.add_argument("--data", default=str(SAMPLE_DATA_DIR),
                          help="C-Eval or MMLU folder with dev/ val/ test/ (default: the bundled sample)")
    evaluate.add_argument("--split", default="val", choices=SPLITS, help="split to score (default: %(default)s)")
    evaluate.add_argument("--shots", type=int, default=0, help="dev examples per prompt, 0-5 (default: %(default)s)")
    evaluate.add_argument("--protocol", default="logits", choices=PROTOCOLS,
                          help="logits: official C-Eval (argmax over A/B/C/D); generate: the Ascend harness "
                               "(English prompt, first generated letter)")
    evaluate.add_argument("--subjects", default=None, help="comma-separated subjects (default: all in the split)")
    evaluate.add_argument("--limit", type=int, default=None, help="first N questions of each subject")
    evaluate.add_argument("--output", default=None,
                          help="directory for predictions.csv (written as answers come; rerun to resume) and summary.json")
    evaluate.add_argument("--json", action="store_true", help="print the summary as JSON")
    held_out = evaluate.add_argument_group("perplexity and quantization formats (instead of the multiple-choice score)")
    held_out.add_argument("--perplexity", action="store_true",
                          help="perplexity of the model on a text (default: the bundled held-out text, data/heldout/)")
    held_out.add_argument("--formats", type=options.names, default=None, metavar="none,int8,...",
                          help="what each quantization format costs, side by side on the accelerated backend: perplexity, "
                               "C-Eval (logits protocol, --data/--split/--shots/--limit), per-layer Cosine against the "
                               f"first format (none), TTFT/TPOT; e.g. none,{','.join(QUANTIZE_CHOICES)} (accelerated backend, "
                               "whatever --backend says)")
    held_out.add_argument("--text", default=None, metavar="FILE",
                          help="UTF-8 text for the perplexity (default: the held-out text)")
    held_out.add_argument("--max-tokens", type=int, default=None, help="score the text's first N tokens only (a quick run)")
    held_out.add_argument("--window", type=int, default=None,
                          help=f"tokens per forward (default: max-seq-len, at most {DEFAULT_WINDOW})")
    held_out.add_argument("--stride", type=int, default=None, help="tokens each window moves on (default: half the window)")
    add_model_arguments(evaluate)
    evaluate.set_defaults(func=run_eval)

    compare = subparsers.add_parser(
        "compare", help="logits and per-layer hidden states of two engines with msprobe metrics and a verdict "
                        "(exit 1 when not reached)")
    options.add(compare, "--model")
    compare.add_argument("--a", default="transformers", help="reference backend (default: %(default)s)")
    compare.add_argument("--b", default="accelerated", help="candidate backend (default: %(default)s)")
    options.add(compare, "--device", help="device of both engines (auto, npu, cuda, cpu)")
    compare.add_argument("--device-a", default=None, help="device of the reference (default: --device)")
    compare.add_argument("--device-b", default=None, help="device of the candidate (default: --device)")
    options.add(compare, "--dtype", help=f"dtype of both engines ({dtypes.HELP})")
    compare.add_argument("--dtype-a", default=None, help="dtype of the reference (default: --dtype)")
    compare.add_argument("--dtype-b", default=None, help="dtype of the candidate (default: --dtype)")
    options.add(compare, "--quantize", help="quantize the candidate (--b accelerated; default: none) to see what a format "
                                            f"costs against the reference: {options.QUANTIZE_FORMATS_HELP}")
    compare.add_argument("--quantize-a", **{**options.OPTIONS["--quantize"],
                                            "help": "quantize the reference too (--a accelerated; default: none)"})
    compare.add_argument("--prompt", action="append", default=None,
                         help="prompt to run (repeatable; default: a few English, Chinese and code prompts)")
    compare.add_argument("--json", action="store_true", help="print the report as JSON")
    compare.set_defaults(func=run_compare)


def _progress(row: dict, done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\r[{done}/{total}] {row['subject']}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def run_perplexity(args: argparse.Namespace) -> int:
    from ascend_nb.precision.perplexity import HELDOUT_TEXT, perplexity, read_text

    text = read_text(args.text or HELDOUT_TEXT)  # a missing file fails before the model loads
    engine = load_from_args(args)
    result = perplexity(engine, text, window=args.window, stride=args.stride, max_tokens=args.max_tokens)
    if args.json:
        print(json.dumps({**vars(result), "text": str(args.text or HELDOUT_TEXT), "quantize": getattr(engine, "quantize", None)},
                         ensure_ascii=False))
    else:
        print(f"{args.text or HELDOUT_TEXT}: {result.describe()}")
    return 0


def run_formats(args: argparse.Namespace) -> int:
    from ascend_nb.bench.quantization import quantization_report
    from ascend_nb.precision.perplexity import read_text
    from ascend_nb.precision.tables import markdown_table

    if args.quantize or args.backend == "openai":
        raise AscendNbError("--formats loads each of its formats on the accelerated backend: drop --quantize and --backend")
    if args.subjects or args.protocol != "logits" or args.output:
        raise AscendNbError("--formats scores every subject of --data under the logits protocol, with nothing to resume: "
                            "drop --subjects, --protocol and --output")
    text = None if args.text is None else read_text(args.text)
    formats = [None if name == "none" else name for name in args.formats]
    report = quantization_report(args.model, formats=formats, device=args.device, dtype=args.dtype, text=text,
                                 max_tokens=args.max_tokens, window=args.window, stride=args.stride, ceval_data=args.data,
                                 ceval_split=args.split, ceval_limit=args.limit, ceval_shots=args.shots,
                                 max_seq_len=args.max_seq_len, kernels=args.kernels, on_progress=_note)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(markdown_table(report.table.set_index("format"), number_format=".4g"))
        print(report.summary())
    return 0


def _note(line: str) -> None:
    if sys.stderr.isatty():
        print(line, file=sys.stderr, flush=True)


def run_eval(args: argparse.Namespace) -> int:
    from ascend_nb.precision.accuracy import GENERATE_MAX_NEW_TOKENS, evaluate, load_questions
    from ascend_nb.precision.tables import markdown_table

    if args.perplexity and args.formats:
        raise AscendNbError("--perplexity scores one engine, --formats compares several: choose one")
    if args.perplexity:
        return run_perplexity(args)
    if args.formats:
        return run_formats(args)
    extra = [flag for flag, value in (("--text", args.text), ("--max-tokens", args.max_tokens), ("--window", args.window),
                                      ("--stride", args.stride)) if value is not None]
    if extra:
        raise AscendNbError(f"{', '.join(extra)} go with --perplexity or --formats")
    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()] if args.subjects else None
    load_questions(args.data, args.split, subjects, args.limit, args.shots)  # bad data fails before the model loads
    engine = load_from_args(args)
    result = evaluate(engine, args.data, split=args.split, shots=args.shots, protocol=args.protocol,
                      subjects=subjects, limit=args.limit, output_dir=args.output, on_result=_progress,
                      max_new_tokens=args.max_new_tokens or GENERATE_MAX_NEW_TOKENS)
    if args.json:
        print(json.dumps(result.summary(), ensure_ascii=False))
        return 0
    table = result.by_category()[["acc", "n"]].rename(columns={"acc": result.label})
    table.index.name = "precision"
    print(f"{args.data}: {result.describe()}")
    print(markdown_table(table))
    if args.output:
        print(f"predictions: {args.output}/predictions.csv")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from ascend_nb import load
    from ascend_nb.precision.engine_compare import DEFAULT_PROMPTS, compare_models
    from ascend_nb.precision.tables import markdown_table

    for backend, quantize, flags in ((args.a, args.quantize_a, ("--a", "--quantize-a")),
                                     (args.b, args.quantize, ("--b", "--quantize"))):  # both checked before either loads
        check_quantize_backend(backend, quantize, flags)
    reference = load(args.model, device=args.device_a or args.device, dtype=args.dtype_a or args.dtype, backend=args.a,
                     quantize=args.quantize_a)
    candidate = load(args.model, device=args.device_b or args.device, dtype=args.dtype_b or args.dtype, backend=args.b,
                     quantize=args.quantize)
    report = compare_models(reference, candidate, args.prompt or DEFAULT_PROMPTS)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        columns = ["tensor", "Cosine", "MaxAbsErr", "MaxRelativeErr", "MeanAbsErr", "One Thousandth Err Ratio",
                   "Five Thousandths Err Ratio", "KL divergence", "reached"]
        print(markdown_table(report.table[columns].set_index("tensor"), number_format=".6g"))
        print(report.summary())
    return 0 if report.reached else 1
