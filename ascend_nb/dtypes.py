"""Dtype names, in one place: the names users may type, parsing, printing, bytes per element, one error."""

from __future__ import annotations

import torch

from ascend_nb.errors import AscendNbError

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
CHOICES = ("auto", "float32", "float16", "bfloat16")  # what the CLI and the UI offer ("auto": the device decides)
HELP = "auto, float32, float16 or bfloat16"


def unknown_dtype(dtype: object) -> AscendNbError:
    """The one error for a dtype name we do not know."""
    return AscendNbError(f"unknown dtype {dtype!r}: use {HELP}")


def parse_dtype(dtype: str | torch.dtype, float64: bool = False) -> torch.dtype:
    """``"bf16"``, ``"torch.float16"``, ``torch.float32`` -> the torch dtype (``float64`` also takes "float64").

    ``"auto"`` is not a dtype here: the caller decides what it means (see :func:`ascend_nb.device.resolve_dtype`).
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if float64 and name == "float64":
        return torch.float64
    if name not in DTYPES:
        raise unknown_dtype(dtype)
    return DTYPES[name]


def dtype_name(dtype: str | torch.dtype | None) -> str:
    """The canonical name: ``torch.bfloat16`` or ``"bf16"`` -> ``"bfloat16"`` (an engine without one, None: "None")."""
    if dtype is None:
        return "None"
    return str(parse_dtype(dtype, float64=True)).removeprefix("torch.")


def bytes_per_element(dtype: str | torch.dtype) -> int:
    """Bytes per element of a floating dtype given as a torch dtype or a name."""
    return torch.finfo(parse_dtype(dtype)).bits // 8
