"""CLI: ``ascend-nb doctor [--ascend-root DIR] [--model M] [--dtype D] [--json]`` and
``ascend-nb doctor --explain FILE|- [--json]`` (match an error log against the known signatures).

``--explain`` reads at most the last :data:`TAIL_BYTES` of a log (seeking in a file, streaming a pipe),
so a log of any size costs the same; a note on stderr says so when the log was longer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import deque
from typing import BinaryIO

from ascend_nb.cli import options
from ascend_nb import dtypes

TAIL_BYTES = 4 << 20  # error lines are at the end of a log: --explain reads at most its last 4 MiB
CHUNK_BYTES = 1 << 20  # what one read of a pipe takes


def register(subparsers) -> None:
    parser = subparsers.add_parser("doctor", help="check drivers, CANN, torch/torch_npu, ATB, devices and packages; "
                                                  "exit 1 when a check fails")
    parser.add_argument("--ascend-root", default=None,
                        help="Ascend install root (default: from $ASCEND_HOME_PATH, else /usr/local/Ascend)")
    parser.add_argument("--model", default=None,
                        help="registry name or model directory to budget RAM/disk for (default: a 7B model in fp16)")
    options.add(parser, "--dtype", help=f"dtype you will run in: {dtypes.HELP}")
    parser.add_argument("--explain", metavar="FILE", default=None,
                        help="explain an error log (FILE, or - for stdin) from the known signatures instead of checking "
                             f"(its last {_mib(TAIL_BYTES)} only, where the errors are); exit 1 when nothing matches")
    parser.add_argument("--json", action="store_true", help='print {"checks": [...], "facts": {...}} '
                                                             '(with --explain: the matching rows)')
    parser.set_defaults(func=run_doctor)


def read_tail(stream: BinaryIO, limit: int = TAIL_BYTES) -> tuple[bytes, int]:
    """The last ``limit`` bytes of ``stream`` and its size in bytes: seeking in a file, keeping only
    the last chunks of a pipe while it streams by."""
    if stream.seekable():
        size = stream.seek(0, os.SEEK_END)
        stream.seek(max(0, size - limit))
        return stream.read(limit), size
    kept: deque[bytes] = deque()
    held = size = 0
    while chunk := stream.read(CHUNK_BYTES):
        kept.append(chunk)
        held, size = held + len(chunk), size + len(chunk)
        while held - len(kept[0]) >= limit:
            held -= len(kept.popleft())
    return b"".join(kept)[-limit:], size


def tail_text(tail: bytes, size: int) -> str:
    """``tail`` as text (bytes that are not UTF-8 replaced); a tail cut from a longer log starts at its
    first whole line, so no line or character is cut in two."""
    if len(tail) < size:
        tail = tail[tail.find(b"\n") + 1:]
    return tail.decode("utf-8", errors="replace")


def _mib(size: int) -> str:
    return f"{size / 2**20:.3g} MiB"


def _read_log(name: str) -> str:
    """The text of the log ``name`` (- for stdin), at most its last :data:`TAIL_BYTES`, with a note when cut."""
    from pathlib import Path

    from ascend_nb.errors import AscendNbError

    if name == "-":
        tail, size = read_tail(sys.stdin.buffer)
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise AscendNbError(f"{path} is not a file: give the log file to explain, or - to read it from stdin")
        with path.open("rb") as log:
            tail, size = read_tail(log)
    if len(tail) < size:
        print(f"ascend-nb doctor: note: read the last {_mib(len(tail))} of {_mib(size)} "
              "(error lines are at the end of a log)", file=sys.stderr)
    return tail_text(tail, size)


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
