"""Each device kernel against its plain-PyTorch twin, the twins against transformers' Llama code,
weight-only int8, the static-shape decode step that device graphs replay, and the NPU dispatch.

NPU kernels cannot run here: they are exercised through ``FakeTorchNpu``, a stand-in written for
these tests that computes each torch_npu op's documented formula and checks the arguments
(layout, head counts, mask convention). That proves the plumbing, not the NPU: not verified on NPU.
"""

import functools
import inspect
import sys
import types

import pytest
import torch
import torch.nn.functional as F

import ascend_nb
from ascend_nb import device as devices
from ascend_nb import native
from ascend_nb.engine.accelerated import kernels as K
from ascend_nb.engine.accelerated.model import CompactLlama
from ascend_nb.engine.accelerated import npu_quant
from ascend_nb.engine.accelerated.npu_quant import NpuInt4Linear, NpuW8A8Linear
from ascend_nb.engine.accelerated.quantize import Int8Weight, quantize_int4, quantize_int8
from ascend_nb.quant_formats import check_quantize, down_quantize, head_quantize
from ascend_nb.errors import AscendNbError
from tests.heavy import heavy_after_first

TWIN = K.Kernels()
CPU_PATHS = [path for path in devices.runnable_kernel_paths("cpu") if path.startswith("cpu-")]


def cpu_kernels(path: str) -> K.CpuKernels:
    return K.select_kernels(devices.place("cpu", "float32", "accelerated", kernels=path))


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# -- twins against transformers ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_twin_is_transformers_rms_norm(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(64, eps=1e-6).to(dtype)
    norm.weight.data = randn(64, dtype=dtype, seed=1)
    x = randn(2, 5, 64, dtype=dtype) * 3
    with torch.no_grad():
        assert torch.equal(TWIN.rms_norm(x, norm.weight, 1e-6), norm(x))


def test_rotary_twin_is_transformers_rotary():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    q, k = randn(2, 4, 6, 16, seed=1), randn(2, 2, 6, 16, seed=2)
    cos, sin = randn(2, 6, 16, seed=3), randn(2, 6, 16, seed=4)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
    assert torch.equal(TWIN.rotary(q, cos[:, None], sin[:, None]), q_ref)
    assert torch.equal(TWIN.rotary(k, cos[:, None], sin[:, None]), k_ref)


