"""The accelerated backend against the transformers reference on tiny random models of every
Llama-family shape we load: GQA with an untied head, MQA with a tied head (SmolLM2-like),
converted Aquila and converted Baichuan2 (MHA, untied, eps 1e-6, rope base 10000, normed head)."""


import pytest
import torch

import ascend_nb
from ascend_nb import GenerationParams
from ascend_nb import device as devices
from ascend_nb.precision import greedy_divergence
from ascend_nb.errors import AscendNbError
from tests.heavy import heavy_after_first
from tests.tiny_checkpoints import random_llama

PROMPT = [1, 504, 3458, 282, 4649, 314, 77, 12, 90]


@pytest.fixture(scope="module")
def tied_mqa_dir(tmp_path_factory, tiny_llama_dir):
    """SmolLM2's features at tiny size: tied embeddings, one kv head shared by 4, rope base 100000."""
    return random_llama(tmp_path_factory.mktemp("tied-mqa"), tiny_llama_dir, seed=1, hidden_size=64,
                        intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                        max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=True, rope_theta=100000.0)


@pytest.fixture(scope="module")
def converted_dirs(tmp_path_factory):
    """Tiny checkpoints in the Aquila-7B and Baichuan2-7B-Chat download formats, converted to Llama."""
    from ascend_nb.convert.sources.aquila import convert_aquila
    from ascend_nb.convert.sources.baichuan2 import convert_baichuan2
    from ascend_nb.convert.demo_checkpoints import make_tiny_aquila, make_tiny_baichuan2

    root = tmp_path_factory.mktemp("converted")
    make_tiny_aquila(root / "aquila-src")
    make_tiny_baichuan2(root / "baichuan2-src")
    convert_aquila(root / "aquila-src", root / "aquila", verify=False, progress=False)
    convert_baichuan2(root / "baichuan2-src", root / "baichuan2", verify=False, progress=False)
    return {"aquila": root / "aquila", "baichuan2": root / "baichuan2"}


@pytest.fixture(scope="module", params=["gqa-untied", "mqa-tied", "aquila", "baichuan2"])
def engines(request, tiny_llama_dir, tied_mqa_dir, converted_dirs):
    """The reference, the accelerated backend and its int8 variant of one tiny model, in float32."""
    model_dir = {"gqa-untied": tiny_llama_dir, "mqa-tied": tied_mqa_dir, **converted_dirs}[request.param]
    return {"reference": ascend_nb.load(model_dir, device="cpu", dtype="float32"),
            "accelerated": ascend_nb.load(model_dir, device="cpu", dtype="float32", backend="accelerated"),
            "int8": ascend_nb.load(model_dir, device="cpu", dtype="float32", backend="accelerated", quantize="int8")}


def cosines(reference, engine, ids):
    """Per-position cosine similarity of two engines' float32 logits for ``ids`` ``[1, T]``."""
    return torch.nn.functional.cosine_similarity(reference.forward(ids)[0][0], engine.forward(ids)[0][0], dim=-1)


def prompt_for(engine, length=48, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, engine.config.vocab_size, (1, length), generator=generator)


@pytest.fixture(scope="module")
def engines_bf16(tiny_llama_dir):
    """transformers in bf16 on the tiny GQA model, and the model's directory."""
    return ascend_nb.load(tiny_llama_dir, device="cpu", dtype="bfloat16"), tiny_llama_dir


@pytest.fixture(scope="module")
def accelerated(tiny_llama_dir):
    return ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated")


def test_logits_and_hidden_states_match_transformers(engines):
    reference, accelerated = engines["reference"], engines["accelerated"]
    ids = prompt_for(reference)
    ref_logits, ref_hidden = reference.forward(ids, output_hidden_states=True)
    logits, hidden = accelerated.forward(ids, output_hidden_states=True)
    cosine = torch.nn.functional.cosine_similarity(ref_logits[0], logits[0], dim=-1)
    assert cosine.min() >= 0.99999
    assert len(hidden) == len(ref_hidden)
    for ours, theirs in zip(hidden, ref_hidden):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


GREEDY = GenerationParams(max_new_tokens=16, ignore_eos=True)  # not the model's defaults: Baichuan2's sample


def test_greedy_tokens_match_transformers(engines):
    reference, accelerated = engines["reference"], engines["accelerated"]
    prompt = prompt_for(reference, length=12, seed=3)[0].tolist()
    expected = reference.generate(prompt, GREEDY).token_ids
    assert accelerated.generate(prompt, GREEDY).token_ids == expected


