"""The ``ascend-nb`` command line (also ``python -m ascend_nb``).

Each feature package contributes its sub-commands through a ``register(subparsers)`` function in
the module listed in ``COMMAND_MODULES``; the parser sets ``func`` to the handler, which returns
an exit code. User errors (:class:`AscendNbError`) print one line and exit 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ascend_nb.errors import AscendNbError

COMMAND_MODULES = (
    "ascend_nb.models.commands",
    "ascend_nb.convert.commands",
    "ascend_nb.doctor.commands",
    "ascend_nb.precision.commands",
    "ascend_nb.bench.commands",
    "ascend_nb.bench.plan_commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ascend-nb", description="Run Llama-family LLMs on Ascend NPU, CUDA or CPU.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for arg in argv:  # bytes that are not UTF-8 reach sys.argv as lone surrogates (surrogateescape)
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            print(f"ascend-nb: error: argument {arg!r} is not valid UTF-8: retype it in UTF-8", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AscendNbError as exc:
        print(f"ascend-nb {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ascend-nb {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