def reference_attention(q, k, v, allowed, scale):
    """softmax(q k^T * scale, masked) v with kv heads repeated, as transformers' eager attention."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def test_prefill_attention_twin_is_masked_softmax_attention():
    q, k, v = randn(2, 6, 7, 16, seed=1), randn(2, 2, 7, 16, seed=2), randn(2, 2, 7, 16, seed=3)
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    torch.testing.assert_close(TWIN.prefill_attention(q, k, v, None, 0.25), reference_attention(q, k, v, causal, 0.25))
    padded = causal & torch.tensor([[False] * 3 + [True] * 4, [True] * 7])[:, None, None, :]
    padded = padded | torch.eye(7, dtype=torch.bool)
    torch.testing.assert_close(TWIN.prefill_attention(q, k, v, padded, 0.25), reference_attention(q, k, v, padded, 0.25))


def test_decode_attention_twin_reads_only_the_filled_slots():
    q = randn(2, 6, 1, 16, seed=1)
    k_cache, v_cache = randn(2, 2, 32, 16, seed=2), randn(2, 2, 32, 16, seed=3)
    key_valid = torch.ones(2, 32, dtype=torch.bool)
    key_valid[0, :4] = False  # row 0 was left-padded by 4
    expected = reference_attention(q, k_cache[:, :, :10], v_cache[:, :, :10], key_valid[:, None, None, :10], 0.25)
    torch.testing.assert_close(TWIN.decode_attention(q, k_cache, v_cache, 10, key_valid, 0.25), expected)
    k_cache[:, :, 10:] = float("nan")  # beyond the span: never read
    assert not TWIN.decode_attention(q, k_cache, v_cache, 10, key_valid, 0.25).isnan().any()


# -- CPU kernels against the twins ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_rms_norm_equals_twin(dtype):
    x, weight = randn(3, 9, 576, dtype=dtype) * 2, randn(576, dtype=dtype, seed=5)
    assert torch.equal(cpu_kernels("cpu-aten").rms_norm(x, weight, 1e-5), TWIN.rms_norm(x, weight, 1e-5))


GEMV_PATHS = [path for path in CPU_PATHS if devices.native_isa(path)]


@pytest.mark.parametrize("path", GEMV_PATHS)
@pytest.mark.parametrize("shape", [(1, 1, 576), (3, 9, 576), (2, 37), (1, 100, 2048)])
def test_native_rms_norm_is_the_twin(path, shape):
    """One pass per row: bf16 gives the twin's bits (the normed value is rounded to bf16 before the
    weight), float32 differs only where a sum in another order moves the last bit."""
    bf16 = randn(*shape, dtype=torch.bfloat16) * 3, randn(shape[-1], dtype=torch.bfloat16, seed=5)
    assert torch.equal(cpu_kernels(path).rms_norm(*bf16, 1e-5), TWIN.rms_norm(*bf16, 1e-5))
    fp32 = randn(*shape) * 3, randn(shape[-1], seed=5)
    torch.testing.assert_close(cpu_kernels(path).rms_norm(*fp32, 1e-6), TWIN.rms_norm(*fp32, 1e-6), rtol=1e-6, atol=0)


@pytest.mark.parametrize("path", GEMV_PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch, heads, kv_heads, head_dim", [(1, 9, 3, 64), (3, 4, 2, 16), (2, 8, 8, 128)])
def test_native_decode_step_attention_is_the_twin(path, dtype, batch, heads, kv_heads, head_dim):
    """Rotary, the cache write and masked attention in one op: the cache gets the twin's exact bits (the
    rotary rounds as the twin does), the output is the twin's within rounding (float32 sums in another
    order); left-padded (masked) slots and slots beyond the span are never read."""
    slots, span = 40, 23
    qkv = randn(batch, 1, (heads + 2 * kv_heads) * head_dim, dtype=dtype, seed=1)
    angles = randn(batch, 1, 1, head_dim, seed=2)
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    k_cache, v_cache = randn(batch, kv_heads, slots, head_dim, dtype=dtype, seed=3), randn(
        batch, kv_heads, slots, head_dim, dtype=dtype, seed=4)
    key_valid = torch.ones(batch, slots, dtype=torch.bool)
    key_valid[0, :5] = False  # row 0 was left-padded by 5
    index = torch.tensor([span - 1])
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    expected = TWIN.decode_step_attention(qkv, cos, sin, expected_k, expected_v, index, key_valid, span, heads, 0.125)
    k_cache[0, :, :5] = float("nan")  # masked and beyond the span: never read
    k_cache[:, :, span:] = v_cache[:, :, span:] = float("nan")
    expected_k[:, :, span:] = expected_v[:, :, span:] = float("nan")
    got = cpu_kernels(path).decode_step_attention(qkv, cos, sin, k_cache, v_cache, index, key_valid, span, heads, 0.125)
    assert torch.equal(k_cache[:, :, span - 1], expected_k[:, :, span - 1]) and torch.equal(v_cache[:, :, span - 1],
                                                                                            expected_v[:, :, span - 1])
    tolerance = {"rtol": 1.6e-2, "atol": 8e-3} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(got, expected, **tolerance)


@pytest.mark.parametrize("path", GEMV_PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("batch, sequence", [(2, False), (3, True)])
def test_decode_attention_of_a_common_head_size_has_the_bits_of_the_general_loop(path, dtype, head_dim, batch,
                                                                                   sequence):
    """Head sizes 64 and 128 keep their sums in registers (csrc/decode_attention.h), any other size runs the
    general loops: the same products and sums in the same order. Padding every head with 16 zero dimensions
    (no rotation: cos 1, sin 0) sends the same attention through the general loops; the bits must match."""
    heads, kv_heads, slots, span, pad = 4, 2, 50, 37, 16
    op = getattr(torch.ops.ascend_nb, f"decode_attention_{devices.native_isa(path)}")

    def padded(t: torch.Tensor, groups: int) -> torch.Tensor:  # [..., groups * head_dim] -> heads of head_dim + pad
        t = t.unflatten(-1, (groups, head_dim))
        return torch.cat([t, torch.zeros(*t.shape[:-1], pad, dtype=t.dtype)], dim=-1).flatten(-2).contiguous()

    qkv = randn(batch, (heads + 2 * kv_heads) * head_dim, dtype=dtype, seed=1)
    rows = 1 if sequence else batch
    k_cache = randn(rows, kv_heads, slots, head_dim, dtype=dtype, seed=3)
    v_cache = randn(rows, kv_heads, slots, head_dim, dtype=dtype, seed=4)
    key_valid = randn(rows, slots, seed=5) > -0.8  # some slots masked
    key_valid[:, span - 1:span + batch] = True
    index, scale = torch.tensor([span - 1]), head_dim ** -0.5

    def attend(qkv, k_cache, v_cache, dim):
        cos, sin = torch.ones(batch, dim, dtype=dtype), torch.zeros(batch, dim, dtype=dtype)
        return op(qkv, cos, sin, k_cache, v_cache, index, key_valid, span, heads, kv_heads, scale, sequence)

    fixed = attend(qkv, k_cache.clone(), v_cache.clone(), head_dim)
    general = attend(padded(qkv, heads + 2 * kv_heads), padded(k_cache, 1), padded(v_cache, 1), head_dim + pad)
    assert torch.equal(fixed, general.unflatten(-1, (heads, head_dim + pad))[..., :head_dim].flatten(-2))


@pytest.mark.parametrize("path", CPU_PATHS)
@pytest.mark.parametrize("quantize, rows", [(None, 1), (None, 8), (None, 40), ("int8", 1), ("int8", 40), ("w8a8", 1),
                                            ("w8a8", 40), ("int4", 1), ("int4", 40)])
def test_every_cpu_kernel_path_equals_the_twin(path, quantize, rows):
    """Every kernel path this CPU runs, decoding rows and prompts, bf16 and every quantized format, against the
    plain twin (float32 accumulation in both, another order, int4 decoding from float32 weights: bf16 tolerance)."""
    weight, x = randn(96, 64, dtype=torch.bfloat16), randn(rows, 64, dtype=torch.bfloat16, seed=1)
    got, expected = cpu_kernels(path).linear(weight, quantize), TWIN.linear(weight, quantize)
    # int4 decoding reads scale * q + min in float32 where the twin rounds it to bf16 first: a bf16 step of the largest output
    atol = 2**-8 * expected(x).abs().max().item() if quantize == "int4" else 1e-3
    torch.testing.assert_close(got(x), expected(x), rtol=2e-2 if quantize else 1.6e-2, atol=atol)
    head = cpu_kernels(path).linear(weight, quantize, out_dtype=torch.float32)
    assert head(x).dtype == torch.float32


@pytest.mark.parametrize("rows", [1, 40])
def test_upcast_linear_equals_dense_twin(rows):
    weight, x = randn(96, 64, dtype=torch.bfloat16), randn(rows, 64, dtype=torch.bfloat16, seed=1)
    got, expected = K.UpcastLinear(weight)(x), K.DenseLinear(weight)(x)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 96)
    torch.testing.assert_close(got, expected)  # bf16 tolerance: float32 accumulation in both, other order


@pytest.mark.skipif(not devices.cpu_features().onednn_bf16, reason="this CPU has no native oneDNN bf16")
def test_onednn_linear_equals_dense_twin():
    weight, x = randn(96, 64, dtype=torch.bfloat16), randn(2, 3, 64, dtype=torch.bfloat16, seed=1)
    torch.testing.assert_close(K.OneDnnLinear(weight)(x), K.DenseLinear(weight)(x))


@pytest.mark.skipif(not devices.cpu_features().onednn_bf16, reason="this CPU has no native oneDNN bf16")
def test_onednn_linear_runs_inside_torch_compile():
    """The packed oneDNN linear is an opaque custom op: inductor calls it instead of failing to lower it."""
    linear = K.OneDnnLinear(randn(70, 64, dtype=torch.bfloat16))
    x = randn(2, 1, 64, dtype=torch.bfloat16, seed=1)
    compiled = torch.compile(lambda t: linear(t) * 2, fullgraph=True, dynamic=False)
    assert torch.equal(compiled(x), linear(x) * 2)


@pytest.mark.parametrize("dtype, rows", [(torch.bfloat16, 1), (torch.bfloat16, 40), (torch.float32, 2)])
def test_int8pack_linear_equals_int8_twin(dtype, rows):
    quantized = quantize_int8(randn(96, 64, dtype=dtype) * 0.05)
    x = randn(rows, 64, dtype=dtype, seed=1)
    got, expected = K.Int8PackLinear(quantized)(x), K.Int8Linear(quantized)(x)
    torch.testing.assert_close(got, expected, rtol=2e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-3)


def test_cpu_kernel_selection():
    weight = randn(32, 16)
    for path in CPU_PATHS:
        kernels = cpu_kernels(path)
        assert kernels.path == path and type(kernels.linear(weight)) is K.DenseLinear  # float32: MKL everywhere
        bf16, int8 = kernels.linear(weight.bfloat16()), kernels.linear(weight, "int8")
        if path.endswith("-gemv"):
            assert type(bf16) is K.GemvLinear and type(int8) is K.GemvLinear
            expected_prompt = K.DenseLinear if kernels.onednn_prompts else K.UpcastLinear
            assert type(bf16.prompt) is expected_prompt
            assert bf16.prompt.weight is bf16.weight  # one copy of the weight, read by prompts and decoding alike
            assert type(int8.prompt) is K.DequantLinear and int8.prompt.weight is int8.weight  # one copy here too
            assert int8.prompt.float_gemm is not kernels.onednn_prompts
        else:
            assert type(bf16) is (K.OneDnnLinear if path == "cpu-onednn" else K.UpcastLinear)
            assert type(int8) is K.Int8PackLinear
    assert cpu_kernels("cpu-avx2-gemv").onednn_prompts is False if "cpu-avx2-gemv" in CPU_PATHS else True
    assert type(TWIN.linear(weight, "int8")) is K.Int8Linear
    torch_place = devices.place("cpu", "float32", "accelerated", kernels="torch")
    assert type(K.select_kernels(torch_place)) is K.Kernels


# -- weight-only int8 -------------------------------------------------------------------------------
def test_int8_quantization_by_blocks_of_rows_is_the_one_shot_rounding(monkeypatch):
    from ascend_nb.engine.accelerated import quantize as Q

    weight = (randn(37, 48) * torch.linspace(0.01, 2, 37)[:, None]).bfloat16()
    weight[5] = 0
    w = weight.float()
    scales = w.abs().amax(dim=1) / 127.0
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    expected = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    monkeypatch.setattr(Q, "CHUNK_ELEMENTS", 48 * 5)  # blocks of 5 rows, the last one short
    got = Q.quantize_int8(weight)
    assert torch.equal(got.qweight, expected) and torch.equal(got.scales, scales.bfloat16())


def test_int8_quantization_error_is_within_half_a_step():
    weight = randn(64, 48) * torch.linspace(0.01, 2, 64)[:, None]
    weight[5] = 0
    quantized = quantize_int8(weight)
    assert quantized.qweight.dtype == torch.int8 and quantized.qweight.abs().max() <= 127
    assert quantized.scales.shape == (64,) and quantized.scales[5] == 1  # an all-zero row keeps a usable scale
    error = (quantized.dequantize(torch.float32) - weight).abs()
    assert (error <= quantized.scales[:, None] / 2 + 1e-7).all()
    assert torch.equal(quantized.qweight.abs().amax(dim=1)[weight.abs().amax(dim=1) > 0],
                       torch.full((63,), 127, dtype=torch.int8))


def test_check_quantize():
    assert check_quantize(None) is None and check_quantize("none") is None and check_quantize("int8") == "int8"
    with pytest.raises(AscendNbError, match="unknown quantize 'fp4'"):
        check_quantize("fp4")


def test_int8_twin_is_dequantize_then_linear():
    quantized = Int8Weight(torch.tensor([[1, -2], [127, 0]], dtype=torch.int8), torch.tensor([0.5, 0.01]))
    x = torch.tensor([[2.0, 3.0]])
    torch.testing.assert_close(K.Int8Linear(quantized)(x), torch.tensor([[0.5 * (2 - 6), 0.01 * 254]]))


# -- the static decode step that graphs capture -----------------------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_llama_dir):
    return ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated", max_seq_len=64)


def test_graph_mode_static_step_equals_eager_decoding(tiny_llama_dir, monkeypatch):
    """The graph path (full-length masked attention over the static cache, buffers updated in place)
    with the compiler replaced by the identity, so the static step itself runs: it gives the eager
    step's tokens exactly (float32). CUDA graph capture needs a GPU and is not exercised here."""
    monkeypatch.setattr(torch, "compile", lambda step, **options: step)
    load = dict(device="cpu", dtype="float32", backend="accelerated", max_seq_len=64)
    eager, graphs = ascend_nb.load(tiny_llama_dir, **load), ascend_nb.load(tiny_llama_dir, graphs=True, **load)
    assert graphs.graphs == "torch.compile" and eager.graphs is None and "graphs='torch.compile'" in repr(graphs)
    prompts = [[1, 504, 3458, 282, 4649, 314], [1, 42, 43]]
    expected = eager.generate(prompts, max_new_tokens=8, ignore_eos=True)
    static = graphs.generate(prompts, max_new_tokens=8, ignore_eos=True)
    again = graphs.generate(prompts[1], max_new_tokens=8, ignore_eos=True)  # another batch size: another graph
    assert [r.token_ids for r in static] == [r.token_ids for r in expected]
    assert again.token_ids == expected[1].token_ids
    assert sorted(graphs._decode_steps) == [1, 2] and all(step._replay is not None for step in graphs._decode_steps.values())


