"""Aquila -> Llama: logits equal the original architecture (with its attention-logit clamp), the byte-level
BPE tokenizer is unchanged, bos 100006 / eos 100007 (here: vocab - 2 / vocab - 1) and the chat template kept."""

import json
import math
import shutil

import pytest
import torch
from tokenizers import Tokenizer

import ascend_nb
from ascend_nb.convert.sources.aquila import convert_aquila
from ascend_nb.models.templates import encode_chat
from tests.tiny_checkpoints import make_tiny_aquila, state_dict_of

TEXTS = ("Aquila 是智源研究院发布的大语言模型。It speaks English too!", "  numbers 2048 and\ttabs\n😀")


def original_aquila_logits(src, input_ids: torch.Tensor) -> torch.Tensor:
    """AquilaForCausalLM written out independently in float64, head by head, with its clamp of the
    scaled attention logits to [-1024, 1024] before the causal mask."""
    config = json.loads((src / "config.json").read_text())
    w = {k: v.double() for k, v in state_dict_of(src).items()}
    hidden, heads, n = config["hidden_size"], config["num_attention_heads"], len(input_ids)
    d, eps = hidden // heads, config["rms_norm_eps"]
    position = torch.arange(n, dtype=torch.float64)[:, None]
    theta = position * 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    cos, sin = torch.cos(theta).repeat(1, 2), torch.sin(theta).repeat(1, 2)

    def norm(x, weight):
        return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    def rotate(x):  # [n, d]
        return x * cos + torch.cat([-x[:, d // 2:], x[:, : d // 2]], dim=-1) * sin

    x = w["model.embed_tokens.weight"][input_ids]
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q, k, v = (h @ w[p + f"self_attn.{name}_proj.weight"].T for name in "qkv")
        outputs = []
        for head in range(heads):
            cols = slice(head * d, (head + 1) * d)
            scores = (rotate(q[:, cols]) @ rotate(k[:, cols]).T / math.sqrt(d)).clamp(-1024.0, 1024.0)
            scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -math.inf)
            outputs.append(torch.softmax(scores, dim=-1) @ v[:, cols])
        x = x + torch.cat(outputs, dim=-1) @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        x = x + (torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)) \
            @ w[p + "mlp.down_proj.weight"].T
    return norm(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_tiny_aquila(tmp_path_factory.mktemp("aquila") / "Aquila-7B")


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    return convert_aquila(source, tmp_path_factory.mktemp("out") / "aquila-llama", progress=False)


def test_logits_equal_the_original_architecture(source, converted):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(converted.path, dtype=torch.float32).eval()
    ids = torch.tensor(Tokenizer.from_file(str(source / "tokenizer.json")).encode(TEXTS[0]).ids)
    with torch.inference_mode():
        got = model(input_ids=ids[None]).logits[0].double()
    expected = original_aquila_logits(source, ids)
    assert expected.abs().max() > 1
    assert (got - expected).abs().max() < 1e-4
    assert converted.verification.passed and converted.verification.max_abs_err < 1e-4


def test_config_and_special_tokens(source, converted):
    from transformers import AutoTokenizer

    config = json.loads((converted.path / "config.json").read_text())
    source_config = json.loads((source / "config.json").read_text())
    assert config["model_type"] == "llama" and "auto_map" not in config
    assert (config["bos_token_id"], config["eos_token_id"]) == (source_config["bos_token_id"], source_config["eos_token_id"])
    tokenizer = AutoTokenizer.from_pretrained(converted.path)
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<s>", "</s>")
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (config["vocab_size"] - 2, config["vocab_size"] - 1)


def test_tokenizer_encodes_like_the_source(source, converted):
    from transformers import AutoTokenizer

    original = Tokenizer.from_file(str(source / "tokenizer.json"))
    as_transformers_reads_it = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(converted.path)
    for text in TEXTS:
        ids = tokenizer(text).input_ids
        assert ids == original.encode(text).ids == as_transformers_reads_it.encode(text, add_special_tokens=False)


def test_chat_template_matches_aquila_prompt(converted):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted.path)
    for messages in ([{"role": "user", "content": "你好"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]):
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert rendered.endswith("###Assistant:") and "###Human: " in rendered
        assert tokenizer.encode(rendered, add_special_tokens=False) == encode_chat("aquila", tokenizer, messages, 256)


def test_ascend_nb_loads_it_as_aquila(converted):
    engine = ascend_nb.load(converted.path, device="cpu", dtype="float32")
    assert (engine.spec.name, engine.spec.template) == ("aquila-7b", "aquila")


def test_source_without_tokenizer_json(source, tmp_path):
    """Some copies carry only vocab.json + merges.txt: transformers' reading of them is used."""
    from transformers import AutoTokenizer

    copy = tmp_path / "Aquila-7B"
    shutil.copytree(source, copy)
    (copy / "tokenizer.json").unlink()
    result = convert_aquila(copy, tmp_path / "out", progress=False, verify=False)
    tokenizer = AutoTokenizer.from_pretrained(result.path)
    assert tokenizer(TEXTS[0]).input_ids == Tokenizer.from_file(str(source / "tokenizer.json")).encode(TEXTS[0]).ids


def test_encoding_table_of_the_original_and_converted_tokenizers(source, converted):
    from ascend_nb.convert import converter, encoding_table, original_encoder

    assert converter("aquila") is convert_aquila
    original = Tokenizer.from_file(str(source / "tokenizer.json"))
    assert original_encoder("aquila", source)(TEXTS[0]) == original.encode(TEXTS[0]).ids
    table = encoding_table(original_encoder("aquila", source), converted.path, TEXTS)
    assert table["identical ids"].all() and table["text"].tolist() == list(TEXTS)
    shifted = encoding_table(lambda text: [i + 1 for i in original.encode(text).ids], converted.path, TEXTS)
    assert not shifted["identical ids"].any()  # a tokenizer that differs shows as False, not as a pass
