"""Baichuan2 -> Llama: the converted model (through transformers' LlamaForCausalLM, no remote code)
computes what the original architecture computes, and its tokenizer encodes as Baichuan's SentencePiece."""

import json
import math

import pytest
import sentencepiece
import torch

import ascend_nb
from ascend_nb.cli import main
from ascend_nb.convert import verify
from ascend_nb.convert.sources import baichuan2
from ascend_nb.atomic import verify_manifest
from ascend_nb.errors import AscendNbError
from ascend_nb.models.templates import encode_chat
from tests.tiny_checkpoints import make_tiny_baichuan2, partial_outputs, state_dict_of

MIXED = ("百川2是一个大语言模型。Baichuan2 is a large language model, 7B parameters!",
         "  空格  and\ttabs\n换行 123456 😀")


def original_baichuan2_logits(src, input_ids: torch.Tensor) -> torch.Tensor:
    """Baichuan2-7B's forward written out independently in float64: W_pack split per head, rotary as
    complex rotation of (x_i, x_{i+d/2}) pairs, explicit causal softmax, NormHead normalization."""
    config = json.loads((src / "config.json").read_text())
    w = {k: v.double() for k, v in state_dict_of(src).items()}
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    d, eps, n = hidden // heads, config["rms_norm_eps"], input_ids.shape[-1]

    def norm(x, weight):
        return weight * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    freqs = torch.outer(torch.arange(n, dtype=torch.float64), 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d))
    rotation = torch.polar(torch.ones_like(freqs), freqs)  # [n, d/2]

    def rope(x):  # x [heads, n, d], pairs (i, i + d/2)
        z = torch.complex(x[..., : d // 2], x[..., d // 2:]) * rotation
        return torch.cat([z.real, z.imag], dim=-1)

    x = w["model.embed_tokens.weight"][input_ids]
    mask = torch.full((n, n), -math.inf, dtype=torch.float64).triu(1)
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = norm(x, w[p + "input_layernorm.weight"])
        packed = torch.einsum("th,oh->to", h, w[p + "self_attn.W_pack.weight"]).view(n, 3, heads, d)
        q, k, v = (packed[:, i].transpose(0, 1) for i in range(3))
        q, k = rope(q), rope(k)
        probs = torch.softmax(torch.einsum("hqd,hkd->hqk", q, k) / math.sqrt(d) + mask, dim=-1)
        x = x + torch.einsum("hqk,hkd->qhd", probs, v).reshape(n, hidden) @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + (gate * torch.sigmoid(gate) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    head = w["lm_head.weight"]
    return norm(x, w["model.norm.weight"]) @ (head / head.norm(dim=1, keepdim=True)).T


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_tiny_baichuan2(tmp_path_factory.mktemp("baichuan2") / "Baichuan2-7B-Chat")


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    return baichuan2.convert_baichuan2(source, tmp_path_factory.mktemp("out") / "baichuan2-llama", progress=False)


def test_converted_directory_is_plain_llama(converted):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    config = json.loads((converted.path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert "auto_map" not in config and "tokenizer_class" not in config
    assert not list(converted.path.glob("*.py")) and not list(converted.path.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(converted.path, dtype=torch.float32)
    assert type(model) is LlamaForCausalLM
    assert verify_manifest(converted.path) == []


def test_logits_equal_the_original_architecture(source, converted):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(converted.path, dtype=torch.float32).eval()
    ids = torch.tensor(sentencepiece.SentencePieceProcessor(model_file=str(source / "tokenizer.model")).encode(MIXED[0]))
    with torch.inference_mode():
        got = model(input_ids=ids[None]).logits[0].double()
    expected = original_baichuan2_logits(source, ids)
    assert expected.abs().max() > 1  # logits are not trivially small
    assert (got - expected).abs().max() < 1e-4


def test_package_reference_agrees_with_the_independent_one(source):
    arch, weight = verify.source_model(source, "baichuan2")
    ids = torch.tensor([[5, 300, 400, 17, 195, 196, 2]])
    from ascend_nb.convert.original import original_logits

    torch.testing.assert_close(original_logits(arch, weight, ids)[0], original_baichuan2_logits(source, ids[0]),
                               rtol=0, atol=1e-10)


def test_conversion_report(converted):
    report = converted.verification
    assert report.passed and report.max_abs_err < 1e-4 and report.greedy_agreement == 1.0
    assert json.loads((converted.path / "conversion.json").read_text())["verification"]["passed"]
    table = converted.tensor_table()
    k = table.set_index("name").loc["model.layers.1.self_attn.k_proj.weight"]
    assert (k["source"], k["transform"]) == ("model.layers.1.self_attn.W_pack.weight", "W_pack rows 64:128")
    assert "inv_freq" not in " ".join(table.name)


def test_tokenizer_encodes_like_sentencepiece(source, converted):
    from transformers import AutoTokenizer

    processor = sentencepiece.SentencePieceProcessor(model_file=str(source / "tokenizer.model"))
    tokenizer = AutoTokenizer.from_pretrained(converted.path)
    for text in MIXED:
        assert tokenizer(text).input_ids == processor.encode(text)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 0)
    assert (converted.path / "tokenizer.model").read_bytes() == (source / "tokenizer.model").read_bytes()


def test_chat_template_and_generation_config_kept(source, converted):
    from transformers import AutoTokenizer

    generation = json.loads((converted.path / "generation_config.json").read_text())
    assert (generation["user_token_id"], generation["assistant_token_id"], generation["top_k"]) == (195, 196, 5)
    tokenizer = AutoTokenizer.from_pretrained(converted.path)
    messages = [{"role": "system", "content": "你是助手"}, {"role": "user", "content": "你好 world"},
                {"role": "assistant", "content": "你好！"}, {"role": "user", "content": "再见"}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert rendered["input_ids"] == encode_chat("baichuan2", tokenizer, messages, budget=256)
    assert rendered["input_ids"][-1] == 196


def test_ascend_nb_loads_it_as_baichuan2(converted):
    engine = ascend_nb.load(converted.path, device="cpu", dtype="float32")
    assert engine.spec.name == "baichuan2-7b-chat" and engine.spec.template == "baichuan2"
    result = engine.chat([{"role": "user", "content": "你好"}], max_new_tokens=3, do_sample=False)
    assert len(result.token_ids) == 3


def test_cli_sharded_bf16(source, tmp_path, capsys):
    dst = tmp_path / "bf16"
    assert main(["convert", "baichuan2", str(source), str(dst), "--dtype", "bfloat16",
                 "--max-shard-size", "40KB", "--quiet"]) == 0
    assert "PASS" in capsys.readouterr().out
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) > 2 and all((dst / f).is_file() for f in files)
    assert json.loads((dst / "config.json").read_text())["dtype"] == "bfloat16"


def test_forgotten_norm_head_is_caught(source, tmp_path, monkeypatch):
    monkeypatch.setattr(baichuan2, "_normalized_head", lambda source, name, dtype=None: source.get(name))
    dst = tmp_path / "broken"
    with pytest.raises(AscendNbError, match="does not compute what the original does"):
        baichuan2.convert_baichuan2(source, dst, progress=False)
    assert partial_outputs(dst) == []


@pytest.mark.parametrize("edit, message", [
    ({"architectures": ["BaiChuanForCausalLM"]}, "Baichuan \\(1\\), not Baichuan2"),
    ({"max_position_embeddings": None}, "ALiBi"),
    ({"hidden_size": 5120}, "ALiBi"),
])
def test_non_llama_baichuan_variants_are_refused(source, tmp_path, edit, message):
    import shutil

    variant = tmp_path / "variant"
    shutil.copytree(source, variant)
    config = json.loads((variant / "config.json").read_text())
    config.update({k: v for k, v in edit.items() if v is not None})
    for key in (k for k, v in edit.items() if v is None):
        del config[key]
    (variant / "config.json").write_text(json.dumps(config))
    with pytest.raises(AscendNbError, match=message):
        baichuan2.convert_baichuan2(variant, tmp_path / "out", progress=False)
    assert partial_outputs(tmp_path / "out") == []


def test_one_converter_table_for_cli_and_notebooks(source):
    from ascend_nb.convert import converter, original_encoder

    assert converter("baichuan2") is baichuan2.convert_baichuan2
    processor = sentencepiece.SentencePieceProcessor(model_file=str(source / "tokenizer.model"))
    assert original_encoder("baichuan2", source)(MIXED[1]) == processor.encode(MIXED[1])
    with pytest.raises(AscendNbError, match="unknown conversion kind 'llama2': use one of gguf, safetensors"):
        converter("llama2")
    with pytest.raises(AscendNbError, match="gguf sources keep their tokenizer"):
        original_encoder("gguf", source)
