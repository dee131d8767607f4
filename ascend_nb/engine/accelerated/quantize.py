"""The quantized weights of :mod:`ascend_nb.quant_formats` and the functions that make them.

- ``int8`` and ``w8a8`` weights: :class:`Int8Weight`, one symmetric scale per output channel (row of ``[out, in]``);
  ``w8a8`` also quantizes each activation row (token) to int8 at run time (:func:`quantize_rows`);
- ``int4``: :class:`Int4Weight`, groups of 32 weights of a row with a float16 scale and minimum each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ascend_nb.errors import AscendNbError
from ascend_nb.quant_formats import INT4_GROUP_SIZE


@dataclass(frozen=True)
class Int8Weight:
    """``weight ≈ qweight * scales[:, None]``; ``scales`` keep the compute dtype of the model."""

    qweight: torch.Tensor  # int8 [out, in]
    scales: torch.Tensor  # [out]

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        dtype = dtype or self.scales.dtype
        return self.qweight.to(dtype) * self.scales.to(dtype)[:, None]


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


@dataclass(frozen=True)
class Int4Weight:
    """``weight[n, g*G + j] ≈ scales[n, g] * q + mins[n, g]`` with ``q`` in 0..15 (``G`` = ``group_size``).

    ``packed`` uint8 ``[out, in // 2]``: group ``g`` of a row is bytes ``g*G/2 .. (g+1)*G/2``, byte ``j`` holding
    ``q[j]`` in its low nibble and ``q[j + G/2]`` in its high nibble (so one SIMD load and two masks give a
    group's two halves in order, as in llama.cpp's Q4_1)."""

    packed: torch.Tensor  # uint8 [out, in // 2]
    scales: torch.Tensor  # float16 [out, in // group_size]
    mins: torch.Tensor  # float16 [out, in // group_size]
    group_size: int = INT4_GROUP_SIZE

    @property
    def shape(self) -> tuple[int, int]:
        return self.packed.shape[0], self.packed.shape[1] * 2

    def unpack(self) -> torch.Tensor:
        """The 4-bit values ``q`` as uint8 ``[out, in]``."""
        out, half = self.packed.shape[0], self.group_size // 2
        groups = self.packed.view(out, -1, half)
        return torch.cat((groups & 0xF, groups >> 4), dim=-1).view(out, -1)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``scales * q + mins`` computed in float32 (the rounding every int4 kernel follows), then cast."""
        out, n = self.shape
        q = self.unpack().view(out, -1, self.group_size).float()
        w = q * self.scales.float()[..., None] + self.mins.float()[..., None]
        return w.view(out, n).to(dtype)


def quantize_int4(weight: torch.Tensor, group_size: int = INT4_GROUP_SIZE) -> Int4Weight:
    """Asymmetric 4-bit groups: per group of ``group_size`` weights of a row, ``min`` and ``scale = (max - min) / 15``
    rounded to float16, then ``q = round((w - min) / scale)`` in 0..15 (float32; a constant group gets scale 1).

    Row blocks keep the float32 working copies small, as :func:`quantize_int8` does."""
    out, n = weight.shape
    if n % group_size:
        raise AscendNbError(f"int4 needs every linear layer's input size to be a multiple of {group_size}, "
                            f"and one is {n}: use quantize='int8'")
    packed = torch.empty(out, n // 2, dtype=torch.uint8, device=weight.device)
    scales = torch.empty(out, n // group_size, dtype=torch.float16, device=weight.device)
    mins = torch.empty_like(scales)
    rows, half = max(1, CHUNK_ELEMENTS // n), group_size // 2
    for start in range(0, out, rows):
        w = weight[start:start + rows].to(torch.float32)
        w = w.view(w.shape[0], -1, group_size)
        low = w.amin(dim=-1).to(torch.float16)
        scale = ((w.amax(dim=-1) - low.float()) / 15).to(torch.float16)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round((w - low.float()[..., None]) / scale.float()[..., None]).clamp_(0, 15).to(torch.uint8)
        packed[start:start + rows] = (q[..., :half] | (q[..., half:] << 4)).view(q.shape[0], -1)
        scales[start:start + rows], mins[start:start + rows] = scale, low
    return Int4Weight(packed, scales, mins, group_size)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-token int8 (``w8a8``'s activations): each row of ``x`` ``[..., K]`` rounded to int8 with scale
    ``max|row| / 127`` in float32 (an all-zero row gets scale 1); returns ``(q int8 [..., K], scales float32 [...])``."""
    x = x.to(torch.float32)
    scales = x.abs().amax(dim=-1) / 127.0
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    return torch.round(x / scales[..., None]).clamp_(-127, 127).to(torch.int8), scales
