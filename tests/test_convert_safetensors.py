"""pytorch_model*.bin -> sharded safetensors: same tensors (optionally cast), one shard in memory at a time."""

import json

import pytest
import torch
from safetensors.torch import load_file

from ascend_nb.convert import shards
from ascend_nb.atomic import verify_manifest
from ascend_nb.convert.sources.bin_to_safetensors import convert_bin_to_safetensors
from ascend_nb.errors import AscendNbError
from tests.tiny_checkpoints import make_tiny_llama, state_dict_of


@pytest.fixture(scope="module")
def bin_llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("llama") / "src", weights="bin", shards=2)


def _all_tensors(directory):
    weight_map = shards.read_weight_map(directory)
    tensors = {}
    for file_name in set(weight_map.values()):
        tensors.update(load_file(directory / file_name))
    return tensors


def test_sharded_float16_copy(bin_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    result = convert_bin_to_safetensors(bin_llama, tmp_path / "out", dtype="float16", max_shard_size="20KB", progress=False)
    out = result.path
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 3 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    source, written = state_dict_of(bin_llama), _all_tensors(out)
    assert written.keys() == source.keys()
    assert all(torch.equal(written[name], tensor.half()) for name, tensor in source.items())
    assert index["metadata"]["total_size"] == sum(t.numel() * 2 for t in source.values())
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    for name in ("tokenizer.json", "tokenizer.model", "chat_template.jinja", "generation_config.json"):
        assert (out / name).read_bytes() == (bin_llama / name).read_bytes()
    assert not list(out.glob("*.bin")) and verify_manifest(out) == []
    assert result.verification.passed
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float16)
    assert next(model.parameters()).dtype == torch.float16


def test_files_are_cut_at_the_shard_size(bin_llama, tmp_path, monkeypatch):
    limit = 30_000
    saved, real_write = [], shards.write_shard_file

    def recording_write(path, tensors, done=None, metadata=None):
        saved.append(sum(t.nbytes for t in tensors))
        real_write(path, tensors, done, metadata)

    monkeypatch.setattr(shards, "write_shard_file", recording_write)
    convert_bin_to_safetensors(bin_llama, tmp_path / "out", max_shard_size=limit, progress=False)
    biggest_tensor = max(t.numel() * t.element_size() for t in state_dict_of(bin_llama).values())
    assert len(saved) > 2 and max(saved) <= max(limit, biggest_tensor)


def test_only_floating_tensors_are_cast_and_unknown_models_convert(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "something-else", "torch_dtype": "float32"}))
    torch.save({"w": torch.randn(3, 4), "steps": torch.arange(5)}, src / "pytorch_model.bin")
    result = convert_bin_to_safetensors(src, tmp_path / "out", dtype="bfloat16", progress=False)
    tensors = load_file(result.path / "model.safetensors")
    assert (tensors["w"].dtype, tensors["steps"].dtype) == (torch.bfloat16, torch.int64)
    assert "torch_dtype" not in json.loads((result.path / "config.json").read_text())


@pytest.mark.parametrize("text, expected", [("5GB", 5 * 10**9), ("500MB", 500 * 10**6), ("2GiB", 2 * 2**30),
                                            ("1.5kb", 1500), ("1024", 1024), (7, 7)])
def test_parse_size(text, expected):
    assert shards.parse_size(text) == expected


@pytest.mark.parametrize("text", ["five GB", "-1MB", "0", "3XB"])
def test_parse_size_rejects_nonsense(text):
    with pytest.raises(AscendNbError, match="size"):
        shards.parse_size(text)


def test_a_tensor_bigger_than_the_limit_gets_its_own_shard():
    def planned(name, rows):
        return shards.PlannedTensor(name, (rows, 10), torch.float32, lambda: torch.zeros(rows, 10))

    plan = shards.plan_shards([planned("a", 1), planned("big", 100), planned("b", 1), planned("c", 1)], 100)
    assert [[t.name for t in shard] for shard in plan] == [["a"], ["big"], ["b", "c"]]
