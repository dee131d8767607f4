"""One small kernel interface, one implementation per device.

:class:`Kernels` is plain PyTorch with the exact numerics of transformers' Llama (RMSNorm in
float32, rotary embedding by ``rotate_half``, SDPA attention): it is the reference twin every
device kernel is tested against, and what CUDA runs (SDPA picks flash / memory-efficient kernels
there; the engine adds CUDA graphs). :class:`CpuKernels` swaps in a fused RMSNorm and the linear
kernels of its kernel path (native GEMVs, oneDNN, ATen); :class:`NpuKernels` calls the torch_npu fused ops.

Layouts: hidden states ``[B, T, H]``; attention tensors ``[B, heads, T, D]``; the KV cache
``[B, kv_heads, S, D]``; ``key_valid`` masks ``[B, S]`` are True where a key may be attended.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ascend_nb import native
from ascend_nb.device import KERNEL_PATHS, Placement, native_isa
from ascend_nb.engine.accelerated.linear import Linear
from ascend_nb.engine.accelerated.quantize import (Int4Weight, Int8Weight, quantize_int4, quantize_int8,
                                                  quantize_rows)


class DenseLinear(Linear):
    """``x @ W.T`` through ``F.linear``: the twin of every packed linear kernel."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        self.out_features = weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class Int8Linear(Linear):
    """Weight-only int8 (per-output-channel scales), dequantized on the fly: the twin of the int8 kernels."""

    def __init__(self, weight: Int8Weight):
        self.qweight, self.scales = weight.qweight, weight.scales
        self.out_features = weight.qweight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.qweight.to(x.dtype)) * self.scales.to(x.dtype)


class W8A8Linear(Linear):
    """``w8a8``: each row of ``x`` quantized to int8 per token, an exact int32 product with the int8 weight
    (``torch._int_mm``), then both scales: the twin of the integer-dot kernels."""

    def __init__(self, weight: Int8Weight):
        self.qweight, self.scales = weight.qweight, weight.scales.float()
        self.out_features = weight.qweight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, x_scales = quantize_rows(x.reshape(-1, x.shape[-1]))
        acc = torch._int_mm(q, self.qweight.t()).float()
        out = acc * x_scales[:, None] * self.scales
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)


class NativeW8A8Linear(W8A8Linear):
    """:class:`W8A8Linear` for prompts in one native op (:func:`ascend_nb.native.w8a8_linear`): the same bits, without
    the ATen ops of the per-token quantization and the scaling around the int8 GEMM."""

    def __init__(self, weight: Int8Weight, isa: str):
        super().__init__(weight)
        self.isa = isa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype not in (torch.float32, torch.bfloat16):
            return super().forward(x)
        return native.w8a8_linear(x, self.qweight, self.scales, self.isa)


class Int4Linear(Linear):
    """``int4``, dequantized on the fly (``scales * q + mins`` in float32, then the activations' dtype):
    the twin of the int4 kernels."""

    def __init__(self, weight: Int4Weight):
        self.weight = weight
        self.out_features = weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.dequantize(x.dtype))


@torch.library.custom_op("ascend_nb::onednn_linear", mutates_args=())
def _onednn_linear(x: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """oneDNN's packed linear as an opaque op, so torch.compile (inductor) calls it instead of
    failing to lower ``mkldnn._linear_pointwise`` on a reordered weight."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


@_onednn_linear.register_fake
def _(x: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    return x.new_empty(x.shape[0], out_features)


class OneDnnLinear(Linear):
    """oneDNN's packed linear (the weight reordered once into its blocked layout), CPU only."""

    def __init__(self, weight: torch.Tensor):
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
        self.out_features = weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _onednn_linear(x.reshape(-1, x.shape[-1]), self.packed, self.out_features)
        return out.view(*x.shape[:-1], self.out_features)


def _rows(x: torch.Tensor) -> int:
    return x.numel() // x.shape[-1]


class UpcastLinear(DenseLinear):
    """Reduced-precision weights on a CPU without native bf16/fp16 GEMM: decoding rows use ATen's
    GEMV; a prompt (32 rows or more) runs as one float32 GEMM on the weight converted on the fly,
    which measured 4x (32 rows) to 6x (128 rows) faster on an AVX2 CPU. Below that the conversion
    costs more than it saves (a batch of 8 decoded 1.5x slower)."""

    min_rows = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _rows(x) < self.min_rows:
            return F.linear(x, self.weight)
        return F.linear(x.float(), self.weight.float()).to(x.dtype)


class Int8PackLinear(Int8Linear):
    """Weight-only int8 through ``aten._weight_int8pack_mm`` (a fused dequantizing GEMV/GEMM on CPU);
    from 32 rows up one float32 GEMM on the dequantized weight is as fast."""

    min_gemm_rows = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _rows(x) >= self.min_gemm_rows:
            return (F.linear(x.float(), self.qweight.float()) * self.scales.float()).to(x.dtype)
        out = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), self.qweight, self.scales)
        return out.view(*x.shape[:-1], self.out_features)


