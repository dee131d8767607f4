"""One small kernel interface, one implementation per device.

:class:`Kernels` is plain PyTorch with the exact numerics of transformers' Llama (RMSNorm in
float32, rotary embedding by ``rotate_half``, SDPA attention): it is the reference twin every
device kernel is tested against, and what CUDA runs (SDPA picks flash / memory-efficient kernels
there; the engine adds CUDA graphs). :class:`CpuKernels` swaps in a fused RMSNorm, oneDNN packed
bf16 linear layers (or float32 GEMMs for prompts where the CPU lacks native bf16) and
``_weight_int8pack_mm`` for weight-only int8; :class:`NpuKernels` calls the torch_npu fused ops.

Layouts: hidden states ``[B, T, H]``; attention tensors ``[B, heads, T, D]``; the KV cache
``[B, kv_heads, S, D]``; ``key_valid`` masks ``[B, S]`` are True where a key may be attended.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ascend_nb.engine.accelerated import cpu_gemv
from ascend_nb.engine.accelerated.quantize import Int8Weight, quantize_int8


class DenseLinear:
    """``x @ W.T`` through ``F.linear``: the twin of every packed linear kernel."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        self.out_features = weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class Int8Linear:
    """Weight-only int8 (per-output-channel scales), dequantized on the fly: the twin of the int8 kernels."""

    def __init__(self, weight: Int8Weight):
        self.qweight, self.scales = weight.qweight, weight.scales
        self.out_features = weight.qweight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.qweight.to(x.dtype)) * self.scales.to(x.dtype)


class OneDnnLinear:
    """oneDNN's packed linear (the weight reordered once into its blocked layout), CPU only."""

    def __init__(self, weight: torch.Tensor):
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        self.out_features = weight.shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), self.packed, None, "none", [], "")
        return out.view(*x.shape[:-1], self.out_features)


def _rows(x: torch.Tensor) -> int:
    return x.numel() // x.shape[-1]


class UpcastLinear(DenseLinear):
    """Reduced-precision weights on a CPU without native bf16/fp16 GEMM: decoding rows use ATen's
    GEMV; a prompt (32 rows or more) runs as one float32 GEMM on the weight converted on the fly,
    which measured 4x (32 rows) to 6x (128 rows) faster on an AVX2 CPU. Below that the conversion
    costs more than it saves (a batch of 8 decoded 1.5x slower)."""

    min_rows = 32

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if _rows(x) < self.min_rows:
            return F.linear(x, self.weight)
        return F.linear(x.float(), self.weight.float()).to(x.dtype)


class Int8PackLinear(Int8Linear):
    """Weight-only int8 through ``aten._weight_int8pack_mm`` (a fused dequantizing GEMV/GEMM on CPU);
    from 32 rows up one float32 GEMM on the dequantized weight is as fast."""

    min_gemm_rows = 32

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if _rows(x) >= self.min_gemm_rows:
            return (F.linear(x.float(), self.qweight.float()) * self.scales.float()).to(x.dtype)
        out = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), self.qweight, self.scales)
        return out.view(*x.shape[:-1], self.out_features)


def _gemv_rows(x: torch.Tensor) -> bool:
    return _rows(x) <= cpu_gemv.MAX_ROWS and x.dtype in (torch.float32, torch.bfloat16)


class GemvLinear(UpcastLinear):
    """bf16 weights on an AVX2 CPU without native bf16 GEMM: decoding rows (up to 8) through the
    memory-bound AVX2 GEMV of :mod:`cpu_gemv`; prompts as :class:`UpcastLinear`."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_gemv.gemv(x, self.weight) if _gemv_rows(x) else super().__call__(x)


class Int8GemvLinear(Int8PackLinear):
    """Weight-only int8 on an AVX2 CPU: decoding rows through the AVX2 GEMV of :mod:`cpu_gemv`
    (float32 scales), prompts as :class:`Int8PackLinear`."""

    def __init__(self, weight: Int8Weight):
        super().__init__(weight)
        self.float_scales = self.scales.float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return cpu_gemv.gemv(x, self.qweight, self.float_scales) if _gemv_rows(x) else super().__call__(x)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``[B, kv_heads, S, D]`` -> ``[B, kv_heads * groups, S, D]`` (each kv head serves ``groups`` query heads)."""
    if groups == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)


