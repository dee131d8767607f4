"""scripts/bench_7b.py, rehearsed at a tiny size: every step (write the original formats, convert, plan,
load and decode in each quantization, GGUF + llama.cpp) runs in its own process and lands in the table;
its GGUF writer gives llama.cpp the very model we run."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ascend_nb.convert.demo_checkpoints import make_random_llama

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_7b.py"
TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128, "vocab_size": 1000}
PEER = Path("~/.cache/ascend-nb-peers").expanduser()
PEER_PYTHON = PEER / "venv" / "bin" / "python"
LLAMACPP_BENCH = Path(__file__).resolve().parents[2] / "shared" / "peers" / "llamacpp_bench.py"
HAS_PEER = bool(list(PEER.glob("venv/lib/python*/site-packages/llama_cpp/__init__.py"))) and LLAMACPP_BENCH.is_file()


@pytest.fixture(scope="module")
def bench_7b():
    return runpy.run_path(str(SCRIPT))


def _rehearse(tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(SCRIPT), "--sizes", json.dumps(TINY), "--workdir", str(tmp_path),
                           "--input-len", "16", "--output-len", "4", *options], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _rows(stdout: str) -> list[list[str]]:
    last_table = stdout.split("| model |")[-1]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in last_table.splitlines()[2:]
            if line.startswith("| ")]


@pytest.mark.heavy  # a benchmark rehearsal (issue 26: not part of the default `make test`)
def test_the_7b_run_rehearses_at_a_tiny_size(tmp_path):
    done = _rehearse(tmp_path, "--models", "baichuan2,aquila", "--quantize", "bf16,int8", "--gguf", "")
    rows = _rows(done.stdout)
    assert [(row[0], row[1]) for row in rows] == [(kind, step) for kind in ("baichuan2", "aquila") for step in (
        "write original (random, bf16)", "convert", "load + decode bf16", "load + decode int8")]
    assert all(float(row[8]) > 0 for row in rows if "decode" in row[1])  # a TTFT for every decode
    assert list(tmp_path.iterdir()) == []  # originals and converted copies removed


@pytest.mark.heavy
def test_the_0_8b_llama_rehearses_with_every_quantization_and_llama_cpp(tmp_path):
    done = _rehearse(tmp_path, "--models", "llama-0.8b", "--llama-tokenizer", "tiny", "--keep")
    rows = _rows(done.stdout)
    steps = ["write (random, bf16 safetensors)"] + [f"load + decode {mode}" for mode in ("bf16", "int8", "w8a8", "int4")]
    if HAS_PEER:
        steps += [f"{what} {kind}" for kind in ("BF16", "Q8_0", "Q4_1") for what in ("write GGUF", "llama.cpp")]
    else:
        assert "llama.cpp: skipped" in done.stdout
    assert [row[1] for row in rows] == steps and {row[0] for row in rows} == {"llama-0.8b"}
    timed = [row for row in rows if "decode" in row[1] or row[1] == "llama.cpp BF16" or
             (row[1].startswith("llama.cpp") and "crashed" not in row[7])]  # a native build may crash on quantized types
    assert all(float(row[8]) > 0 and float(row[9]) > 0 for row in timed)
    config = json.loads((tmp_path / "llama-0.8b" / "config.json").read_text())
    assert (config["num_key_value_heads"], config["tie_word_embeddings"], config["vocab_size"]) == (4, True, 1000)
    assert len(list(tmp_path.glob("*.gguf"))) == (3 if HAS_PEER else 0)  # --keep keeps them


def test_without_the_peers_llama_cpp_is_skipped_with_a_line(bench_7b, tmp_path, capsys):
    assert bench_7b["peer_pythons"](tmp_path / "no-peer", tmp_path) is None
    assert "llama.cpp: skipped" in capsys.readouterr().out


@pytest.mark.parametrize("tied", [False, True])
def test_gguf_writer_round_trips_through_our_reader(bench_7b, tmp_path, tied):
    """Names, the q/k rotary permutation (GQA: 4 heads, 2 KV heads), F32 norms, tied heads; BF16 exactly."""
    from safetensors.torch import load_file

    from ascend_nb.convert.sources.gguf_reader import open_gguf

    model = make_random_llama(tmp_path / "llama", tie_word_embeddings=tied, max_shard_size="40KB")
    reference = {}
    for path in model.glob("*.safetensors"):
        reference.update(load_file(path))
    for kind, tolerance in (("BF16", 0.0), ("Q8_0", 0.01), ("Q4_1", 0.1)):
        written = bench_7b["write_gguf"](model, tmp_path / f"m.{kind}.gguf", kind)
        read = open_gguf(tmp_path / f"m.{kind}.gguf", torch.float32)
        tensors = {t.name: t.materialize() for t in read.tensors}
        assert tensors.keys() == reference.keys()
        for name, expected in reference.items():
            error = (tensors[name] - expected.float()).abs().max() / expected.float().abs().max()
            assert error <= tolerance, (kind, name, error)
        assert read.config.num_key_value_heads == 2 and read.config.tie_word_embeddings == tied
        assert 0 < written["read_bytes"] < written["file_bytes"]


@pytest.mark.skipif(not HAS_PEER, reason="no llama.cpp peer (../shared/peers/setup.sh builds it)")
def test_llama_cpp_computes_the_same_model_from_our_gguf(bench_7b, tmp_path):
    """A few seconds: llama.cpp's last-position logits on the BF16 GGUF match transformers' on the safetensors."""
    from transformers import AutoModelForCausalLM

    model = make_random_llama(tmp_path / "llama", num_kv_heads=2)
    bench_7b["write_gguf"](model, tmp_path / "m.gguf", "BF16")
    ids = list(range(100, 116))
    code = ("import json, sys, numpy as np\nfrom llama_cpp import Llama\n"
            "llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=2, verbose=False)\n"
            f"llm.eval({ids})\n"
            "print(json.dumps(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).tolist()))")
    done = subprocess.run([str(PEER_PYTHON), "-c", code, str(tmp_path / "m.gguf")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = torch.tensor(json.loads(done.stdout.strip().splitlines()[-1]))
    reference = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    with torch.no_grad():
        ours = reference(torch.tensor([ids])).logits[0, -1]
    assert torch.nn.functional.cosine_similarity(ours, theirs, dim=0) > 0.9999
    assert ours.argmax() == theirs.argmax()