@pytest.mark.slow
@pytest.mark.parametrize("path", [*heavy_after_first(CPU_PATHS), "torch"])
def test_compiled_cpu_decode_follows_eager_on_every_kernel_path(tiny_llama_dir, path):
    """graphs=True on CPU, in bf16, for every kernel path this machine runs: the static decode step
    through torch.compile (inductor) against the same path eagerly. Inductor fuses the small ops
    around the linears (other rounding), so the closeness rule applies, not token equality."""
    from ascend_nb.precision import greedy_divergence

    load = dict(device="cpu", dtype="bfloat16", backend="accelerated", max_seq_len=32, kernels=path)
    compiled, eager = ascend_nb.load(tiny_llama_dir, graphs=True, **load), ascend_nb.load(tiny_llama_dir, **load)
    prompt = [1, 504, 3458, 282, 4649, 314]
    expected = eager.generate(prompt, max_new_tokens=10, ignore_eos=True).token_ids
    got = compiled.generate(prompt, max_new_tokens=10, ignore_eos=True).token_ids
    assert len(got) == 10 and greedy_divergence(eager, compiled, prompt, expected, got) is None


# -- NPU dispatch with a fake torch_npu (not verified on NPU) ---------------------------------------
SCALAR_TYPES = {5: torch.float16, 15: torch.bfloat16, 6: torch.float32, 1: torch.int8, 3: torch.int32}  # c10 codes