class Kernels:
    """Plain PyTorch kernels with transformers' Llama numerics; the reference for every device."""

    name = "torch"

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return weight * x.to(dtype)

    def rotary(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, N, T, D]``; ``cos``/``sin`` ``[B, 1, T, D]`` in ``x``'s dtype."""
        return x * cos + rotate_half(x) * sin

    def prefill_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          mask: torch.Tensor | None, scale: float) -> torch.Tensor:
        """Causal attention of a whole prompt. ``mask`` ``[B, 1, T, T]`` (True: attend) already holds
        the causal and padding rules; None means plain causal."""
        groups = q.shape[1] // k.shape[1]
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=scale)

    def decode_attention(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, length: int,
                         key_valid: torch.Tensor | None, scale: float) -> torch.Tensor:
        """One new query per row (``q`` ``[B, N, 1, D]``) against the first ``length`` cache slots."""
        b, heads, _, d = q.shape
        kv_heads = k_cache.shape[1]
        k, v = k_cache[:, :, :length], v_cache[:, :, :length]
        mask = None if key_valid is None else key_valid[:, None, None, :length]
        # Grouped-query attention without copying the cache: each kv head's query heads become rows.
        q = q.view(b, kv_heads, heads // kv_heads, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return out.view(b, heads, 1, d)

    def linear(self, weight: torch.Tensor, quantize: str | None = None):
        """A callable ``x -> x @ weight.T`` (weight ``[out, in]``), optionally weight-only int8."""
        if quantize == "int8":
            return Int8Linear(quantize_int8(weight))
        return DenseLinear(weight)


class CpuKernels(Kernels):
    """CPU: fused RMSNorm; for bf16/fp16 weights oneDNN's packed linear where this CPU runs them
    natively, else float32 GEMMs for prompts and (bf16, AVX2) our memory-bound GEMV for decoding;
    for weight-only int8 the AVX2 GEMV (or ``_weight_int8pack_mm``) and float32 GEMMs for prompts."""

    name = "cpu"

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        if not hasattr(F, "rms_norm"):  # torch < 2.4
            return super().rms_norm(x, weight, eps)
        return weight * F.rms_norm(x, x.shape[-1:], eps=eps)  # one op; bit-identical to the twin (tested)

    def linear(self, weight: torch.Tensor, quantize: str | None = None):
        if quantize == "int8":
            int8 = quantize_int8(weight)
            return Int8GemvLinear(int8) if cpu_gemv.gemv_available() else Int8PackLinear(int8)
        if weight.dtype not in (torch.bfloat16, torch.float16):
            return DenseLinear(weight)  # float32: MKL's GEMV/GEMM measured at least as fast as oneDNN packed
        if onednn_packs(weight.dtype):
            return OneDnnLinear(weight)
        if weight.dtype == torch.bfloat16 and cpu_gemv.gemv_available():
            return GemvLinear(weight)
        return UpcastLinear(weight)


_ONEDNN_SUPPORT: dict[torch.dtype, bool] = {}


def onednn_packs(dtype: torch.dtype) -> bool:
    """Whether oneDNN can pack linear weights of ``dtype`` on this CPU (bf16 needs AVX512 or
    AVX-NE-CONVERT)."""
    if dtype not in _ONEDNN_SUPPORT:
        try:
            probe = OneDnnLinear(torch.ones(8, 8, dtype=dtype))
            _ONEDNN_SUPPORT[dtype] = bool(torch.equal(probe(torch.ones(1, 8, dtype=dtype)),
                                                      torch.full((1, 8), 8, dtype=dtype)))
        except RuntimeError:
            _ONEDNN_SUPPORT[dtype] = False
    return _ONEDNN_SUPPORT[dtype]


class NpuKernels(Kernels):
    """Ascend NPU: torch_npu fused RMSNorm, rotary, prompt / incremental flash attention.

    Not verified on NPU hardware here: the dispatch is tested with a fake ``torch_npu`` that
    computes each op's documented formula. torch_npu's ``atten_mask`` is True where a score is
    masked out (the opposite of SDPA's boolean mask).
    """

    name = "npu"

    def __init__(self, torch_npu_module=None):
        if torch_npu_module is None:
            import torch_npu as torch_npu_module
        self.npu = torch_npu_module

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        return self.npu.npu_rms_norm(x, weight, epsilon=eps)[0]

    def rotary(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # npu_rotary_mul takes 11SD cos/sin for BNSD inputs on every torch_npu version (B1SD only on
        # newer ones) and older versions need D % 128 == 0: otherwise use the plain twin.
        if cos.shape[0] == 1 and x.shape[-1] % 128 == 0:
            return self.npu.npu_rotary_mul(x, cos, sin)
        return super().rotary(x, cos, sin)

    def prefill_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          mask: torch.Tensor | None, scale: float) -> torch.Tensor:
        t = q.shape[2]
        if mask is None:
            masked_out = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)[None, None]
        else:
            masked_out = ~mask
        return self.npu.npu_prompt_flash_attention(
            q.contiguous(), k.contiguous(), v.contiguous(), atten_mask=masked_out, num_heads=q.shape[1],
            num_key_value_heads=k.shape[1], scale_value=scale, input_layout="BNSD",
            pre_tokens=65535, next_tokens=65535)

    def decode_attention(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, length: int,
                         key_valid: torch.Tensor | None, scale: float) -> torch.Tensor:
        masked_out = None if key_valid is None else ~key_valid[:, None, None, :]
        return self.npu.npu_incre_flash_attention(
            q.contiguous(), k_cache, v_cache, atten_mask=masked_out, actual_seq_lengths=[length] * q.shape[0],
            num_heads=q.shape[1], num_key_value_heads=k_cache.shape[1], scale_value=scale, input_layout="BNSD")


def select_kernels(device: torch.device) -> Kernels:
    """The kernel set for a device: NPU fused ops, CPU packed GEMMs, plain PyTorch (SDPA) on CUDA."""
    if device.type == "npu":
        return NpuKernels()
    if device.type == "cpu":
        return CpuKernels()
    return Kernels()
