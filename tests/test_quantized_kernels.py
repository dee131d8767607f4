"""The quantized formats of ``ascend_nb.quant_formats`` (int8, w8a8, int4): how weights are quantized and
packed, and each native kernel against the float reference of the same quantized values, on every
instruction set this CPU runs: exact where the arithmetic is exact (w8a8's int32 dots, the prompt GEMM's
dequantized tiles), within float32 summation order where it is not (int4 decoding)."""

import pytest
import torch
import torch.nn.functional as F

import ascend_nb
from ascend_nb import device as devices
from ascend_nb import native
from ascend_nb.engine.accelerated import kernels as K
from ascend_nb.engine.accelerated.quantize import quantize_int4, quantize_int8, quantize_rows
from ascend_nb.cpu_features import cpu_features
from ascend_nb.errors import AscendNbError
from ascend_nb.quant_formats import QUANT_FORMATS, check_quantize
from tests.heavy import heavy_after_first

ISAS = [devices.native_isa(path) for path in devices.runnable_kernel_paths("cpu") if devices.native_isa(path)]
# bf16 prompts of int8 / int4 weights run AMX tiles (csrc/amx_linear.h) where the CPU has AMX-BF16
AMX = "avx512bf16" in ISAS and cpu_features().amx_bf16
NO_AMX = "needs a CPU with AMX-BF16 (this one has none): the AMX prompt kernel cannot run here"


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# -- formats ------------------------------------------------------------------------------------------
def test_one_vocabulary():
    assert tuple(QUANT_FORMATS) == ("int8", "w8a8", "int4")
    assert QUANT_FORMATS["int4"].bits + 8 * QUANT_FORMATS["int4"].params_per_group * QUANT_FORMATS["int4"].param_bytes \
        / QUANT_FORMATS["int4"].group_size == 5  # Q4_1's 5 bits a weight
    with pytest.raises(AscendNbError, match="use one of none, int8, w8a8, int4"):
        check_quantize("fp4")


def test_int4_packing_and_rounding():
    weight = randn(5, 64) * 0.1
    weight[1, :32] = 0.25  # a constant group: scale 1, every q 0, exact
    w4 = quantize_int4(weight)
    assert w4.packed.shape == (5, 32) and w4.packed.dtype == torch.uint8
    assert w4.scales.shape == w4.mins.shape == (5, 2) and w4.scales.dtype == torch.float16
    q = w4.unpack()
    assert q.max() <= 15 and torch.equal(w4.packed[:, :16] & 0xF, q[:, :16]) and torch.equal(w4.packed[:, :16] >> 4,
                                                                                            q[:, 16:32])
    dequantized = w4.dequantize()
    assert torch.equal(dequantized[1, :32], weight[1, :32])
    step = w4.scales.float().repeat_interleave(32, dim=1)
    assert ((dequantized - weight).abs() <= step * 0.5 + 1e-3 * weight.abs().max()).all()  # within half a step (+ fp16 min)


def test_int4_refuses_rows_that_are_not_whole_groups():
    with pytest.raises(AscendNbError, match="multiple of 32.*quantize='int8'"):
        quantize_int4(randn(4, 48))


def test_per_token_activation_quantization():
    x = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]])
    q, scales = quantize_rows(x)
    assert torch.equal(scales, torch.tensor([1.0 / 127, 1.0]))
    assert torch.equal(q, torch.tensor([[64, -127, 32], [0, 0, 0]], dtype=torch.int8))  # 63.5 -> 64, 31.75 -> 32


def test_w8a8_twin_is_the_integer_product():
    weight, x = randn(40, 64), randn(3, 64, seed=1)
    w8 = quantize_int8(weight)
    q, x_scales = quantize_rows(x)
    expected = (q.double() @ w8.qweight.double().T) * x_scales.double()[:, None] * w8.scales.double()
    torch.testing.assert_close(K.W8A8Linear(w8)(x).double(), expected, rtol=1e-6, atol=1e-6)


# -- native kernels -------------------------------------------------------------------------------------
SHAPES = [(1, 70, 64), (3, 131, 96), (8, 40, 1536), (2, 33, 4160)]  # rows, N, K (K % 64 != 0 in the second and last)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rows, n, k", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_w8a8_gemv_is_the_twin_bit_for_bit(isa, rows, n, k, dtype):
    w8, x = quantize_int8(randn(n, k)), randn(rows, k, seed=1, dtype=dtype)
    got = native.gemv(x, w8.qweight, w8.scales.float(), isa, int8_activations=True)
    assert got.dtype == dtype and torch.equal(got, K.W8A8Linear(w8)(x))


