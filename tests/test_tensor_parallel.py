"""Tensor parallelism on real torch.distributed (gloo on CPU), launched with torchrun."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ascend_nb
from ascend_nb import device as devices
from ascend_nb.parallel import TensorParallel, check_divisible
from ascend_nb.precision import tokens_close, topk_per_step
from ascend_nb.errors import AscendNbError

WORKER = Path(__file__).with_name("tp_worker.py")
QUESTION = "What is the capital of France?"


def torchrun(nproc: int, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_tp2_logits_and_greedy_tokens_equal_tp1(tmp_path, tiny_llama_dir):
    done = torchrun(2, str(WORKER), str(tiny_llama_dir), str(tmp_path / "tp2.pt"))
    assert done.returncode == 0, done.stderr[-2000:]
    sharded = torch.load(tmp_path / "tp2.pt")
    single = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated")
    ids = single.encode("The capital of France is")
    logits, _ = single.forward(torch.tensor([ids]))
    assert (sharded["logits"] - logits).abs().max() < 1e-4
    assert sharded["tokens"] == single.generate(ids, max_new_tokens=12, ignore_eos=True).token_ids


def test_shares_cover_every_row_once():
    shares = [TensorParallel(rank, 3).part(9) for rank in range(3)]
    assert shares == [(0, 3), (3, 6), (6, 9)]


def test_tp_that_does_not_divide_the_heads_is_refused_before_loading(tiny_llama_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_llama_dir)  # 4 heads, 2 KV heads
    check_divisible(config, 2)
    with pytest.raises(AscendNbError, match="--tp 4 does not divide the model's KV heads \\(2\\): use one of 1, 2"):
        check_divisible(config, 4)


def test_world_size_must_match_tp(tiny_llama_dir):
    with pytest.raises(AscendNbError, match="needs 2 processes but this run has 1.*torchrun --nproc-per-node 2"):
        ascend_nb.load(tiny_llama_dir, device="cpu", backend="accelerated", tp=2)


@pytest.mark.slow
def test_embedded_model_tp3_answers_like_tp1(embedded_model_dir):
    args = ["-m", "ascend_nb", "generate", QUESTION, "--model", "smollm2-135m-instruct", "--backend", "accelerated",
            "--dtype", "float32", "--max-new-tokens", "16"]
    done = torchrun(3, *args, "--tp", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    single = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert done.stdout == single.stdout  # rank 0 alone prints, the same greedy text
    assert "Paris" in done.stdout


# the default kernel path, and oneDNN's where it runs (where tp=3 bf16 once answered "L'Étoile, la Marseillaise")
TP_PATHS = [p for p in devices.runnable_kernel_paths("cpu")
            if p in (devices.place("cpu", "float32", "accelerated").kernels, "cpu-onednn")]


@pytest.mark.slow
@pytest.mark.heavy  # tp=3 on the embedded model runs in make test by test_embedded_model_tp3_answers_like_tp1
@pytest.mark.parametrize("kernels", TP_PATHS)
def test_embedded_model_tp3_in_bf16_follows_tp1(tmp_path, embedded_model_dir, kernels):
    """tp=3 in bfloat16: the chat reply follows tp=1's under the closeness rule (the rank count
    changes the summation order, so bf16 near-ties may flip); on the GEMV paths partial sums and
    logits stay float32 and the answer itself is kept."""
    done = torchrun(3, str(WORKER), "smollm2-135m-instruct", str(tmp_path / "tp3.pt"), "bfloat16", kernels)
    assert done.returncode == 0, done.stderr[-2000:]
    sharded = torch.load(tmp_path / "tp3.pt")
    single = ascend_nb.load(device="cpu", dtype="bfloat16", backend="accelerated", kernels=kernels, max_seq_len=128)
    prompt = sharded["chat_prompt"]
    assert prompt == single.encode_chat([{"role": "user", "content": QUESTION}], 24)
    expected = single.generate(prompt, max_new_tokens=24).token_ids
    assert tokens_close(expected, sharded["chat"], topk_per_step(single, prompt, expected), sharded["chat_top"]) is None
    if kernels.endswith("-gemv"):
        assert "Paris" in single.decode(sharded["chat"])


def test_bench_tp_runs_the_accelerated_backend_alone():
    from ascend_nb.bench.run import BenchConfig

    with pytest.raises(AscendNbError, match="--tp 2 benchmarks the accelerated backend alone"):
        BenchConfig(backends=("transformers", "accelerated"), tp=2)


def test_bench_tp2_under_torchrun_prints_one_row_from_rank_0(tiny_llama_dir):
    import json

    done = torchrun(2, "-m", "ascend_nb", "bench", "--backend", "accelerated", "--tp", "2", "--model", str(tiny_llama_dir),
                    "--dtype", "float32", "--input-len", "8", "--output-len", "4", "--repeat", "1", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(done.stdout)
    assert row["tp"] == 2 and row["backend"] == "accelerated" and row["tpot_ms"] > 0


def test_bench_tensor_parallel_launches_the_bench_rank_at_each_size(tiny_llama_dir):
    from ascend_nb.bench.distributed import bench_tensor_parallel

    table = bench_tensor_parallel(tiny_llama_dir, (1, 2), device="cpu", dtype="float32", input_len=8, output_len=4,
                                  repeat=1)
    assert table["tp"].tolist() == [1, 2] and set(table["backend"]) == {"accelerated"}
    assert (table["input_len"].tolist(), table["output_len"].tolist()) == ([8, 8], [4, 4])
    assert (table["tpot_ms"] > 0).all()


def test_bench_tensor_parallel_reports_a_rank_error_in_one_line(tmp_path):
    from ascend_nb.bench.distributed import bench_tensor_parallel

    with pytest.raises(AscendNbError) as failed:
        bench_tensor_parallel(tmp_path / "missing", (1,), device="cpu")
    message = str(failed.value)
    assert message.startswith(f"tp=1 benchmark failed: model directory {tmp_path / 'missing'} does not exist")
    assert "\n" not in message


def test_bench_tensor_parallel_checks_every_size_before_launching(tiny_llama_dir):
    from ascend_nb.bench.distributed import bench_tensor_parallel

    with pytest.raises(AscendNbError, match="--tp must be a number of ranks >= 1, got 0"):
        bench_tensor_parallel(tiny_llama_dir, (2, 0), device="cpu")  # refused before the tp=2 launch


def test_the_bench_rank_prints_its_rows_as_one_json_line(tiny_llama_dir, capsys):
    import json

    from ascend_nb.bench import tp_rank
    from ascend_nb.bench.run import BenchConfig

    config = BenchConfig(model=str(tiny_llama_dir), backends=("accelerated",), device="cpu", dtype="float32",
                         input_len=6, output_len=3, repeat=1, warmup=0)
    assert tp_rank.main([config.to_json()]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["tp"], row["input_len"], row["max_seq_len"]) == (1, 6, 9)
    assert tp_rank.main(['{"backends": ["accelerated"], "output_len": 1}']) == 2
    err = capsys.readouterr().err
    assert err.startswith(tp_rank.ERROR_PREFIX + "batch size and input length") and len(err.splitlines()) == 1
