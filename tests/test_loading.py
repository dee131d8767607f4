"""ascend_nb.load: registry names, local directories, detection and clear errors for bad input."""

import json
import shutil

import pytest

import ascend_nb
from ascend_nb.errors import AscendNbError
from ascend_nb.models.registry import MODELS, detect_spec


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(AscendNbError, match="unknown model 'qwen-7b'.*smollm2-135m-instruct.*aquila-7b.*baichuan2-7b-chat"):
        ascend_nb.load("qwen-7b")


@pytest.mark.parametrize("name", ["aquila-7b", "baichuan2-7b-chat"])
def test_local_only_models_ask_for_a_path(name):
    with pytest.raises(AscendNbError, match="not bundled.*ascend-nb convert"):
        ascend_nb.load(name)


def test_missing_directory(tmp_path):
    with pytest.raises(AscendNbError, match="does not exist"):
        ascend_nb.load(tmp_path / "nope")


def test_directory_without_config(tmp_path):
    with pytest.raises(AscendNbError, match="no config.json"):
        ascend_nb.load(tmp_path)


def _copy_without_weights(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    return dst


def test_corrupt_config(tmp_path, tiny_llama_dir):
    model_dir = _copy_without_weights(tiny_llama_dir, tmp_path / "m")
    (model_dir / "config.json").write_text('{"vocab_size": 12,')
    with pytest.raises(AscendNbError, match="config.json is corrupt"):
        ascend_nb.load(model_dir)


def test_directory_without_weights(tmp_path, tiny_llama_dir):
    with pytest.raises(AscendNbError, match="no weights"):
        ascend_nb.load(_copy_without_weights(tiny_llama_dir, tmp_path / "m"))


def test_remote_code_is_off_unless_asked(tmp_path, tiny_llama_dir):
    model_dir = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_baichuan.BaichuanForCausalLM"}
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(AscendNbError, match="needs remote code.*ascend-nb convert"):
        ascend_nb.load(model_dir)


def test_bad_backend_device_dtype_and_max_seq_len(tiny_llama_dir):
    with pytest.raises(AscendNbError, match="unknown backend"):
        ascend_nb.load(tiny_llama_dir, backend="onnx")
    with pytest.raises(AscendNbError, match="unknown device"):
        ascend_nb.load(tiny_llama_dir, device="tpu")
    with pytest.raises(AscendNbError, match="unknown dtype"):
        ascend_nb.load(tiny_llama_dir, dtype="fp8")
    with pytest.raises(AscendNbError, match="max_seq_len must be in 1..256"):
        ascend_nb.load(tiny_llama_dir, max_seq_len=4096)


def test_engine_settings(tiny_llama_dir):
    engine = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="bfloat16", max_seq_len=128)
    assert engine.max_seq_len == 128 and str(engine.dtype) == "torch.bfloat16"
    assert engine.spec.template == "chatml"  # the tokenizer carries a chat template
    assert 2 in engine.eos_token_ids


def test_detection_by_metadata_architecture_and_vocab(tmp_path):
    assert detect_spec(tmp_path, {"architectures": ["AquilaForCausalLM"]}, False).name == "aquila-7b"
    assert detect_spec(tmp_path, {"architectures": ["LlamaForCausalLM"], "vocab_size": 125696}, False).name == "baichuan2-7b-chat"
    assert detect_spec(tmp_path, {"architectures": ["LlamaForCausalLM"], "vocab_size": 32000}, False).template == "plain"
    (tmp_path / "ascend_nb.json").write_text('{"model": "aquila-7b"}')
    assert detect_spec(tmp_path, {"vocab_size": 32000}, True) is MODELS["aquila-7b"]


def test_the_accelerated_backend_refuses_remote_code_in_one_line(tiny_llama_dir):
    """It runs Llama-format weights only: trust_remote_code=True was accepted and silently ignored."""
    with pytest.raises(AscendNbError, match="the accelerated backend runs Llama-format weights, not remote code"):
        ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated", trust_remote_code=True)
