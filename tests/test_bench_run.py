"""``ascend-nb bench``: interleaved rounds, medians, exact output length, rows, CLI and errors."""

import json

import pytest

from ascend_nb import device as devices
from ascend_nb.bench import run
from ascend_nb.bench.run import ROW_FIELDS, BenchConfig, run_bench, run_rounds, speedups
from ascend_nb.cli import main
from ascend_nb.errors import AscendNbError


def tiny_config(model_dir, **changes) -> BenchConfig:
    values = dict(model=str(model_dir), backends=("transformers", "accelerated"), device="cpu", dtype="float32",
                  input_len=8, output_len=4, repeat=2)
    return BenchConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def rows(tiny_llama_dir):
    return run_bench(tiny_config(tiny_llama_dir, quantize="int8", batch_size=2))


def test_rows_have_every_field_per_backend(rows):
    assert [r["backend"] for r in rows] == ["transformers", "accelerated"]
    for row in rows:
        assert set(ROW_FIELDS) <= set(row)
        assert (row["batch_size"], row["input_len"], row["output_len"], row["repeat"]) == (2, 8, 4, 2)
        assert row["device"] == "cpu" and row["dtype"] == "float32"
        assert 0 < row["ttft_ms"] <= row["e2e_ms"]
        assert row["decode_tokens_per_s"] == pytest.approx(1000 * 2 / row["tpot_ms"])
    assert [r["quantize"] for r in rows] == ["none", "int8"]  # the reference never quantizes
    assert rows[0]["kernels"] == "transformers" and rows[1]["kernels"] in devices.KERNEL_PATHS["cpu"]
    assert [r["graphs"] for r in rows] == ["none", "none"]


def test_two_kernel_paths_side_by_side(tiny_llama_dir):
    paths = tuple(devices.runnable_kernel_paths("cpu")[-2:])  # the ATen path and the plain twin run everywhere
    rows = run_bench(tiny_config(tiny_llama_dir, backends=("accelerated",), dtype="bfloat16", kernels=paths, repeat=1))
    assert [r["kernels"] for r in rows] == list(paths)
    assert [r["label"] for r in rows] == [f"accelerated[{path}]" for path in paths]
    assert all(r["tpot_ms"] > 0 for r in rows)


def test_rounds_interleave_backends_and_report_medians(monkeypatch):
    calls = []
    ttfts = {"a": iter([5.0, 1.0, 3.0]), "b": iter([10.0, 30.0, 20.0])}

    def fake_measure(engine, point, repeat, warmup, seed):
        calls.append((engine.backend, warmup))
        ttft = next(ttfts[engine.backend])
        return {"ttft_ms": ttft, "tpot_ms": ttft / 10, "e2e_ms": ttft * 2, "peak_memory_mb": ttft}

    class FakeEngine:
        def __init__(self, backend):
            self.backend = backend

    monkeypatch.setattr(run, "measure_point", fake_measure)
    monkeypatch.setattr(run, "run_fields", lambda engine: {"backend": engine.backend})
    config = BenchConfig(backends=("transformers", "accelerated"), repeat=3, warmup=2, batch_size=4)
    rows = run_rounds({"a": FakeEngine("a"), "b": FakeEngine("b")}, config)
    assert calls == [("a", 2), ("b", 2), ("a", 0), ("b", 0), ("a", 0), ("b", 0)]
    assert [r["ttft_ms"] for r in rows] == [3.0, 20.0]
    assert [r["tpot_ms"] for r in rows] == [0.3, 2.0]
    assert rows[0]["decode_tokens_per_s"] == pytest.approx(4 * 1000 / 0.3)
    assert [r["peak_memory_mb"] for r in rows] == [5.0, 30.0]


def test_speedups():
    rows = [{"backend": "transformers", "decode_tokens_per_s": 25.0, "ttft_ms": 300.0},
            {"backend": "accelerated", "decode_tokens_per_s": 75.0, "ttft_ms": 100.0}]
    assert speedups(rows) == {"accelerated": {"decode": 3.0, "ttft": 3.0}}
    assert speedups(rows[1:]) == {}
    paths = [{**rows[1], "label": f"accelerated[{path}]", "decode_tokens_per_s": tps}
             for path, tps in (("cpu-onednn", 50.0), ("cpu-avx512-gemv", 100.0))]
    assert speedups([rows[0], *paths]) == {"accelerated[cpu-onednn]": {"decode": 2.0, "ttft": 3.0},
                                           "accelerated[cpu-avx512-gemv]": {"decode": 4.0, "ttft": 3.0}}


