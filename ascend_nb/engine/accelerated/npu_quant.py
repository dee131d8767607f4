"""Thin NPU counterparts of the quantized formats of :mod:`ascend_nb.quant_formats`, through torch_npu's
quantized matmuls (signatures, shapes and constraints from the torch_npu 2.12.0 wheel: see
``tests/test_npu_schemas.py``). Not verified on NPU hardware: tested with a fake ``torch_npu`` that computes each
op's documented formula, against the CPU twins :class:`~ascend_nb.engine.accelerated.kernels.W8A8Linear` and
:class:`~ascend_nb.engine.accelerated.kernels.Int4Linear`.

- ``w8a8``: ``npu_dynamic_quant`` (per-token symmetric int8, ``scale = max|row| / 127``, the rounding of
  :func:`~ascend_nb.engine.accelerated.quantize.quantize_rows`), then ``npu_quant_matmul`` with the int8 weight
  ``[K, N]``, its per-channel float32 scales and the per-token scales as ``pertoken_scale``.
- ``int4`` (W4A16): ``npu_weight_quant_batchmatmul`` on the weight packed by ``npu_convert_weight_to_int4pack``
  (int32 ``[K, N/8]``, values ``q - 8`` in -8..7), per-group ``antiquant_scale`` / ``antiquant_offset``
  ``[K/32, N]`` in the activations' dtype; the op computes ``(q_signed + offset) * scale``, and
  ``offset = (8 * scale + min) / scale'`` (``scale'`` the scale in that dtype) gives our ``scale * q + min``
  up to the rounding of ``offset`` (float16: 2**-11 of it, bfloat16: 2**-8) and of ``scale'`` (bfloat16 only).

Both ops take float16 / bfloat16 activations, K and N up to 65535 (N is split into column blocks beyond), and run
on Atlas A2 / A3 (910B and later), not on the 310P family: elsewhere :func:`npu_quantized_linear` returns None
and the plain twins run.
"""

from __future__ import annotations

import functools

import torch

from ascend_nb.engine.accelerated.linear import Linear
from ascend_nb.engine.accelerated.quantize import Int4Weight, Int8Weight, quantize_int4, quantize_int8

NPU_QUANT_DTYPES = (torch.float16, torch.bfloat16)  # activations both ops take (torch_npu docs)
MAX_DIM = 65535  # largest K and N of npu_quant_matmul and npu_weight_quant_batchmatmul (torch_npu docs)


def column_blocks(n: int, align: int = 1) -> list[slice]:
    """Output columns in blocks of at most :data:`MAX_DIM` (a multiple of ``align``)."""
    size = MAX_DIM - MAX_DIM % align
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])  # both ops take 2-D activations (M, K)


class NpuW8A8Linear(Linear):
    """``w8a8`` on NPU: ``npu_dynamic_quant`` then ``npu_quant_matmul`` (int8 x int8, int32 accumulation, per-channel
    and per-token float32 scales, output in the activations' dtype). Not verified on NPU."""

    def __init__(self, weight: Int8Weight, npu):
        self.npu = npu
        self.out_features, self.in_features = weight.qweight.shape
        scales = weight.scales.float()
        # weight [N, K] passed as its transposed view [K, N], as torch_npu's own linear_a8w8_quant module does
        self.blocks = [(weight.qweight[cols].contiguous(), scales[cols].contiguous())
                       for cols in column_blocks(self.out_features)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, x_scales = self.npu.npu_dynamic_quant(_rows(x))
        outs = [self.npu.npu_quant_matmul(q, w.t(), s, pertoken_scale=x_scales, output_dtype=x.dtype)
                for w, s in self.blocks]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        return out.view(*x.shape[:-1], self.out_features)


class NpuInt4Linear(Linear):
    """``int4`` (W4A16) on NPU: ``npu_weight_quant_batchmatmul`` with per-group antiquant scale and offset on the
    weight packed by ``npu_convert_weight_to_int4pack``. The scales and offsets are made for one activation dtype
    (``dtype``). Not verified on NPU."""

    def __init__(self, weight: Int4Weight, npu, dtype: torch.dtype):
        self.npu, self.dtype = npu, dtype
        self.out_features, self.in_features = weight.shape
        groups = self.in_features // weight.group_size
        # one group per row is per-channel for the op (antiquant_group_size must be in [32, K - 1])
        self.group_size = 0 if groups == 1 else weight.group_size
        scales = weight.scales.float()
        op_scales = scales.to(dtype)
        offsets = (8 * scales + weight.mins.float()) / op_scales.float()  # (q - 8 + offset) * scale' = scale * q + min
        q = weight.unpack()
        self.blocks = []
        for cols in column_blocks(self.out_features, align=8):
            signed = (q[cols].to(torch.int32) - 8).t().contiguous()  # [K, N_block] in -8..7
            self.blocks.append((self.npu.npu_convert_weight_to_int4pack(signed),
                                op_scales[cols].t().contiguous(), offsets[cols].t().contiguous().to(dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _rows(x)
        outs = [self.npu.npu_weight_quant_batchmatmul(rows, packed, scale, antiquant_offset=offset,
                                                      antiquant_group_size=self.group_size)
                for packed, scale, offset in self.blocks]
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        return out.view(*x.shape[:-1], self.out_features)


@functools.lru_cache(maxsize=None)
def is_310p_device(device: torch.device) -> bool:
    """Whether ``device`` is a 310P-family NPU (Atlas 300I DUO), whose torch_npu ops take fewer options."""
    if device.type != "npu":
        return False  # the tests' fake torch_npu works on CPU tensors and stands for an A2 chip
    from ascend_nb.device import device_info

    return device_info(device).is_310p


def npu_quantized_linear(weight: torch.Tensor, quantize: str | None, npu) -> Linear | None:
    """The NPU linear of ``quantize`` (``w8a8`` or ``int4``) for ``weight`` ``[N, K]`` in the model's dtype, or None
    where torch_npu's quantized matmuls do not apply (another format, float32 activations, K beyond 65535, N of
    int4 not a multiple of 8, a 310P chip): the plain twins run there."""
    if quantize not in ("w8a8", "int4") or weight.dtype not in NPU_QUANT_DTYPES or weight.shape[1] > MAX_DIM:
        return None
    if quantize == "int4" and weight.shape[0] % 8:
        return None
    if is_310p_device(weight.device):
        return None
    if quantize == "w8a8":
        return NpuW8A8Linear(quantize_int8(weight), npu)
    return NpuInt4Linear(quantize_int4(weight), npu, weight.dtype)