def _logged(op):
    """Log each call of a fake op (name, args, kwargs, result) for the schema oracle."""
    @functools.wraps(op)
    def call(fake, *args, **kwargs):
        out = op(fake, *args, **kwargs)
        fake.log.append((op.__name__, args, kwargs, out))
        return out
    return call


class FakeTorchNpu(types.ModuleType):
    """Computes the documented formulas of the torch_npu ops NpuKernels and npu_quant.py call; counts and logs
    the calls. Every op's signature is the real registered schema (names, order, keyword-only, defaults) and its
    output shapes and dtypes are those of Huawei's meta functions: tests/test_npu_schemas.py checks both against
    the torch_npu 2.12.0 wheel. Arguments a fake does not implement must stay at their defaults."""

    def __init__(self):
        super().__init__("torch_npu")
        self.calls: dict[str, int] = {}
        self.log: list[tuple[str, tuple, dict, object]] = []  # (op, args, kwargs, result) of every call

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def _defaults_only(self, op, values, implemented):
        """Every argument of ``op`` outside ``implemented`` is at its schema default (the fake does not compute it)."""
        for p in inspect.signature(getattr(self, op)).parameters.values():
            if p.name not in implemented and p.default is not inspect.Parameter.empty:
                assert values[p.name] == p.default, f"fake {op} does not implement {p.name}={values[p.name]!r}"

    @_logged
    def npu_rms_norm(fake, self, gamma, epsilon=1e-06):
        fake._count("rms_norm")
        assert gamma.dtype == self.dtype, "gamma's dtype must be self's (torch_npu docs)"
        rstd = torch.rsqrt(self.float().pow(2).mean(-1, keepdim=True) + epsilon)
        return gamma * (self.float() * rstd).to(self.dtype), rstd

    @_logged
    def npu_rotary_mul(fake, self, r1, r2, rotary_mode="half", rotate=None):
        fake._defaults_only("npu_rotary_mul", locals(), ())
        fake._count("rotary")
        assert self.dim() == 4 and r1.shape[0] == 1 and r1.shape[1] == 1, "11SD cos/sin for BNSD input"
        return self * r1 + K.rotate_half(self) * r2  # 'half' mode: r1 * input + r2 * cat(-x2, x1)

    def _attention(self, q, k, v, atten_mask, num_heads, num_key_value_heads, scale_value, input_layout):
        assert input_layout == "BNSD" and q.is_contiguous()
        assert q.dtype in (torch.float16, torch.bfloat16), "query: float16 / bfloat16 on Atlas A2 (torch_npu docs)"
        assert q.shape[1] == num_heads and k.shape[1] == (num_key_value_heads or num_heads)  # 0: as many as num_heads
        allowed = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool) if atten_mask is None else ~atten_mask
        return reference_attention(q.float(), k.float(), v.float(), allowed, scale_value).to(q.dtype)

    @_logged
    def npu_prompt_flash_attention(fake, query, key, value, *, padding_mask=None, atten_mask=None, pse_shift=None,
                                   actual_seq_lengths=None, deq_scale1=None, quant_scale1=None, deq_scale2=None,
                                   quant_scale2=None, quant_offset2=None, num_heads=1, scale_value=1.0,
                                   pre_tokens=2147483647, next_tokens=0, input_layout="BSH", num_key_value_heads=0,
                                   actual_seq_lengths_kv=None, sparse_mode=0):
        fake._defaults_only("npu_prompt_flash_attention", locals(), (
            "atten_mask", "num_heads", "scale_value", "pre_tokens", "next_tokens", "input_layout", "num_key_value_heads"))
        fake._count("prompt_flash_attention")
        # sparse_mode 0 with a mask: only the band pre_tokens / next_tokens around the diagonal is computed
        assert atten_mask.dtype == torch.bool and next_tokens >= query.shape[2] and pre_tokens >= key.shape[2], \
            "the mask alone decides"
        assert all(t.is_contiguous() for t in (query, key, value, atten_mask)), "non-contiguous tensors: not supported"
        return fake._attention(query, key, value, atten_mask, num_heads, num_key_value_heads, scale_value, input_layout)

    @_logged
    def npu_incre_flash_attention(fake, query, key, value, *, padding_mask=None, atten_mask=None, pse_shift=None,
                                  actual_seq_lengths=None, antiquant_scale=None, antiquant_offset=None, block_table=None,
                                  dequant_scale1=None, quant_scale1=None, dequant_scale2=None, quant_scale2=None,
                                  quant_offset2=None, kv_padding_size=None, num_heads=1, scale_value=1.0,
                                  input_layout="BSH", num_key_value_heads=0, block_size=0, inner_precise=1):
        fake._defaults_only("npu_incre_flash_attention", locals(), (
            "atten_mask", "actual_seq_lengths", "num_heads", "scale_value", "input_layout", "num_key_value_heads"))
        fake._count("incre_flash_attention")
        assert query.shape[2] == 1 and len(actual_seq_lengths) in (1, query.shape[0]), "shape (B,) or (1,)"
        lengths = actual_seq_lengths * query.shape[0] if len(actual_seq_lengths) == 1 else actual_seq_lengths
        rows = []
        for b, length in enumerate(lengths):  # only the first actual_seq_lengths[b] keys and values are valid
            mask = None if atten_mask is None else atten_mask[b:b + 1, ..., :length]
            rows.append(fake._attention(query[b:b + 1], key[b:b + 1, :, :length], value[b:b + 1, :, :length], mask,
                                        num_heads, num_key_value_heads, scale_value, input_layout))
        return torch.cat(rows)

    @_logged
    def npu_dynamic_quant(fake, input, *, smooth_scales=None, group_index=None, dst_type=None, quant_mode="pertoken",
                          dst_type_max=0.0):
        fake._defaults_only("npu_dynamic_quant", locals(), ())
        fake._count("dynamic_quant")
        assert input.dtype in (torch.float16, torch.bfloat16) and input.dim() > 1
        x = input.float()
        scale = x.abs().amax(dim=-1) / 127  # scale = rowMax(abs(x)) / DTYPE_MAX; y = round(x / scale)
        # an all-zero row (padding) divides 0 by 0: whatever int8 values it gets on NPU, its scale 0 zeroes its output
        y = torch.round(x / torch.where(scale > 0, scale, 1)[..., None])
        return y.clamp(-128, 127).to(torch.int8), scale

    @_logged
    def npu_quant_matmul(fake, x1, x2, scale, *, offset=None, pertoken_scale=None, bias=None, output_dtype=None,
                         x1_dtype=None, x2_dtype=None, pertoken_scale_dtype=None, scale_dtype=None, group_sizes=None,
                         y_scale=None):
        fake._defaults_only("npu_quant_matmul", locals(), ("pertoken_scale", "output_dtype"))
        fake._count("quant_matmul")
        out_dtype = SCALAR_TYPES.get(output_dtype, output_dtype)  # int? output_dtype: a torch.dtype arrives as its code
        assert x1.dtype == x2.dtype == torch.int8 and x1.dim() == x2.dim() == 2 and x1.shape[1] == x2.shape[0]
        assert scale.dtype == torch.float32 and pertoken_scale.dtype == torch.float32
        assert out_dtype in (torch.float16, torch.bfloat16), "float16 / bfloat16 output with a per-token scale"
        acc = (x1.long() @ x2.long()).float()  # exact int32 accumulation, then both scales
        return (acc * pertoken_scale[:, None] * scale).to(out_dtype)

    @_logged
    def npu_weight_quant_batchmatmul(fake, x, weight, antiquant_scale, antiquant_offset=None, quant_scale=None,
                                     quant_offset=None, bias=None, antiquant_group_size=0, inner_precise=0,
                                     weight_dtype=None):
        fake._defaults_only("npu_weight_quant_batchmatmul", locals(), ("antiquant_offset", "antiquant_group_size"))
        fake._count("weight_quant_batchmatmul")
        assert x.dim() == 2 and x.dtype in (torch.float16, torch.bfloat16) and weight.dtype == torch.int32
        assert antiquant_scale.dtype == x.dtype and antiquant_offset.dtype == x.dtype, "scale/offset in x's dtype"
        q = FakeTorchNpu.int4_unpack(weight).float()  # [K, N] in -8..7
        k, n = q.shape
        group = antiquant_group_size or k  # 0: per-channel, scale (1, N)
        assert antiquant_group_size == 0 or (antiquant_group_size % 32 == 0 and 32 <= antiquant_group_size <= k - 1)
        assert antiquant_scale.shape == antiquant_offset.shape == (k // group, n)
        expand = lambda t: t.float().repeat_interleave(group, dim=0)  # noqa: E731
        w = (q + expand(antiquant_offset)) * expand(antiquant_scale)  # (weight + antiquant_offset) * antiquant_scale
        return (x.float() @ w).to(x.dtype)

    @_logged
    def npu_convert_weight_to_int4pack(fake, weight, inner_k_tiles=0):
        fake._defaults_only("npu_convert_weight_to_int4pack", locals(), ())
        fake._count("convert_weight_to_int4pack")
        assert weight.dtype == torch.int32 and weight.dim() == 2 and weight.shape[1] % 8 == 0 and weight.is_contiguous()
        assert weight.min() >= -8 and weight.max() <= 7, "values in int4's range [-8, 7]"
        # 8 nibbles per int32; the real op interleaves them in its own order, which only the op itself reads back
        nibbles = (weight & 0xF).view(weight.shape[0], -1, 8)
        packed = sum(nibbles[..., i].to(torch.int64) << (4 * i) for i in range(8))
        return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)

    @staticmethod
    def int4_unpack(packed):
        """The fake's inverse of npu_convert_weight_to_int4pack: int32 [K, N/8] -> signed values [K, N]."""
        words = packed.to(torch.int64) & 0xFFFFFFFF
        nibbles = torch.stack([(words >> (4 * i)) & 0xF for i in range(8)], dim=-1).view(packed.shape[0], -1)
        return torch.where(nibbles >= 8, nibbles - 16, nibbles)