def test_padded_batch_logits_equal_unpadded(accelerated):
    short, long = PROMPT[:4], PROMPT
    padded = torch.tensor([[accelerated.pad_token_id] * (len(long) - len(short)) + short, long])
    mask = torch.tensor([[0] * (len(long) - len(short)) + [1] * len(short), [1] * len(long)])
    with torch.inference_mode():
        batch = accelerated._prefill(padded, mask)
        alone = accelerated._prefill(torch.tensor([short]), torch.ones(1, len(short), dtype=torch.long))
    torch.testing.assert_close(batch[0], alone[0], rtol=1e-5, atol=1e-5)


def test_static_cache_overflow_is_refused_before_any_work(tiny_llama_dir):
    engine = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated", max_seq_len=16)
    assert engine.model.k_cache == []  # nothing allocated yet
    with pytest.raises(AscendNbError, match="exceeds max_seq_len 16"):
        engine.generate([5] * 10, max_new_tokens=7)
    assert engine.model.k_cache == []
    assert len(engine.generate([5] * 10, max_new_tokens=6, ignore_eos=True).token_ids) == 6
    assert engine.model.k_cache[0].shape == (1, engine.config.num_key_value_heads, 16, engine.config.head_dim)
    with torch.inference_mode():
        engine._decode(torch.tensor([5]))  # 10 prompt + 5 decoded tokens were cached: slot 15 is the last
        with pytest.raises(AscendNbError, match="cache is full"):
            engine._decode(torch.tensor([5]))


def test_int8_logits_stay_close_to_transformers(engines):
    reference, quantized = engines["reference"], engines["int8"]
    assert quantized.quantize == "int8" and "int8" in repr(quantized)
    assert cosines(reference, quantized, prompt_for(reference)).min() >= 0.99


def test_bf16_tracks_fp32(tiny_llama_dir):
    reference = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32")
    engine = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="bfloat16", backend="accelerated")
    assert cosines(reference, engine, prompt_for(reference)).min() >= 0.99


def test_bad_options_are_clear_errors(tiny_llama_dir, monkeypatch):
    with pytest.raises(AscendNbError, match="unknown quantize 'int3'"):
        ascend_nb.load(tiny_llama_dir, device="cpu", backend="accelerated", quantize="int3")
    monkeypatch.setattr("shutil.which", lambda name: None)  # a CPU machine without a C++ compiler
    with pytest.raises(AscendNbError, match="graphs are not available on cpu.*C\\+\\+ compiler"):
        ascend_nb.load(tiny_llama_dir, device="cpu", backend="accelerated", graphs=True)


def test_unsupported_architecture_is_a_clear_error(tmp_path, tiny_llama_dir):
    import shutil

    from transformers import AutoConfig, LlamaForCausalLM

    target = tmp_path / "biased"
    shutil.copytree(tiny_llama_dir, target)
    config = AutoConfig.from_pretrained(target)
    config.attention_bias = True
    LlamaForCausalLM(config).save_pretrained(target)  # a sound biased model: its weights hold the biases
    with pytest.raises(AscendNbError, match="no projection biases"):
        ascend_nb.load(target, device="cpu", backend="accelerated")


