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


CHUNK_ELEMENTS = 1 << 22  # rows are quantized a block of about 16 MB of float32 at a time


def quantize_int8(weight: torch.Tensor) -> Int8Weight:
    """Round each row to int8 with scale ``max|row| / 127`` (computed in float32; all-zero rows get scale 1).

    Rows go a block at a time, so the float32 working copies stay small whatever the tensor's size
    (a whole 7B embedding in float32 would be 2 GB on top of the model)."""
    rows = max(1, CHUNK_ELEMENTS // max(1, weight.shape[1]))
    qweight = torch.empty(weight.shape, dtype=torch.int8, device=weight.device)
    scales = torch.empty(weight.shape[0], dtype=torch.float32, device=weight.device)
    for start in range(0, weight.shape[0], rows):
        w = weight[start:start + rows].to(torch.float32)
        block = w.abs().amax(dim=1) / 127.0
        block = torch.where(block > 0, block, torch.ones_like(block))
        qweight[start:start + rows] = torch.round(w / block[:, None]).clamp_(-127, 127).to(torch.int8)
        scales[start:start + rows] = block
    return Int8Weight(qweight, scales.to(weight.dtype))
