"""The quantization vocabulary: every format's name, what it stores and how it computes.

One place every layer reads: the engine's choices, the planner's bytes, the CLI's ``--quantize`` and
the chat widget's settings. (The tensors and their kernels are in
:mod:`ascend_nb.engine.accelerated.quantize` and :mod:`ascend_nb.engine.accelerated.kernels`.)
"""

from __future__ import annotations

from dataclasses import dataclass

from ascend_nb.errors import AscendNbError


@dataclass(frozen=True)
class QuantFormat:
    """``bits`` per weight plus ``params_per_group`` values of ``param_bytes`` each (scale, or scale and
    minimum) per ``group_size`` weights of a row (``None``: one group per output row); ``int8_activations``:
    activations are quantized to int8 per token at run time and the dot products are integer; ``head``: the
    format of the LM head (the one linear every token's logits go through); ``down``: the format of the MLP
    down projections; ``rotated``: the residual stream is rotated before quantizing
    (:mod:`ascend_nb.engine.accelerated.rotate`)."""

    name: str
    bits: int
    group_size: int | None
    params_per_group: int
    param_bytes: int
    int8_activations: bool
    summary: str
    head: str
    down: str
    rotated: bool = False


INT4_GROUP_SIZE = 32

QUANT_FORMATS: dict[str, QuantFormat] = {fmt.name: fmt for fmt in (
    QuantFormat("int8", 8, None, 1, 4, False, "weight-only int8, one scale per output channel", "int8", "int8"),
    # the down projections' inputs (SiLU(gate) * up) keep outliers a rotation of the residual stream cannot reach:
    # per-token int8 there cost SmolLM2-135M +0.9 % perplexity on data/heldout, the rest of the model -0.0 %
    # (msModelSlim likewise rolls sensitive layers back out of W8A8)
    QuantFormat("w8a8", 8, None, 1, 4, True,
                "int8 weights (one scale per output channel) x int8 activations (one scale per token), integer dots, "
                "on a rotated residual stream; the down projections weight-only int8", "w8a8", "int8", rotated=True),
    # the head stays int8, as llama.cpp's 4-bit files keep their output tensor finer: a 4-bit head alone cost
    # SmolLM2-135M +4.0 % perplexity on data/heldout, the whole model with an int8 head +0.1 %
    QuantFormat("int4", 4, INT4_GROUP_SIZE, 2, 2, False,
                f"4-bit weights in groups of {INT4_GROUP_SIZE}, a float16 scale and minimum per group (5 bits a weight); "
                "the LM head int8", "int8", "int4"),
)}
QUANTIZE_CHOICES = tuple(QUANT_FORMATS)


def check_quantize(quantize: str | None) -> str | None:
    """``None``/``"none"`` -> None; a format of :data:`QUANT_FORMATS` -> itself; anything else: one clear error."""
    if quantize in (None, "none"):
        return None
    if quantize not in QUANT_FORMATS:
        raise AscendNbError(f"unknown quantize {quantize!r}: use one of none, {', '.join(QUANTIZE_CHOICES)}")
    return quantize


def head_quantize(quantize: str | None) -> str | None:
    """The format the LM head of a ``quantize`` model is stored in."""
    fmt = quant_format(quantize)
    return None if fmt is None else fmt.head


def down_quantize(quantize: str | None) -> str | None:
    """The format the MLP down projections of a ``quantize`` model are stored in."""
    fmt = quant_format(quantize)
    return None if fmt is None else fmt.down


def quant_format(quantize: str | None) -> QuantFormat | None:
    """The format of a ``quantize`` value (None for no quantization)."""
    name = check_quantize(quantize)
    return None if name is None else QUANT_FORMATS[name]