def run_npu_model(engine, model) -> torch.Tensor:
    """Logits of a left-padded batch: the prompt, then three decode steps, with ``model`` swapped into ``engine``."""
    reference = engine.model
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314], [2, 2, 1, 42, 43, 44]])
    mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    with torch.inference_mode():
        engine.model, engine._decode_steps = model, {}  # a decode step is bound to its model
        try:
            logits = [engine._prefill(ids, mask)]
            logits += [engine._decode(torch.tensor([7, 9])) for _ in range(3)]
        finally:
            engine.model, engine._decode_steps = reference, {}
    return torch.stack(logits)


def compact(tiny_llama_dir, engine, kernels, dtype, quantize=None):
    return CompactLlama.from_directory(tiny_llama_dir, engine.config, kernels, dtype, torch.device("cpu"), 64, quantize)


def test_npu_kernels_run_a_model_like_the_twin(engine, tiny_llama_dir):
    """float32: torch_npu's RMSNorm; attention runs the plain twin (the flash attention ops take float16 / bfloat16)."""
    fake = FakeTorchNpu()
    npu_model = compact(tiny_llama_dir, engine, K.NpuKernels(torch_npu_module=fake), torch.float32)
    torch.testing.assert_close(run_npu_model(engine, npu_model), run_npu_model(engine, engine.model), rtol=1e-4, atol=1e-4)
    assert fake.calls == {"rms_norm": 4 * (2 * 2 + 1)}  # no flash attention in float32; head_dim 16: no npu_rotary_mul