def int4_int8_dot_reference(x: torch.Tensor, w4) -> torch.Tensor:
    """What the integer-dot int4 GEMV computes, in float64: x quantized per group of 32 (quantize_rows of each
    group), each group's exact integer dot scaled by both scales, plus the weight's min times the group's sum of x."""
    rows, k = x.shape
    groups = x.float().view(rows, k // 32, 32)
    q, x_scales = quantize_rows(groups)
    dots = torch.einsum("mgj,ngj->mng", q.double(), w4.unpack().double().view(-1, k // 32, 32))
    scaled = dots * x_scales.double()[:, None, :] * w4.scales.double()[None]
    return (scaled + groups.double().sum(-1)[:, None, :] * w4.mins.double()[None]).sum(-1)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rows, n, k", SHAPES + [(2, 9, 96)])  # K = 96: a last chunk of 3 groups
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_gemv_is_the_float_reference(isa, rows, n, k, dtype):
    """The same quantized values in float32 (scale * q + min), another summation order: float32 rounding. On the
    integer-dot path the reference quantizes x per group of 32 as the kernel does."""
    w4, x = quantize_int4(randn(n, k)), randn(rows, k, seed=1, dtype=dtype)
    if native.int4_int8_dot(isa):
        expected = int4_int8_dot_reference(x, w4)
    else:
        expected = F.linear(x.double(), w4.dequantize(torch.float32).double())
    got = native.gemv(x, w4.packed, w4.scales, isa, torch.float32, w4.mins)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5 * k ** 0.5)
    assert native.gemv(x, w4.packed, w4.scales, isa, None, w4.mins).dtype == dtype


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_prompt_gemm_of_dequantized_tiles_is_the_twin(isa, dtype, fmt):
    """Tiles of dequantized rows are the twin's dequantized weight exactly; 2100 rows of K = 4096 make two 16 MB
    tiles in bf16 and three in float32 (the last one short). The GEMM runs the same ATen kernel on each tile as on
    the whole."""
    weight, x = randn(2100, 4096), randn(2, 5, 4096, seed=1, dtype=dtype)
    if fmt == "int8":
        w8 = quantize_int8(weight.to(dtype))
        got, twin = native.dequant_linear(x, w8.qweight, w8.scales.float(), isa=isa), K.Int8Linear(w8)(x)
    else:
        w4 = quantize_int4(weight)
        got, twin = native.dequant_linear(x, w4.packed, w4.scales, w4.mins, isa=isa), K.Int4Linear(w4)(x)
    assert got.shape == (2, 5, 2100) and got.dtype == dtype
    torch.testing.assert_close(got, twin, rtol=1e-5 if dtype == torch.float32 else 8e-3, atol=1e-4)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("amx", [False, True])
def test_prompt_ops_run_in_and_out_of_inference_mode(isa, amx):
    """The prompt op keeps its buffers' memory per thread: in a new thread (new buffers), one call under
    inference_mode (as generation runs it) and then one outside (as a notebook's own forward may) give the same
    bits, without PyTorch refusing to write a kept inference tensor outside inference mode."""
    import threading

    w8, x = quantize_int8(randn(100, 576).bfloat16()), randn(3, 576, seed=1, dtype=torch.bfloat16)
    results: list = []

    def calls() -> None:
        try:
            with torch.inference_mode():
                inside = native.dequant_linear(x, w8.qweight, w8.scales.float(), isa=isa, amx=amx)
            results.append(torch.equal(native.dequant_linear(x, w8.qweight, w8.scales.float(), isa=isa, amx=amx), inside))
        except RuntimeError as error:
            results.append(error)

    thread = threading.Thread(target=calls)
    thread.start()
    thread.join()
    assert results == [True]


@pytest.mark.skipif(not AMX, reason=NO_AMX)
@pytest.mark.parametrize("fmt", ["int8", "int4"])
@pytest.mark.parametrize("shape, n", [((1, 64), 70), ((33, 576), 100), ((2, 65, 2048), 2100), ((5, 96), 40)])
def test_amx_prompt_kernel_is_the_twin_up_to_summation_order(fmt, shape, n):
    """bf16 prompts through AMX tiles (blocks of 32 weight rows widened in the cache, prompt rows padded to 32, the
    last weight block short): the twin's dequantized weights times x with float32 sums in another order, so within
    a bf16 step of the twin; against the identity, exactly the twin's values (each output one weight times one)."""
    x, weight = randn(*shape, seed=1, dtype=torch.bfloat16), randn(n, shape[-1])
    if fmt == "int8":
        w8 = quantize_int8(weight.bfloat16())
        args, twin = (w8.qweight, w8.scales.float(), None), K.Int8Linear(w8)
    else:
        w4 = quantize_int4(weight)
        args, twin = (w4.packed, w4.scales, w4.mins), K.Int4Linear(w4)
    got = native.dequant_linear(x, *args, isa="avx512bf16", amx=True)
    assert got.shape == (*shape[:-1], n) and got.dtype == torch.bfloat16
    torch.testing.assert_close(got, twin(x), rtol=8e-3, atol=1e-2)
    eye = torch.eye(shape[-1], dtype=torch.bfloat16)
    assert torch.equal(native.dequant_linear(eye, *args, isa="avx512bf16", amx=True), twin(eye))
    if fmt == "int8":  # a K that is no multiple of 32 runs the dequantized tiles: the same bits as without amx
        w8 = quantize_int8(randn(40, 48).bfloat16())
        odd = randn(3, 48, seed=2, dtype=torch.bfloat16)
        assert torch.equal(native.dequant_linear(odd, w8.qweight, w8.scales.float(), isa="avx512bf16", amx=True),
                           native.dequant_linear(odd, w8.qweight, w8.scales.float(), isa="avx512bf16"))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 64), (17, 96), (2, 65, 576)])