def _gemv_rows(x: torch.Tensor) -> bool:
    return _rows(x) <= native.MAX_ROWS and x.dtype in (torch.float32, torch.bfloat16)


class GemvLinear(Linear):
    """Decoding rows (up to 8) through the memory-bound native GEMV for ``isa`` (bf16, int8, w8a8 or int4
    weights, as :func:`ascend_nb.native.gemv` takes them; float32 accumulation, exact int32 for w8a8); prompts
    through ``prompt`` (another linear of the same weight bytes)."""

    def __init__(self, weight: torch.Tensor, isa: str, prompt: Linear, scales: torch.Tensor | None = None,
                 mins: torch.Tensor | None = None, int8_activations: bool = False):
        self.weight, self.isa, self.prompt, self.scales = weight, isa, prompt, scales
        self.mins, self.int8_activations = mins, int8_activations
        self.out_features = weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _gemv_rows(x):
            return native.gemv(x, self.weight, self.scales, self.isa, self.out_dtype, self.mins, self.int8_activations)
        return self.prompt(x)


class DequantLinear(Linear):
    """A prompt's ``x @ W.T`` for int8 or int4 weights: tiles of rows dequantized into a cache-sized buffer and
    multiplied by ATen's GEMM (:func:`ascend_nb.native.dequant_linear`), the numerics of :class:`Int8Linear` /
    :class:`Int4Linear` up to the GEMM's blocking, at about a bf16 GEMM's speed. float16 activations, and bf16
    ones with ``float_gemm`` (a CPU without native bf16 GEMMs, as for :class:`UpcastLinear`), run float32 tiles."""

    def __init__(self, weight: torch.Tensor, isa: str, scales: torch.Tensor, mins: torch.Tensor | None = None,
                 float_gemm: bool = False, amx: bool = False):
        self.weight, self.isa, self.scales, self.mins, self.float_gemm = weight, isa, scales, mins, float_gemm
        self.amx = amx  # bf16 prompts widen blocks of rows in the cache and multiply them by AMX tiles instead
        self.out_features = weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and not self.float_gemm):
            return native.dequant_linear(x, self.weight, self.scales, self.mins, self.isa, self.amx)
        return native.dequant_linear(x.float(), self.weight, self.scales, self.mins, self.isa).to(x.dtype)


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
    """Plain PyTorch kernels with transformers' Llama numerics; the reference for every device (and,
    through SDPA's own choice of flash / memory-efficient kernels, the CUDA path)."""

    def __init__(self, placement: Placement | None = None):
        pass

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

    def decode_attention(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, span: int,
                         key_valid: torch.Tensor, scale: float) -> torch.Tensor:
        """One new query per row (``q`` ``[B, N, 1, D]``) against the first ``span`` cache slots where
        ``key_valid`` ``[B, S]`` is True."""
        b, heads, _, d = q.shape
        kv_heads = k_cache.shape[1]
        k, v = k_cache[:, :, :span], v_cache[:, :, :span]
        mask = key_valid[:, None, None, :span]
        # Grouped-query attention without copying the cache: each kv head's query heads become rows.
        q = q.view(b, kv_heads, heads // kv_heads, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return out.view(b, heads, 1, d)

    def split_rotate(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``q, k, v`` ``[B, heads or kv_heads, T, D]`` of the fused projection ``qkv`` ``[B, T, (heads + 2 kv_heads) * D]``,
        q and k rotated together (``cos``/``sin`` ``[B, 1, T, D]``)."""
        b, t, width = qkv.shape
        rotated = heads + kv_heads
        x = qkv.view(b, t, rotated + kv_heads, width // (rotated + kv_heads)).transpose(1, 2)
        qk = self.rotary(x[:, :rotated], cos, sin)
        return qk[:, :heads], qk[:, heads:], x[:, rotated:]

    def decode_step_attention(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                              v_cache: torch.Tensor, index: torch.Tensor, key_valid: torch.Tensor, span: int,
                              heads: int, scale: float) -> torch.Tensor:
        """One decode step's attention from the fused projection ``qkv`` ``[B, 1, (heads + 2 kv_heads) * D]``:
        q and k rotated, k and v written into cache slot ``index`` (a one-element tensor), then
        :meth:`decode_attention` over the first ``span`` slots; returns ``[B, 1, heads * D]``."""
        q, k, v = self.split_rotate(qkv, cos, sin, heads, k_cache.shape[1])
        k_cache.index_copy_(2, index, k)
        v_cache.index_copy_(2, index, v)
        out = self.decode_attention(q, k_cache, v_cache, span, key_valid, scale)
        return out.transpose(1, 2).reshape(qkv.shape[0], 1, -1)

    max_fused_rows = 0  # decode steps of at most this many rows run each layer as one call (decode_layer)

    def fuses_decode_layers(self, layers, dtype: torch.dtype) -> bool:
        """Whether :meth:`decode_layer` can run these layers on activations of ``dtype`` (plain PyTorch:
        never; one op at a time)."""
        return False

    def decode_layer(self, layer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                     v_cache: torch.Tensor, index: torch.Tensor, key_valid: torch.Tensor, span: int, heads: int,
                     eps: float, scale: float, sequence: bool = False) -> torch.Tensor:
        """One decoder layer of a decode step in one call, ``h`` ``[B, H]`` (see :meth:`fuses_decode_layers`);
        ``sequence``: the rows are consecutive positions of one sequence (a speculative verify pass)."""
        raise NotImplementedError

    def linear(self, weight: torch.Tensor, quantize: str | None = None, out_dtype: torch.dtype | None = None) -> Linear:
        """A callable ``x -> x @ weight.T`` (weight ``[out, in]``), optionally weight-only int8;
        ``out_dtype`` float32 keeps the head's logits (or a partial sum) out of bf16 rounding."""
        linear = self._linear(weight, quantize)
        linear.out_dtype = out_dtype
        return linear

    def _linear(self, weight: torch.Tensor, quantize: str | None) -> Linear:
        if quantize == "int8":
            return Int8Linear(quantize_int8(weight))
        if quantize == "w8a8":
            return W8A8Linear(quantize_int8(weight))
        if quantize == "int4":
            return Int4Linear(quantize_int4(weight))
        return DenseLinear(weight)


class CpuKernels(Kernels):
    """CPU: fused RMSNorm and decode attention (native, one op each, on the GEMV paths) and one linear
    kernel per kernel path (see :data:`ascend_nb.device.KERNEL_PATHS`):

    - ``cpu-avx512bf16-gemv`` / ``cpu-avx512-gemv`` / ``cpu-avx2-gemv``: decoding rows through the
      native GEMV of that instruction set (bf16 and int8 weights; bf16 dot products on AVX512-BF16);
      prompts through ATen's oneDNN GEMM on the same weight where the CPU has native bf16 (AVX512
      paths) or one float32 GEMM (AVX2 path, as on a CPU without native bf16): one copy of every weight;
    - ``cpu-onednn``: oneDNN's packed bf16 linear for every row count (int8: ``_weight_int8pack_mm``);
    - ``cpu-aten``: ATen alone (no compiler needed): bf16 GEMV / float32 GEMM, ``_weight_int8pack_mm``.

    float32 weights always run MKL's GEMV/GEMM (measured at least as fast as oneDNN packed).
    """

    def __init__(self, placement: Placement):
        self.path = placement.kernels
        self.isa = native_isa(self.path)
        native_bf16 = placement.cpu.onednn_bf16
        self.onednn_prompts = self.path == "cpu-onednn" or (self.isa in ("avx512", "avx512bf16") and native_bf16)
        # int8 / int4 prompts by AMX tiles on the weight bytes (csrc/amx_linear.h): at about bf16's time where the
        # dequantized tiles took 1.3-1.8x (only the AVX512-BF16 build has the kernel)
        self.amx_prompts = self.isa == "avx512bf16" and placement.cpu.amx_bf16

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        if self.isa and x.dtype in (torch.float32, torch.bfloat16) and weight.dtype == x.dtype:
            return native.rms_norm(x, weight, eps, self.isa)  # one op instead of six (bf16: the twin's bits)
        if not hasattr(F, "rms_norm"):  # torch < 2.4
            return super().rms_norm(x, weight, eps)
        return weight * F.rms_norm(x, x.shape[-1:], eps=eps)  # bit-identical to the twin (tested)

    @property
    def max_fused_rows(self) -> int:
        return native.MAX_ROWS if self.isa else 0

    def fuses_decode_layers(self, layers, dtype: torch.dtype) -> bool:
        """On a GEMV path, for float32 or bf16 activations (those the native ops take; float16 runs op by
        op), when every linear is a native GEMV (not a tensor-parallel one): the layer's ops are then
        called from C++ in the Python layer's order, with the same results."""
        linears = [linear for layer in layers for linear in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        return (bool(self.isa) and dtype in (torch.float32, torch.bfloat16)
                and all(isinstance(linear, GemvLinear) for linear in linears))

    def decode_layer(self, layer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                     v_cache: torch.Tensor, index: torch.Tensor, key_valid: torch.Tensor, span: int, heads: int,
                     eps: float, scale: float, sequence: bool = False) -> torch.Tensor:
        def parts(linear: GemvLinear) -> tuple:
            return linear.weight, linear.scales, linear.mins, linear.int8_activations

        weights = (layer.input_norm, *parts(layer.qkv), *parts(layer.o), layer.post_norm, *parts(layer.gate_up),
                   *parts(layer.down))
        return native.decode_layer(h, weights, cos, sin, k_cache, v_cache, index, key_valid, span, heads,
                                   k_cache.shape[1], eps, scale, self.isa, sequence)

    def decode_step_attention(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                              v_cache: torch.Tensor, index: torch.Tensor, key_valid: torch.Tensor, span: int,
                              heads: int, scale: float) -> torch.Tensor:
        if not (self.isa and qkv.dtype in (torch.float32, torch.bfloat16) and k_cache.is_contiguous()):
            return super().decode_step_attention(qkv, cos, sin, k_cache, v_cache, index, key_valid, span, heads, scale)
        b = qkv.shape[0]  # one native op instead of about twenty small ones
        out = native.decode_attention(qkv.view(b, -1), cos.reshape(b, -1), sin.reshape(b, -1), k_cache, v_cache, index,
                                      key_valid, span, heads, k_cache.shape[1], scale, self.isa)
        return out.view(b, 1, -1)

    def _linear(self, weight: torch.Tensor, quantize: str | None) -> Linear:
        if quantize and not self.isa:  # no native kernels: ATen's int8 GEMV/GEMM, or the twins
            return Int8PackLinear(quantize_int8(weight)) if quantize == "int8" else super()._linear(weight, quantize)
        if quantize == "int8":
            # prompts: tiles dequantized into the cache and ATen's GEMM (about bf16's speed; dequantizing a
            # whole weight per call made 7B int8 prompts 3.4-4x slower than bf16's)
            int8 = quantize_int8(weight)
            scales = int8.scales.float()
            prompt = DequantLinear(int8.qweight, self.isa, scales, float_gemm=not self.onednn_prompts, amx=self.amx_prompts)
            return GemvLinear(int8.qweight, self.isa, prompt, scales)
        if quantize == "w8a8":  # prompts: oneDNN's int8 GEMM (AMX / VNNI) on per-token int8 activations
            prompt = NativeW8A8Linear(quantize_int8(weight), self.isa)
            return GemvLinear(prompt.qweight, self.isa, prompt, prompt.scales, int8_activations=True)  # one copy of each
        if quantize == "int4":
            w4 = quantize_int4(weight)
            prompt = DequantLinear(w4.packed, self.isa, w4.scales, w4.mins, float_gemm=not self.onednn_prompts,
                                   amx=self.amx_prompts)
            return GemvLinear(w4.packed, self.isa, prompt, w4.scales, w4.mins)
        if weight.dtype not in (torch.bfloat16, torch.float16):
            return DenseLinear(weight)
        if self.isa and weight.dtype == torch.bfloat16:
            # one copy of the weight: prompts through ATen's oneDNN bf16 GEMM on the weight the GEMV reads
            # (measured as fast as a packed second copy on an AMX Xeon, 0.87-1.19x), or one float32 GEMM
            return GemvLinear(weight, self.isa, DenseLinear(weight) if self.onednn_prompts else UpcastLinear(weight))
        return OneDnnLinear(weight) if self.onednn_prompts else UpcastLinear(weight)


class NpuKernels(Kernels):
    """Ascend NPU: torch_npu fused RMSNorm, rotary, prompt / incremental flash attention.

    Not verified on NPU hardware here: the dispatch is tested with a fake ``torch_npu`` that
    computes each op's documented formula. torch_npu's ``atten_mask`` is True where a score is
    masked out (the opposite of SDPA's boolean mask).
    """

    def __init__(self, placement: Placement | None = None, torch_npu_module=None):
        if torch_npu_module is None:
            import torch_npu as torch_npu_module
        self.npu = torch_npu_module

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        return self.npu.npu_rms_norm(x, weight, epsilon=eps)[0]

    def rotary(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # npu_rotary_mul takes 11SD cos/sin for BNSD inputs on every torch_npu version (B1SD only on
        # newer ones); with jit_compile=True (the only mode of the 310P) D must be 128 and B, N at most 1000
        # (torch_npu 2.12.0 docs): otherwise use the plain twin.
        if cos.shape[0] == 1 and x.shape[-1] == 128 and x.shape[0] <= 1000 and x.shape[1] <= 1000:
            return self.npu.npu_rotary_mul(x, cos, sin)
        return super().rotary(x, cos, sin)

    # query dtypes of npu_prompt/incre_flash_attention on Atlas A2 (torch_npu docs; the 310P takes float16 only):
    # float32 activations run the plain twin (SDPA)
    attention_dtypes = (torch.float16, torch.bfloat16)

    def prefill_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          mask: torch.Tensor | None, scale: float) -> torch.Tensor:
        if q.dtype not in self.attention_dtypes:
            return super().prefill_attention(q, k, v, mask, scale)
        t = q.shape[2]
        if mask is None:
            masked_out = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)[None, None]
        else:
            masked_out = ~mask
        from ascend_nb.engine.accelerated.npu_quant import is_310p_device

        kv_heads = k.shape[1]
        if is_310p_device(q.device) and kv_heads != q.shape[1]:  # the 310P takes num_key_value_heads=0 only
            k, v, kv_heads = repeat_kv(k, q.shape[1] // kv_heads), repeat_kv(v, q.shape[1] // kv_heads), 0
        # pre/next_tokens at INT_MAX: the mask alone decides (the only pre_tokens the 310P takes; next_tokens 0 or INT_MAX)
        return self.npu.npu_prompt_flash_attention(
            q.contiguous(), k.contiguous(), v.contiguous(), atten_mask=masked_out, num_heads=q.shape[1],
            num_key_value_heads=kv_heads, scale_value=scale, input_layout="BNSD",
            pre_tokens=2147483647, next_tokens=2147483647)

    def decode_attention(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, span: int,
                         key_valid: torch.Tensor, scale: float) -> torch.Tensor:
        if q.dtype not in self.attention_dtypes:
            return super().decode_attention(q, k_cache, v_cache, span, key_valid, scale)
        masked_out = ~key_valid[:, None, None, :]
        return self.npu.npu_incre_flash_attention(
            q.contiguous(), k_cache, v_cache, atten_mask=masked_out, actual_seq_lengths=[span] * q.shape[0],
            num_heads=q.shape[1], num_key_value_heads=k_cache.shape[1], scale_value=scale, input_layout="BNSD")

    def _linear(self, weight: torch.Tensor, quantize: str | None) -> Linear:
        # w8a8 / int4 through torch_npu's quantized matmuls where they apply (npu_quant.py, not verified on NPU)
        from ascend_nb.engine.accelerated.npu_quant import npu_quantized_linear

        return npu_quantized_linear(weight, quantize, self.npu) or super()._linear(weight, quantize)


# kernel path (ascend_nb.device.KERNEL_PATHS) -> the class that runs it; the CPU paths share one class,
# which reads its path from the placement
KERNEL_CLASSES: dict[str, type[Kernels]] = {
    "npu-torch_npu": NpuKernels,
    "cuda-sdpa": Kernels,
    **{path: CpuKernels for path in KERNEL_PATHS["cpu"] if path.startswith("cpu-")},
    "torch": Kernels,
}


def select_kernels(placement: Placement) -> Kernels:
    """The kernels of a placement's kernel path (:data:`KERNEL_CLASSES`)."""
    return KERNEL_CLASSES[placement.kernels](placement)