@pytest.mark.parametrize("changes, match", [
    ({"backends": ("transformers", "fast")}, "unknown backend 'fast'"),
    ({"backends": ("accelerated", "accelerated")}, "named twice"),
    ({"backends": ()}, "at least one backend"),
    ({"output_len": 1}, "output length >= 2"),
    ({"repeat": 0}, "repeat must be >= 1"),
    ({"backends": ("transformers",), "quantize": "int8"}, "quantize, graphs and kernels apply to accelerated"),
    ({"backends": ("transformers",), "graphs": True}, "quantize, graphs and kernels apply to accelerated"),
    ({"max_seq_len": 2}, "--max-seq-len must hold an input and two output tokens"),
])
def test_bad_configs_are_clear_errors(changes, match):
    with pytest.raises(AscendNbError, match=match):
        BenchConfig(**changes)


def test_config_travels_as_json_and_lists_become_tuples():
    config = BenchConfig(model="m", backends=["accelerated"], kernels=["cpu-aten", "torch"], tp=2, max_seq_len=64,
                         quantize="int8", seed=7)
    assert config.backends == ("accelerated",) and config.kernels == ("cpu-aten", "torch")
    assert BenchConfig.from_json(config.to_json()) == config
    with pytest.raises(AscendNbError, match="--tp must be a number of ranks >= 1, got 0"):
        BenchConfig.from_json('{"backends": ["accelerated"], "tp": 0}')  # checked as the constructor checks


def test_one_point_budget_is_max_seq_len_or_exactly_the_point():
    assert BenchConfig(input_len=8, output_len=4).point_max_seq_len == 12
    assert BenchConfig(input_len=8, output_len=4, max_seq_len=64).point_max_seq_len == 64
    with pytest.raises(AscendNbError, match=r"input \+ output \(12 tokens\) exceeds --max-seq-len 10"):
        BenchConfig(input_len=8, output_len=4, max_seq_len=10).point_max_seq_len


def test_engines_load_with_the_budget_and_every_row_says_so(rows, tiny_llama_dir):
    assert [(r["tp"], r["max_seq_len"]) for r in rows] == [(1, 12), (1, 12)]  # 8 + 4 tokens
    engines = run.load_engines(tiny_config(tiny_llama_dir, backends=("accelerated",), max_seq_len=40))
    assert [e.max_seq_len for e in engines.values()] == [40]


def test_cli_json_and_table(tiny_llama_dir, capsys):
    args = ["bench", "--model", str(tiny_llama_dir), "--backend", "transformers, accelerated", "--device", "cpu",
            "--dtype", "float32", "--input-len", "6", "--output-len", "3", "--repeat", "1", "--warmup", "0"]
    assert main(args + ["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in rows] == ["transformers", "accelerated"]
    assert all(r["output_len"] == 3 and r["input_len"] == 6 for r in rows)
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "TPOT ms" in table and "accelerated vs transformers: decode" in table


def test_cli_unknown_backend_exits_2(capsys):
    assert main(["bench", "--backend", "transformers,warp"]) == 2
    assert "unknown backend 'warp'" in capsys.readouterr().err


def test_cli_max_seq_len_reaches_the_engines(tiny_llama_dir, capsys):
    assert main(["bench", "--model", str(tiny_llama_dir), "--backend", "accelerated", "--device", "cpu", "--dtype",
                 "float32", "--input-len", "6", "--output-len", "3", "--max-seq-len", "48", "--repeat", "1",
                 "--warmup", "0", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["max_seq_len"], row["input_len"], row["output_len"]) == (48, 6, 3)
    assert main(["bench", "--input-len", "60", "--output-len", "8", "--max-seq-len", "64"]) == 2
    assert "input + output (68 tokens) exceeds --max-seq-len 64" in capsys.readouterr().err