def test_w8a8_prompt_op_is_the_twin_bit_for_bit(isa, dtype, shape):
    """The prompt path's one native op (per-token quantization in C++, ATen's int8 GEMM, both scales) is the twin's
    ten ATen ops exactly, for any number of rows."""
    w8, x = quantize_int8(randn(40, shape[-1])), randn(*shape, seed=1, dtype=dtype)
    got = K.NativeW8A8Linear(w8, isa)(x)
    assert got.shape == (*shape[:-1], 40) and got.dtype == dtype and torch.equal(got, K.W8A8Linear(w8)(x))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dequantized_tiles_are_the_twins_weights_bit_for_bit(isa, dtype):
    """Against the identity every output is one weight times one: the tile's values themselves."""
    w4, eye = quantize_int4(randn(70, 128)), torch.eye(128, dtype=dtype)
    assert torch.equal(native.dequant_linear(eye, w4.packed, w4.scales, w4.mins, isa=isa), w4.dequantize(dtype).T)
    w8 = quantize_int8(randn(70, 128, dtype=dtype))
    assert torch.equal(native.dequant_linear(eye, w8.qweight, w8.scales.float(), isa=isa), K.Int8Linear(w8)(eye))


# -- engines ------------------------------------------------------------------------------------------
GEMV_PATHS = [path for path in devices.runnable_kernel_paths("cpu") if devices.native_isa(path)]


@pytest.mark.parametrize("kernels", heavy_after_first(devices.runnable_kernel_paths("cpu")))
@pytest.mark.parametrize("quantize", ["w8a8", "int4"])
def test_every_cpu_path_runs_every_format_close_to_the_twin(tiny_llama_dir, kernels, quantize):
    """A whole model on each kernel path (forced), prompt and decode steps, against the plain-PyTorch twin
    path of the same format; the quantized linears are the format's, not a silent bf16 fallback."""
    engines = {path: ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated",
                                    kernels=path, quantize=quantize) for path in (kernels, "torch")}
    linear = engines[kernels].model.layers[0].qkv
    if kernels in GEMV_PATHS:
        assert isinstance(linear, K.GemvLinear) and linear.weight.dtype == (torch.int8 if quantize == "w8a8" else torch.uint8)
    ids = torch.tensor([[1, 5, 9, 14, 3, 8, 2, 7]])
    logits = {path: engine.forward(ids)[0] for path, engine in engines.items()}
    tolerance = {"rtol": 1e-4, "atol": 1e-4}
    if quantize == "int4" and native.int4_int8_dot(devices.native_isa(kernels) or "avx2"):
        # the GEMV's int8 activations per group of 32 (these 8 rows too): each x within half a step of 1/127 of
        # its group's largest |x|
        tolerance = {"rtol": 0.02, "atol": 0.02 * logits["torch"].abs().max().item()}
    torch.testing.assert_close(logits[kernels], logits["torch"], **tolerance)
    steps = {}
    with torch.inference_mode():
        for path, engine in engines.items():
            engine._prefill(ids, torch.ones_like(ids))
            steps[path] = [engine._decode(torch.tensor([4 + i])).clone() for i in range(4)]
    for got, expected in zip(steps[kernels], steps["torch"]):
        torch.testing.assert_close(got, expected, **tolerance)


