"""The options the model-loading, bench, precision, convert and doctor commands share, declared once.

``add(parser, "--dtype")`` adds the option as declared in :data:`OPTIONS`; keyword arguments change
what one command needs different (its help, a default, ``required``), never the option's meaning.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ascend_nb import dtypes
from ascend_nb.errors import AscendNbError
from ascend_nb.quant_formats import QUANT_FORMATS, QUANTIZE_CHOICES, check_quantize
from ascend_nb.engine.loading import BACKENDS, DEFAULT_MODEL


def names(text: str) -> tuple[str, ...]:
    """A comma-separated list option (``--backend transformers,accelerated``) -> its names."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def numbers(kind: type) -> Callable[[str], tuple]:
    """An argparse ``type`` for a comma-separated list of ``kind`` (int or float) values, at least one."""
    what = "integers" if kind is int else "numbers"

    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(part) for part in names(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("give at least one value")
        return values
    return parse


QUANTIZE_FORMATS_HELP = "; ".join(f"{fmt.name}: {fmt.summary}" for fmt in QUANT_FORMATS.values())
QUANTIZE_HELP = f"quantize the accelerated backend's linear layers (default: none): {QUANTIZE_FORMATS_HELP}"


def quantize_option(value: str) -> str | None:
    """``--quantize``'s value as :func:`check_quantize` reads it (``none`` -> None), refused in argparse's one line."""
    try:
        return check_quantize(value)
    except AscendNbError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


OPTIONS: dict[str, dict] = {
    "--model": dict(default=DEFAULT_MODEL, help="registry name or local model directory (default: %(default)s)"),
    "--backend": dict(default="transformers", choices=sorted(BACKENDS), help="engine backend"),
    "--device": dict(default="auto", help="auto (npu > cuda > cpu), npu, cuda, cpu, or with :INDEX"),
    "--dtype": dict(default="auto", help=dtypes.HELP),
    "--quantize": dict(type=quantize_option, default=None, metavar="|".join(("none", *QUANTIZE_CHOICES)),
                       help=QUANTIZE_HELP),
    "--kernels": dict(default=None, help="kernel path of --backend accelerated (default: this machine's fastest; "
                                         "e.g. cpu-onednn)"),
    "--tp": dict(type=int, default=1, help="tensor-parallel ranks (--backend accelerated, under torchrun --nproc-per-node N)"),
}


def add(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, **changes) -> argparse.Action:
    """Add the shared option ``flag`` to ``parser``, with this command's ``changes`` (help, default, required...)."""
    settings = {**OPTIONS[flag], **changes}
    if settings.get("required"):
        settings.pop("default", None)
    return parser.add_argument(flag, **settings)