def test_cli_generate_with_the_accelerated_backend(tiny_llama_dir, capsys):
    import json

    from ascend_nb.cli import main

    assert main(["generate", "Hello", "--raw", "--json", "--model", str(tiny_llama_dir), "--backend", "accelerated",
                 "--device", "cpu", "--dtype", "float32", "--max-new-tokens", "5"]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["backend"] == "accelerated" and reply["tokens"] <= 5


QUICKSTART = ["What is the capital of France?", "Name three primary colors.", "What is 12 times 12?"]


@pytest.mark.slow
def test_embedded_fp32_logits_match_at_every_position(embedded_engine):
    accelerated = ascend_nb.load(device="cpu", dtype="float32", backend="accelerated", max_seq_len=512)
    cosine = cosines(embedded_engine, accelerated, prompt_for(embedded_engine, length=256))
    assert cosine.shape == (256,) and cosine.min() >= 0.99999


@pytest.mark.slow
@pytest.mark.parametrize("kernels", heavy_after_first(devices.runnable_kernel_paths("cpu")))  # fastest (default) first
def test_embedded_bf16_follows_transformers_on_the_quickstart_prompts(kernels):
    """bf16 on every kernel path this CPU runs against transformers' bf16 (ATen GEMMs): different
    kernels round differently, so greedy replies follow the closeness rule rather than being equal."""
    reference = ascend_nb.load(device="cpu", dtype="bfloat16")
    accelerated = ascend_nb.load(device="cpu", dtype="bfloat16", backend="accelerated", max_seq_len=256, kernels=kernels)
    for question in QUICKSTART:
        prompt = reference.encode_chat([{"role": "user", "content": question}], 32)
        expected = reference.generate(prompt, max_new_tokens=32).token_ids
        got = accelerated.generate(prompt, max_new_tokens=32).token_ids
        assert greedy_divergence(reference, accelerated, prompt, expected, got) is None, question


@pytest.mark.parametrize("kernels", devices.runnable_kernel_paths("cpu"))
def test_bf16_follows_transformers_on_every_kernel_path(engines_bf16, kernels):
    reference, model_dir = engines_bf16
    accelerated = ascend_nb.load(model_dir, device="cpu", dtype="bfloat16", backend="accelerated", kernels=kernels)
    assert accelerated.placement.kernels == kernels and f"kernels={kernels!r}" in repr(accelerated)
    prompt = prompt_for(reference, length=12, seed=3)[0].tolist()
    expected = reference.generate(prompt, GREEDY).token_ids
    got = accelerated.generate(prompt, GREEDY).token_ids
    assert greedy_divergence(reference, accelerated, prompt, expected, got) is None
    assert cosines(reference, accelerated, prompt_for(reference)).min() >= 0.99


@pytest.mark.slow
def test_embedded_int8_keeps_the_answer(embedded_engine):
    quantized = ascend_nb.load(device="cpu", dtype="bfloat16", backend="accelerated", quantize="int8", max_seq_len=512)
    assert cosines(embedded_engine, quantized, prompt_for(embedded_engine, length=256)).min() >= 0.99
    answer = quantized.chat([{"role": "user", "content": QUICKSTART[0]}], max_new_tokens=32)
    assert "Paris" in answer.text


GEMV_PATHS = [path for path in devices.runnable_kernel_paths("cpu") if devices.native_isa(path)]


@pytest.mark.parametrize("kernels", GEMV_PATHS)
@pytest.mark.parametrize("quantize", [None, "int8", "w8a8", "int4"])
def test_fused_decode_layer_is_the_python_layer_bit_for_bit(tiny_llama_dir, tied_mqa_dir, kernels, quantize):
    """On the GEMV paths each decode layer is one native call (the same ops called from C++): every
    decode step's logits are those of the op-by-op Python layer exactly, for a left-padded batch."""
    for model_dir in (tiny_llama_dir, tied_mqa_dir):
        engine = ascend_nb.load(model_dir, device="cpu", dtype="bfloat16", backend="accelerated", kernels=kernels,
                                quantize=quantize)
        kernels_used, layer_calls = engine.model.kernels, []
        real_decode_layer = kernels_used.decode_layer
        kernels_used.decode_layer = lambda *args: layer_calls.append(1) or real_decode_layer(*args)  # counts, then runs it
        padded = torch.tensor([[engine.pad_token_id] * 5 + PROMPT[:4], PROMPT])
        mask = torch.tensor([[0] * 5 + [1] * 4, [1] * len(PROMPT)])
        steps = {}
        with torch.inference_mode():
            for fused in (True, False):
                engine.model.fused_decode = fused
                engine._prefill(padded, mask)
                steps[fused] = [engine._decode(torch.tensor([7 + i, 11 + i])).clone() for i in range(6)]
        assert len(layer_calls) == 6 * engine.config.num_hidden_layers  # the fused steps ran it, the others did not
        assert all(torch.equal(a, b) for a, b in zip(steps[True], steps[False]))


def test_layers_that_are_not_all_native_gemvs_run_op_by_op(tiny_llama_dir):
    float32 = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated")  # MKL linears
    aten = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="bfloat16", backend="accelerated", kernels="cpu-aten")
    assert not float32.model.fused_decode and not aten.model.fused_decode


@pytest.mark.skipif(not GEMV_PATHS, reason="no native GEMV path on this CPU")
def test_float16_int8_decodes_op_by_op_on_a_gemv_path(tiny_llama_dir):
    """int8 weights are native GEMVs, but the native ops take float32 / bf16 activations only."""
    engine = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float16", backend="accelerated", quantize="int8")
    assert not engine.model.fused_decode
    assert len(engine.generate(PROMPT, max_new_tokens=3, ignore_eos=True).token_ids) == 3