@pytest.mark.parametrize("dtype, quantize", [(torch.bfloat16, None), (torch.float16, None), (torch.float16, "w8a8"),
                                             (torch.float16, "int4"), (torch.bfloat16, "int4")])
def test_npu_kernels_run_a_half_precision_model_like_the_twin(engine, tiny_llama_dir, dtype, quantize):
    """float16 / bfloat16, dense and quantized: the flash attention ops and the quantized matmuls against the plain
    twins in the same dtype and format. Tolerance: a few steps of the dtype on logits of size ~1 (the fake computes
    attention in float32 and rounds once; int4's offsets carry their own rounding, see test_npu_int4_linear_*)."""
    fake = FakeTorchNpu()
    npu_model = compact(tiny_llama_dir, engine, K.NpuKernels(torch_npu_module=fake), dtype, quantize)
    twin_model = compact(tiny_llama_dir, engine, K.Kernels(), dtype, quantize)
    got, expected = run_npu_model(engine, npu_model), run_npu_model(engine, twin_model)
    step = torch.finfo(dtype).eps
    torch.testing.assert_close(got, expected, rtol=8 * step, atol=8 * step)
    assert fake.calls["prompt_flash_attention"] == 2 and fake.calls["incre_flash_attention"] == 3 * 2
    linears = {"w8a8": "quant_matmul", "int4": "weight_quant_batchmatmul"}
    if quantize:  # every linear of the two layers, and the head in its format: one prefill and three decode calls each
        head = int(head_quantize(quantize) == quantize)  # int4 keeps an int8 head (QuantFormat.head)
        down = int(down_quantize(quantize) == quantize)  # w8a8 keeps the down projections weight-only int8
        assert fake.calls[linears[quantize]] == (2 * (3 + down) + head) * 4
        assert fake.calls.get("dynamic_quant", 0) == (fake.calls["quant_matmul"] if quantize == "w8a8" else 0)