@pytest.mark.skipif(not GEMV_PATHS, reason="no native GEMV path on this CPU")
@pytest.mark.parametrize("quantize, decode, prompt", [("int4", "ascend_nb::gemv int4", "ascend_nb::dequant_linear int4"),
                                                      ("w8a8", "ascend_nb::gemv w8a8", "aten::_int_mm"),
                                                      ("int8", "ascend_nb::gemv int8", "ascend_nb::dequant_linear int8")])
def test_the_trace_names_the_kernel_each_quantized_linear_ran(tiny_llama_dir, quantize, decode, prompt):
    from ascend_nb.inspect import linear_kernels

    engine = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="bfloat16", backend="accelerated", quantize=quantize)
    table = linear_kernels(engine, input_len=16)
    kernels = {phase: set(group["kernel"]) for phase, group in table.groupby("phase")}
    amx = " amx" if AMX and prompt.startswith("ascend_nb::dequant_linear") else ""  # the default path is AMX's here
    assert decode in kernels["decode"] and prompt + amx in kernels["prefill"]
    assert not {"aten::mm", "aten::linear"} & kernels["decode"]  # decoding reads the quantized bytes: no GEMM
    assert (table["calls"] > 0).all() and (table["ms"] >= 0).all()
    # the plain twin, a dequantize-then-GEMM, shows as such
    twin = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="bfloat16", backend="accelerated", quantize=quantize,
                          kernels="torch")
    twin_decode = set(linear_kernels(twin, input_len=16).query("phase == 'decode'")["kernel"])
    assert decode not in twin_decode and {"aten::mm", "aten::_int_mm"} & twin_decode


