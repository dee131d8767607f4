"""CLI: ``ascend-nb doctor [--ascend-root DIR] [--model M] [--dtype D] [--json]`` and
``ascend-nb doctor --explain FILE|- [--json]`` (match an error log against the known signatures)."""

from __future__ import annotations

import argparse
import json

from ascend_nb.cli import options
from ascend_nb import dtypes


def register(subparsers) -> None:
    parser = subparsers.add_parser("doctor", help="check drivers, CANN, torch/torch_npu, ATB, devices and packages; "
                                                  "exit 1 when a check fails")
    parser.add_argument("--ascend-root", default=None,
                        help="Ascend install root (default: from $ASCEND_HOME_PATH, else /usr/local/Ascend)")
    parser.add_argument("--model", default=None,
                        help="registry name or model directory to budget RAM/disk for (default: a 7B model in fp16)")
    options.add(parser, "--dtype", help=f"dtype you will run in: {dtypes.HELP}")
    parser.add_argument("--explain", metavar="FILE", default=None,
                        help="explain an error log (FILE, or - for stdin) from the known signatures instead of checking; "
                             "exit 1 when nothing matches")
    parser.add_argument("--json", action="store_true", help='print {"checks": [...], "facts": {...}} '
                                                             '(with --explain: the matching rows)')
    parser.set_defaults(func=run_doctor)


def _read_log(name: str) -> str:
    import sys
    from pathlib import Path

    from ascend_nb.errors import AscendNbError

    if name == "-":
        return sys.stdin.read()
    path = Path(name).expanduser()
    if not path.is_file():
        raise AscendNbError(f"{path} is not a file: give the log file to explain, or - to read it from stdin")
    return path.read_text(encoding="utf-8", errors="replace")


def run_explain(args: argparse.Namespace) -> int:
    from ascend_nb.doctor import known_errors

    matches = known_errors.explain(_read_log(args.explain))
    print(json.dumps(matches.to_dict("records"), indent=2, ensure_ascii=False) if args.json
          else known_errors.to_text(matches))
    return 1 if matches.empty else 0


def run_doctor(args: argparse.Namespace) -> int:
    if args.explain is not None:
        return run_explain(args)
    from ascend_nb import doctor

    model_bytes = doctor.weights_bytes(args.model) if args.model else None
    report = doctor.run(args.ascend_root, model_bytes=model_bytes, dtype=args.dtype)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        facts = report.facts
        print(f"ascend-nb doctor: Ascend root {facts['ascend_root']}, torch {facts['torch_version']}\n")
        print(report.to_text())
        _print_known_errors(report)
    return report.exit_code


def _print_known_errors(report) -> None:
    """The error signatures behind the failed rows, so one table holds every fix."""
    from ascend_nb.doctor import known_errors

    known = known_errors.explain_checks(report.checks)
    if not known.empty:
        print("\nKnown errors these rows cause (details: ascend-nb doctor --explain LOG):")
        for row in known.itertuples(index=False):
            print(f"  [{row.check or 'log'}] {row.signature}  ({row.source})")
