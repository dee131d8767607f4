"""The ``ascend-nb`` command line (also ``python -m ascend_nb``).

Each command group has its module here (``models``, ``convert``, ``doctor``, ``precision``, ``bench``,
``plan``; the options several share are declared once in ``options``), with a ``register(subparsers)``
function; the parser sets ``func`` to the handler, which returns an exit code. User errors
(:class:`AscendNbError`) print one line and exit 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ascend_nb.errors import AscendNbError

COMMAND_MODULES = (
    "ascend_nb.cli.models",
    "ascend_nb.cli.convert",
    "ascend_nb.cli.doctor",
    "ascend_nb.cli.precision",
    "ascend_nb.cli.bench",
    "ascend_nb.cli.plan",
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
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so a reader that went away is caught below rather than at exit
        return code
    except AscendNbError as exc:
        print(f"ascend-nb {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ascend-nb {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`ascend-nb plan ... | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 141


if __name__ == "__main__":
    sys.exit(main())
