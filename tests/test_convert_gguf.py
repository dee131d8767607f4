"""GGUF -> safetensors with a tiny llama.cpp-layout file: exact weights back (q/k un-permuted), shards, verification."""

import json

import pytest
import torch

from ascend_nb.convert.sources.gguf import convert_gguf
from ascend_nb.convert.sources.gguf_reader import read_gguf_state_dict
from ascend_nb.convert.shards import read_weight_map
from ascend_nb.models.registry import METADATA_FILE
from tests.tiny_checkpoints import make_tiny_llama, write_tiny_gguf


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("llama") / "hf")


@pytest.fixture(scope="module")
def gguf_file(original):
    return write_tiny_gguf(original, original.parent / "tiny-f32.gguf")


def test_sharded_conversion_reproduces_the_original_model(original, gguf_file, tmp_path):
    from transformers import AutoModelForCausalLM

    result = convert_gguf(gguf_file, tmp_path / "out", max_shard_size="40KB", progress=False,
                          metadata={"model": "smollm2-135m-instruct"})
    assert len(set(read_weight_map(result.path).values())) > 2
    assert json.loads((result.path / METADATA_FILE).read_text()) == {"model": "smollm2-135m-instruct"}
    assert json.loads((result.path / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert result.verification.passed
    ids = torch.tensor([[1, 40, 41, 300, 7, 99]])
    with torch.inference_mode():
        expected = AutoModelForCausalLM.from_pretrained(original, dtype=torch.float32)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(result.path, dtype=torch.float32)(ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    table = result.tensor_table()
    transforms = dict(zip(table["name"], table["transform"]))
    assert transforms["model.layers.0.self_attn.k_proj.weight"] == "dequantize F32, un-permute rotary rows"


def test_read_gguf_state_dict_matches_the_original(original, gguf_file):
    from safetensors.torch import load_file

    tensors, meta = read_gguf_state_dict(gguf_file)
    assert meta["general.architecture"] == "llama"
    reference = load_file(original / "model.safetensors")
    assert tensors.keys() == reference.keys()
    assert all(torch.equal(tensors[name], reference[name]) for name in reference)
