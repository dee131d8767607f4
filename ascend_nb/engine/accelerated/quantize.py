"""Weight-only int8 quantization with one symmetric scale per output channel (row of ``[out, in]``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ascend_nb.errors import AscendNbError

QUANTIZE_CHOICES = ("int8",)


@dataclass(frozen=True)
class Int8Weight:
    """``weight ≈ qweight * scales[:, None]``; ``scales`` keep the compute dtype of the model."""

    qweight: torch.Tensor  # int8 [out, in]
    scales: torch.Tensor  # [out]

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or self.scales.dtype
        return self.qweight.to(dtype) * self.scales.to(dtype)[:, None]


def check_quantize(quantize: str | None) -> str | None:
    """``None``/``"none"`` -> None; a supported scheme -> itself; anything else is a clear error."""
    if quantize in (None, "none"):
        return None
    if quantize not in QUANTIZE_CHOICES:
        raise AscendNbError(f"unknown quantize {quantize!r}: use one of none, {', '.join(QUANTIZE_CHOICES)}")
    return quantize


def quantize_int8(weight: torch.Tensor) -> Int8Weight:
    """Round each row to int8 with scale ``max|row| / 127`` (computed in float32; all-zero rows get scale 1)."""
    w = weight.to(torch.float32)
    scales = w.abs().amax(dim=1) / 127.0
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    qweight = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return Int8Weight(qweight.contiguous(), scales.to(weight.dtype))
