"""Broken model folders are refused in one line by both local backends and the CLI, never half-loaded.

Each case is a copy of the tiny random Llama (tests/conftest.py) broken the way downloads, edits and
hostile files break real ones.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import ascend_nb
from ascend_nb.cli import main
from ascend_nb.atomic import write_manifest
from ascend_nb.errors import AscendNbError
from ascend_nb.models.checksums import CACHE_FILE
from tests.tiny_checkpoints import truncate

PROMPT = [1, 504, 3458, 282, 4649, 314]
BACKENDS = ["transformers", "accelerated"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Checksum results go to this test's own $ASCEND_NB_HOME."""
    monkeypatch.setenv("ASCEND_NB_HOME", str(tmp_path / "home"))


class Payload:
    """Pickles as a call to os.system: whoever unpickles it runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def edit_json(path, change):
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def edit_tensors(model_dir, change):
    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def shard(model_dir):
    """Split model.safetensors into two shards and an index, as large checkpoints come."""
    tensors = load_file(model_dir / "model.safetensors")
    names = sorted(tensors)
    parts = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in parts.items():
        save_file({n: tensors[n] for n in part}, model_dir / file, metadata={"format": "pt"})
    weight_map = {n: file for file, part in parts.items() for n in part}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (model_dir / "model.safetensors").unlink()


def missing_shard(d):
    shard(d)
    (d / "model-00002-of-00002.safetensors").unlink()


def unsafe_pickle(d):
    (d / "model.safetensors").unlink()
    torch.save({"model.embed_tokens.weight": torch.zeros(2), "hook": Payload(d / "PWNED")}, d / "pytorch_model.bin")


def random_bert(d):
    from transformers import BertConfig, BertForMaskedLM

    for weights in d.glob("*.safetensors"):
        weights.unlink()
    config = BertConfig(vocab_size=49152, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    BertForMaskedLM(config).save_pretrained(d)


def flipped_bytes_under_manifest(d):
    write_manifest(d)
    with open(d / "model.safetensors", "r+b") as f:
        f.seek(1 << 20)
        f.write(b"\xff" * (4 << 20))


def file_gone_under_manifest(d):
    write_manifest(d)
    (d / "generation_config.json").unlink()


def bad_eos(d):
    edit_json(d / "generation_config.json", lambda c: {**c, "eos_token_id": "</s>"})


def tokenizer_auto_map(d):
    edit_json(d / "tokenizer_config.json", lambda c: {**c, "auto_map": {"AutoTokenizer": ["tok.Tok", None]}})


def drop_tensor(d):
    edit_tensors(d, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))


def add_tensor(d):
    edit_tensors(d, lambda t: t.update({"model.layers.2.mlp.up_proj.weight": torch.zeros(1)}))


CASES = {  # name: (break the copy, the one-line error expected)
    "truncated safetensors": (lambda d: truncate(d / "model.safetensors", 0.7),
                              "model.safetensors is corrupt or truncated"),
    "shard missing": (missing_shard,
                      "shard model-00002-of-00002.safetensors listed in model.safetensors.index.json is missing"),
    "config without sizes": (lambda d: (d / "config.json").write_text('{"model_type": "llama"}'),
                             "does not state vocab_size, hidden_size, .*default size"),
    "broken tokenizer": (lambda d: truncate(d / "tokenizer.json", 0.5), "the tokenizer in .* cannot be loaded"),
    "broken generation config": (lambda d: (d / "generation_config.json").write_text('{"eos_token_id": '),
                                 "generation_config.json is corrupt"),
    "generation config with a bad eos": (bad_eos, "generation_config.json is corrupt .*eos_token_id"),
    "auto_map only in tokenizer_config": (tokenizer_auto_map,
                                          r"needs remote code \(tokenizer_config.json has auto_map\)"),
    "unsafe pickle": (unsafe_pickle, "pytorch_model.bin .*not unpickled|unsafe pickle"),
    "missing tensor": (drop_tensor, r"1 tensor\(s\) the model needs are missing .*first: model.layers.1.mlp.up_proj"),
    "unexpected tensor": (add_tensor, r"holds 1 tensor\(s\) this model does not have .*model.layers.2.mlp.up_proj"),
    "wrong shape": (lambda d: edit_json(d / "config.json", lambda c: {**c, "intermediate_size": 96}),
                    r"tensor model.layers.0.mlp.gate_proj.weight is \[128, 64\] in the checkpoint but config.json "
                    r"needs \[96, 64\]"),
    # configs no model can be built from (transformers' strict config dataclasses raised through as tracebacks)
    "hidden size not a multiple of the heads": (lambda d: edit_json(d / "config.json", lambda c: {**c, "hidden_size": 62}),
                                                "has hidden_size 62, not a multiple of num_attention_heads 4"),
    "heads not a multiple of the kv heads": (
        lambda d: edit_json(d / "config.json", lambda c: {**c, "num_key_value_heads": 3}),
        "has num_attention_heads 4, not a multiple of num_key_value_heads 3"),
    "no heads": (lambda d: edit_json(d / "config.json", lambda c: {**c, "num_attention_heads": 0}),
                 "has num_attention_heads 0: sizes are positive whole numbers"),
    "eps of the wrong type": (lambda d: edit_json(d / "config.json", lambda c: {**c, "rms_norm_eps": "small"}),
                              r"cannot be read as a model config \(TypeError: Field 'rms_norm_eps' expected float"),
    "odd head_dim": (lambda d: edit_json(d / "config.json", lambda c: {**c, "head_dim": 7}),
                     "cannot be read as a model config .*RoPE requires an even rotary dimension"),
    "random bert": (random_bert, "holds a 'bert' model: ascend-nb runs Llama-family"),
    "4 MB of 0xFF under a manifest": (flipped_bytes_under_manifest,
                                      "model.safetensors does not match its sha256 in checksums.sha256"),
    "file gone under a manifest": (file_gone_under_manifest,
                                   r"generation_config.json is missing \(listed in checksums.sha256\)"),
}


@pytest.fixture
def copy_of_tiny(tiny_llama_dir, tmp_path):
    def copy(name="model"):
        return shutil.copytree(tiny_llama_dir, tmp_path / name)
    return copy


@pytest.fixture(params=list(CASES))
def broken(request, copy_of_tiny):
    """(directory, expected message) of one broken folder."""
    breaker, message = CASES[request.param]
    model_dir = copy_of_tiny(request.param.replace(" ", "-"))
    breaker(model_dir)
    return model_dir, message


@pytest.mark.parametrize("backend", BACKENDS)
def test_broken_folder_is_refused_in_one_line(broken, backend):
    model_dir, message = broken
    with pytest.raises(AscendNbError, match=message) as refused:
        ascend_nb.load(model_dir, device="cpu", dtype="float32", backend=backend)
    assert "\n" not in str(refused.value)
    assert not (model_dir / "PWNED").exists()  # nothing was unpickled


@pytest.mark.parametrize("backend", BACKENDS)
def test_broken_folder_through_the_cli_is_exit_2_and_one_line(broken, backend, capsys):
    model_dir, message = broken
    code = main(["generate", "hi", "--model", str(model_dir), "--device", "cpu", "--backend", backend])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ascend-nb generate: error: ") and err.count("\n") == 1


@pytest.mark.parametrize("case", ["random bert", "4 MB of 0xFF under a manifest", "hidden size not a multiple of the heads"])
def test_cli_process_exits_2_without_traceback(case, copy_of_tiny, tmp_path):
    breaker, message = CASES[case]
    model_dir = copy_of_tiny()
    breaker(model_dir)
    done = subprocess.run([sys.executable, "-m", "ascend_nb", "generate", "hi", "--model", str(model_dir),
                           "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ASCEND_NB_HOME": str(tmp_path / "home")})
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stdout == ""
    assert [line for line in done.stderr.splitlines() if line.strip()] == [done.stderr.strip()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_sound_sharded_copy_loads_and_answers_like_the_original(copy_of_tiny, tiny_llama_dir, backend):
    model_dir = copy_of_tiny()
    shard(model_dir)
    write_manifest(model_dir)
    original = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend=backend)
    sharded = ascend_nb.load(model_dir, device="cpu", dtype="float32", backend=backend)
    assert (sharded.generate(PROMPT, max_new_tokens=8, ignore_eos=True).token_ids
            == original.generate(PROMPT, max_new_tokens=8, ignore_eos=True).token_ids)


def test_manifest_digests_are_reused_until_a_file_changes_and_verify_false_skips(copy_of_tiny, tmp_path):
    model_dir = copy_of_tiny()
    write_manifest(model_dir)
    ascend_nb.load(model_dir, device="cpu", dtype="float32")
    cache_path = tmp_path / "home" / CACHE_FILE
    cache = json.loads(cache_path.read_text())
    weights = str((model_dir / "model.safetensors").resolve())
    size, mtime_ns, digest = cache[weights]
    assert size == (model_dir / "model.safetensors").stat().st_size and len(digest) == 64

    cache[weights][2] = "0" * 64  # the remembered digest is trusted while size and mtime are unchanged
    cache_path.write_text(json.dumps(cache))
    with pytest.raises(AscendNbError, match="model.safetensors does not match its sha256"):
        ascend_nb.load(model_dir, device="cpu", dtype="float32")
    os.utime(model_dir / "model.safetensors", ns=(mtime_ns + 10**9, mtime_ns + 10**9))  # touched: hashed again
    ascend_nb.load(model_dir, device="cpu", dtype="float32")
    assert json.loads(cache_path.read_text())[weights][2] == digest

    flipped_bytes_under_manifest(model_dir)
    with pytest.raises(AscendNbError, match="does not match its sha256.*verify=False"):
        ascend_nb.load(model_dir, device="cpu", dtype="float32")
    assert ascend_nb.load(model_dir, device="cpu", dtype="float32", verify=False).backend == "transformers"


def flip_a_byte_keeping_its_mtime(path):
    """Change one byte in the middle of ``path`` and put its modification time back (a bit flip on disk)."""
    stat = path.stat()
    with open(path, "r+b") as f:
        f.seek(stat.st_size // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0xFF]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_byte_flipped_with_its_mtime_restored_passes_the_fast_check_but_not_verify_full(copy_of_tiny, capsys):
    model_dir = copy_of_tiny()
    write_manifest(model_dir)
    ascend_nb.load(model_dir, device="cpu", dtype="float32")  # hashed once, remembered by size and mtime
    flip_a_byte_keeping_its_mtime(model_dir / "model.safetensors")
    # known behaviour: the default check trusts a file whose size and mtime did not change (fast, not a guarantee)
    assert ascend_nb.load(model_dir, device="cpu", dtype="float32").backend == "transformers"
    generate = ["generate", "hi", "--model", str(model_dir), "--device", "cpu", "--max-new-tokens", "2"]
    assert main([*generate, "--verify", "fast"]) == 0
    capsys.readouterr()

    assert main([*generate, "--verify", "full"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{model_dir / 'model.safetensors'} does not match its sha256 in checksums.sha256" in err
    with pytest.raises(AscendNbError, match="model.safetensors does not match its sha256") as refused:
        ascend_nb.load(model_dir, device="cpu", dtype="float32", verify="full")
    assert "\n" not in str(refused.value)
    with pytest.raises(AscendNbError, match="model.safetensors does not match its sha256"):
        ascend_nb.load(model_dir, device="cpu", dtype="float32")  # the full check refreshed what is remembered


@pytest.mark.parametrize("verify", ["fast", "yes", 1, None])
def test_verify_other_than_true_false_or_full_is_refused_in_one_line(verify, copy_of_tiny):
    with pytest.raises(AscendNbError, match=r"^verify must be True \(.*\), 'full' \(.*\) or False \(.*\), got ") as refused:
        ascend_nb.load(copy_of_tiny(), device="cpu", dtype="float32", verify=verify)
    assert "\n" not in str(refused.value)


def test_fetch_verify_hashes_every_file_of_the_embedded_model(embedded_model_dir, tmp_path):
    home = tmp_path / "home"
    model_dir = shutil.copytree(embedded_model_dir, home / "models" / embedded_model_dir.name)
    kernels = embedded_model_dir.parent.parent / "kernels"
    if kernels.is_dir():  # the kernels built here are reused (fetch would build them: a minute of CPU)
        shutil.copytree(kernels, home / "kernels")

    def fetch_verify() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ascend_nb", "fetch", "--verify"], capture_output=True, text=True,
                              timeout=600, env={**os.environ, "ASCEND_NB_HOME": str(home)})

    done = fetch_verify()
    assert done.returncode == 0 and done.stdout == f"{model_dir}\n", done.stderr
    flip_a_byte_keeping_its_mtime(model_dir / "model.safetensors")
    done = fetch_verify()
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()] == [done.stderr.strip()]
    assert f"{model_dir / 'model.safetensors'} does not match its sha256 in checksums.sha256" in done.stderr