def test_npu_rotary_uses_the_fused_op_for_128_wide_heads():
    fake = FakeTorchNpu()
    x, cos, sin = randn(1, 4, 5, 128), randn(1, 1, 5, 128, seed=1), randn(1, 1, 5, 128, seed=2)
    assert torch.equal(K.NpuKernels(torch_npu_module=fake).rotary(x, cos, sin), TWIN.rotary(x, cos, sin))
    assert fake.calls == {"rotary": 1}
    K.NpuKernels(torch_npu_module=fake).rotary(randn(2, 4, 1, 128), randn(2, 1, 1, 128), randn(2, 1, 1, 128))  # per-row positions
    assert fake.calls == {"rotary": 1}


def test_npu_device_selects_npu_kernels(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_npu", FakeTorchNpu())
    # a Placement needs torch.device("npu"), which exists only once the real torch_npu is loaded
    npu = types.SimpleNamespace(kernels=devices.KERNEL_PATHS["npu"][0])
    assert type(K.select_kernels(npu)) is K.NpuKernels


def test_every_kernel_path_has_one_kernel_class():
    """The one table path -> class covers every path of every device, and nothing else."""
    assert sorted(K.KERNEL_CLASSES) == sorted({path for paths in devices.KERNEL_PATHS.values() for path in paths})
    assert K.KERNEL_CLASSES["cuda-sdpa"] is K.Kernels and K.KERNEL_CLASSES["cpu-aten"] is K.CpuKernels


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 5, 40])
def test_npu_w8a8_linear_is_the_cpu_twin(dtype, rows):
    """npu_dynamic_quant + npu_quant_matmul (fake) against W8A8Linear: the same per-token rounding, an exact integer
    product, the same two scales; on NPU the output is rounded once to the dtype (one step of it allowed)."""
    weight, x = randn(96, 64, dtype=dtype) * 0.05, randn(2, rows, 64, dtype=dtype, seed=1)
    fake = FakeTorchNpu()
    linear = K.NpuKernels(torch_npu_module=fake).linear(weight, "w8a8")
    assert type(linear) is NpuW8A8Linear
    got, expected = linear(x), K.W8A8Linear(quantize_int8(weight))(x)
    assert got.dtype == dtype and got.shape == (2, rows, 96)
    torch.testing.assert_close(got, expected, rtol=torch.finfo(dtype).eps, atol=1e-5)
    assert fake.calls == {"dynamic_quant": 1, "quant_matmul": 1}


def npu_int4_weight(linear: NpuInt4Linear) -> torch.Tensor:
    """The float32 weight [N, K] the op computes from a NpuInt4Linear's blocks: (q_signed + offset) * scale."""
    parts = []
    for packed, scale, offset in linear.blocks:
        q = FakeTorchNpu.int4_unpack(packed).float()
        group = linear.group_size or q.shape[0]
        parts.append(((q + offset.float().repeat_interleave(group, 0)) * scale.float().repeat_interleave(group, 0)).t())
    return torch.cat(parts)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [64, 32])  # 32: one group per row, passed per-channel (antiquant_group_size 0)
def test_npu_int4_offsets_give_the_cpu_weights(dtype, k):
    """(q - 8 + offset) * scale' equals scale * q + min up to the rounding of the offset to the dtype (half a step
    of it) and, in bfloat16, of the scale (scale' = the scale rounded: 8 |scale' - scale|)."""
    weight = randn(96, k) * torch.linspace(0.01, 2, 96)[:, None] + 0.3
    int4 = quantize_int4(weight)
    linear = NpuInt4Linear(int4, FakeTorchNpu(), dtype)
    assert linear.group_size == (0 if k == 32 else 32)
    scales, op_scales = int4.scales.float(), int4.scales.to(dtype).float()
    offsets = torch.cat([offset.float().t() for _, _, offset in linear.blocks])
    bound = 8 * (op_scales - scales).abs() + offsets.abs() * torch.finfo(dtype).eps / 2 * op_scales * (1 + 1e-3)
    error = (npu_int4_weight(linear) - int4.dequantize(torch.float32)).abs().view(96, -1, 32)
    assert (error <= bound[..., None] + 1e-7).all()
    if dtype == torch.float16:  # the scales are float16 already: only the offset's rounding is left
        assert torch.equal(op_scales, scales)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 40])
def test_npu_int4_linear_is_the_cpu_twin(dtype, rows):
    """npu_weight_quant_batchmatmul (fake) against Int4Linear: each output within what the weights' difference
    (test above) and the twin's rounding of the weight and of the output to the dtype can move it."""
    weight, x = randn(96, 64, dtype=dtype) * 0.05, randn(rows, 64, dtype=dtype, seed=1)
    fake = FakeTorchNpu()
    linear = K.NpuKernels(torch_npu_module=fake).linear(weight, "int4")
    assert type(linear) is NpuInt4Linear and fake.calls == {"convert_weight_to_int4pack": 1}
    int4 = quantize_int4(weight)
    got, expected = linear(x), K.Int4Linear(int4)(x)
    assert got.dtype == dtype and got.shape == (rows, 96)
    eps = torch.finfo(dtype).eps
    w_twin = int4.dequantize(torch.float32)
    weight_error = (npu_int4_weight(linear) - w_twin).abs() + w_twin.abs() * eps / 2
    bound = x.float().abs() @ weight_error.t() + (expected.float().abs() + got.float().abs()) * eps / 2 + 1e-6
    bound += x.float().abs() @ w_twin.abs().t() * 64 * 2**-24  # float32 sums in another order
    assert ((got.float() - expected.float()).abs() <= bound).all()