@pytest.mark.parametrize("n", [576, 64, 96, 40, 4096])
def test_the_rotation_is_orthogonal_seeded_and_undone(n):
    """Q Q^T = I for every kind of hidden size (Hadamard factors, 12 x 12 Paley blocks, a random odd part), the same
    Q on every load, and ``undo`` inverts ``apply``; every entry spread (no channel left where it was)."""
    from ascend_nb.engine.accelerated.rotate import Rotation

    q = Rotation(n).matrix().double()
    torch.testing.assert_close(q @ q.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-5)
    assert torch.equal(Rotation(n).matrix(), q.float()) and not torch.equal(Rotation(n, seed=1).matrix(), q.float())
    x = randn(3, n, seed=1)
    torch.testing.assert_close(Rotation(n).undo(Rotation(n).apply(x)), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(Rotation(n).apply(x), x @ q.float(), rtol=1e-5, atol=1e-5)
    if n in (576, 64, 4096):  # all Hadamard: every entry +-1/sqrt(n)
        torch.testing.assert_close(q.abs(), torch.full_like(q, n ** -0.5), rtol=1e-5, atol=0)


def test_a_folded_layer_computes_the_same_layer_on_the_rotated_stream(tiny_llama_dir):
    """The rotation's folding is exact arithmetic: one decoder layer run in float64 on ``h Q`` with the folded
    tensors gives the original layer's output times ``Q`` (up to the float32 the rotation is computed in),
    with norm weights of 1 and other tensors."""
    from ascend_nb.engine.accelerated.model import rope_tables
    from ascend_nb.engine.accelerated.rotate import Rotation
    from ascend_nb.models.checkpoint import Checkpoint
    from ascend_nb.models.dims import LlamaDims
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_llama_dir)
    dims, checkpoint = LlamaDims.from_config(config), Checkpoint(tiny_llama_dir)
    p = "model.layers.0."
    names = dict(input_norm="input_layernorm", q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
                 o="self_attn.o_proj", post_norm="post_attention_layernorm", gate="mlp.gate_proj", up="mlp.up_proj",
                 down="mlp.down_proj")
    original = {key: checkpoint.read(p + name + ".weight", torch.float64) for key, name in names.items()}
    original["input_norm"] = original["input_norm"] + torch.linspace(0.5, 2, dims.hidden_size, dtype=torch.float64)
    cos, sin = rope_tables(config, 12, torch.float64, torch.device("cpu"))
    twin = K.Kernels()

    def layer(t: dict, h: torch.Tensor) -> torch.Tensor:
        x = twin.rms_norm(h, t["input_norm"], dims.rms_norm_eps)
        qkv = F.linear(x, torch.cat((t["q"], t["k"], t["v"])))[None]
        q, k, v = twin.split_rotate(qkv, cos[None, None], sin[None, None], dims.num_attention_heads,
                                    dims.num_key_value_heads)
        attended = twin.prefill_attention(q, k, v, None, dims.head_dim ** -0.5)[0].transpose(0, 1).reshape(12, -1)
        mid = h + F.linear(attended, t["o"])
        x = twin.rms_norm(mid, t["post_norm"], dims.rms_norm_eps)
        act = F.silu(F.linear(x, t["gate"])) * F.linear(x, t["up"])
        return mid + F.linear(act, t["down"])

    rotation, folded = Rotation(dims.hidden_size), {key: tensor.clone() for key, tensor in original.items()}
    rotation.fold_layer(folded)  # in place
    h = randn(12, dims.hidden_size, dtype=torch.float64, seed=3)
    h[:, 5] *= 30  # an outlier channel
    expected = layer(original, h) @ rotation.matrix().double()
    torch.testing.assert_close(layer(folded, h @ rotation.matrix().double()), expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(folded["input_norm"], torch.ones_like(h[0])) and not torch.equal(folded["up"], original["up"])


def test_w8a8_runs_on_a_rotated_stream_and_reports_in_the_models_basis(embedded_model_dir, monkeypatch):
    """w8a8's logits track bf16's more closely rotated than on the plain stream; its hidden states come back in the
    checkpoint's basis (per layer close to bf16's: rotated ones would be unrelated), and the logit lens through
    them gives logits close to bf16's lens (through a head that forgot the rotation they would be unrelated)."""
    import dataclasses

    from ascend_nb.inspect.engines import lens_head

    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314, 253, 1492, 30, 378, 20082, 2343, 28, 285]])

    def run(quantize: str | None):
        engine = ascend_nb.load(embedded_model_dir, device="cpu", dtype="bfloat16", backend="accelerated",
                                quantize=quantize, max_seq_len=64)
        logits, hidden = engine.forward(ids, output_hidden_states=True)
        return engine, logits.double(), hidden

    (bf16, reference, hidden_ref), (w8a8, rotated, hidden) = run(None), run("w8a8")
    assert w8a8.model.rotation is not None and bf16.model.rotation is None
    for ref, got in zip(hidden_ref, hidden, strict=True):
        assert F.cosine_similarity(got.double(), ref.double(), dim=-1).min() > 0.98
    lens_ref, lens = lens_head(bf16), lens_head(w8a8)
    for layer in (1, len(hidden) // 2, -2):
        assert F.cosine_similarity(lens(hidden[layer]), lens_ref(hidden_ref[layer]), dim=-1).min() > 0.95
    monkeypatch.setitem(QUANT_FORMATS, "w8a8", dataclasses.replace(QUANT_FORMATS["w8a8"], rotated=False))
    _, plain, _ = run("w8a8")
    assert (rotated - reference).norm() < (plain - reference).norm()


def test_a_quantized_head_is_read_a_block_of_rows_at_a_time(tiny_llama_dir, monkeypatch):
    """The untied LM head goes to the quantizer as checkpoint rows, never whole in the model dtype: the same
    quantized values as from the whole tensor, read in blocks no larger than the quantizer's."""
    from ascend_nb.engine.accelerated import quantize as Q
    from ascend_nb.engine.accelerated.model import CheckpointRows
    from ascend_nb.models.checkpoint import Checkpoint

    checkpoint = Checkpoint(tiny_llama_dir)
    whole = checkpoint.read("lm_head.weight", torch.bfloat16)
    rows = CheckpointRows(checkpoint, "lm_head.weight", torch.bfloat16, torch.device("cpu"))
    monkeypatch.setattr(Q, "CHUNK_ELEMENTS", 64 * 10)  # ten rows a block of this 64-wide head
    reads = []
    real_read = checkpoint.read
    monkeypatch.setattr(checkpoint, "read", lambda *args: reads.append(args[3:]) or real_read(*args))
    for quantizer in (Q.quantize_int8, Q.quantize_int4):
        got, expected = vars(quantizer(rows)), vars(quantizer(whole))
        assert all(torch.equal(got[key], expected[key]) for key in got if isinstance(got[key], torch.Tensor))
    assert reads and all(stop - start <= 10 for start, stop in reads)