def test_npu_quantized_linear_selection(monkeypatch):
    npu = K.NpuKernels(torch_npu_module=FakeTorchNpu())
    half = randn(96, 64, dtype=torch.float16)
    assert type(npu.linear(half, "w8a8")) is NpuW8A8Linear and type(npu.linear(half, "int4")) is NpuInt4Linear
    assert type(npu.linear(half, "int8")) is K.Int8Linear and type(npu.linear(half)) is K.DenseLinear
    # float32 activations (the quantized matmuls take float16 / bfloat16) and int4 with N % 8: the plain twins
    assert type(npu.linear(half.float(), "w8a8")) is K.W8A8Linear and type(npu.linear(half.float(), "int4")) is K.Int4Linear
    assert type(npu.linear(half[:90], "int4")) is K.Int4Linear
    head = npu.linear(half, "w8a8", out_dtype=torch.float32)
    assert head(randn(2, 64, dtype=torch.float16, seed=1)).dtype == torch.float32


def test_npu_quantized_linears_split_wide_outputs(monkeypatch):
    """N beyond the ops' 65535 runs as column blocks (here blocks of 40, rounded to 8 for the int4 pack)."""
    weight, x = randn(96, 64, dtype=torch.float16) * 0.05, randn(3, 64, dtype=torch.float16, seed=1)
    whole = [NpuW8A8Linear(quantize_int8(weight), FakeTorchNpu()), NpuInt4Linear(quantize_int4(weight), FakeTorchNpu(),
                                                                                  torch.float16)]
    monkeypatch.setattr(npu_quant, "MAX_DIM", 40)
    assert npu_quant.column_blocks(96, 8) == [slice(0, 40), slice(40, 80), slice(80, 96)]
    split = [NpuW8A8Linear(quantize_int8(weight), FakeTorchNpu()), NpuInt4Linear(quantize_int4(weight), FakeTorchNpu(),
                                                                                  torch.float16)]
    for one, blocks in zip(whole, split):
        assert len(blocks.blocks) == 3 and torch.equal(blocks(x), one(x))


# -- native GEMVs against plain float32 matmuls ----------------------------------------------------
ISAS = [devices.native_isa(path) for path in CPU_PATHS if devices.native_isa(path)]
GEMV_SHAPES = [(1, 70, 100), (2, 70, 100), (3, 131, 64), (8, 70, 1536)]  # rows, N (not a multiple of 4), K


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rows, n, k", GEMV_SHAPES)
def test_gemv_bf16_equals_float32_matmul(isa, rows, n, k):
    """Float32 accumulation of the same bf16 weights, another summation order: float32 output to
    1e-5; bf16 output is that result rounded to bf16 (within one bf16 step, 2**-7 relative)."""
    weight, x = randn(n, k, dtype=torch.bfloat16), randn(rows, k, seed=1)
    expected = F.linear(x, weight.float())
    torch.testing.assert_close(native.gemv(x, weight, isa=isa), expected, rtol=1e-5, atol=1e-4)
    x16 = x.bfloat16()
    got = native.gemv(x16, weight, isa=isa)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, n)
    torch.testing.assert_close(got.float(), F.linear(x16.float(), weight.float()), rtol=2**-7, atol=1e-3)
    wide = native.gemv(x16, weight, isa=isa, out_dtype=torch.float32)  # the float32 accumulator itself
    assert wide.dtype == torch.float32
    torch.testing.assert_close(wide, F.linear(x16.float(), weight.float()), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rows, n, k", GEMV_SHAPES)
def test_gemv_int8_equals_dequantized_matmul(isa, rows, n, k):
    quantized = quantize_int8(randn(n, k))
    scales, x = quantized.scales.float(), randn(rows, k, seed=1)
    expected = F.linear(x, quantized.qweight.float()) * scales  # int8 values are exact in float32
    torch.testing.assert_close(native.gemv(x, quantized.qweight, scales, isa), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("isa", ISAS)
def test_gemv_runs_inside_torch_compile(isa):
    weight, x = randn(70, 64, dtype=torch.bfloat16), randn(2, 1, 64, dtype=torch.bfloat16, seed=1)
    compiled = torch.compile(lambda t: native.gemv(t, weight, isa=isa) * 2, fullgraph=True, dynamic=False)
    assert torch.equal(compiled(x), native.gemv(x, weight, isa=isa) * 2)


def test_gemv_build_failure_falls_back(monkeypatch, caplog):
    def fail(isa):
        raise RuntimeError("Error building extension 'ascend_nb_cpu_avx2': c++: not found")

    monkeypatch.setattr(native, "_build", fail)
    assert native.load_native.__wrapped__("avx2") is False
    assert "could not be built" in caplog.text and "c++: not found" in caplog.text and "slower ATen path" in caplog.text


def test_kernel_override_is_checked():
    with pytest.raises(AscendNbError, match="unknown kernel path 'cpu-fastest' for cpu: use one of"):
        devices.place("cpu", "float32", "accelerated", kernels="cpu-fastest")
    with pytest.raises(AscendNbError, match="kernel paths belong to the accelerated backend"):
        devices.place("cpu", "float32", "transformers", kernels="cpu-aten")
    chosen = devices.place("cpu", "float32", "accelerated")
    assert chosen.kernels == devices.runnable_kernel_paths("cpu")[0] and chosen.graphs is None
