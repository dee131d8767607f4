"""``ascend-nb bench --sweep [--csv PATH] [--resume]`` and ``ascend-nb bench --compare A.csv B.csv``."""

from __future__ import annotations

import json

import pytest

from ascend_nb.bench.guides_csv import read_csv, read_rows, write_guides_csv
from ascend_nb.cli import main


def sweep_args(model_dir, csv_path, backend="transformers", *extra):
    return ["bench", "--sweep", "--model", str(model_dir), "--backend", backend, "--device", "cpu",
            "--dtype", "float32", "--batch-sizes", "1", "--input-lens", "4,8", "--output-lens", "2,3",
            "--repeat", "1", "--warmup", "0", "--csv", str(csv_path), *extra]


def test_sweep_two_backends_into_one_csv_then_resume(tiny_llama_dir, tmp_path, capsys):
    path = tmp_path / "sweep.csv"
    assert main(sweep_args(tiny_llama_dir, path, "transformers,accelerated")) == 0
    out = capsys.readouterr().out
    assert "accelerated vs transformers" in out and "next_token_speedup" in out
    table = read_csv(path)
    assert sorted(table["backend"].value_counts().items()) == [("accelerated", 4), ("transformers", 4)]
    content = path.read_text()
    assert main(sweep_args(tiny_llama_dir, path)) == 2
    assert "add --resume" in capsys.readouterr().err
    assert main(sweep_args(tiny_llama_dir, path, "transformers", "--resume", "--json")) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and path.read_text() == content  # all read back, nothing measured again
    assert len(read_rows(path)[1]) == 8


@pytest.mark.parametrize("grid, points", [([], [(32, 32)]), (["--grid", "guides"], [(32, 32), (32, 64), (64, 32)])])
def test_sweep_grid_defaults_to_the_quick_grid_of_sweep(tiny_llama_dir, tmp_path, capsys, grid, points):
    """Without --input-lens/--output-lens the CLI sweeps what sweep() and notebook 04 do (a 96-token budget
    keeps the points that fit: quick 32,256,1024 x 32,128 -> one, guides 32..1024 x 32..1024 -> three)."""
    explicit = ("--input-lens", "4,8", "--output-lens", "2,3")
    args = [a for a in sweep_args(tiny_llama_dir, tmp_path / "grid.csv") if a not in explicit]
    assert main([*args, *grid, "--max-seq-len", "96", "--json"]) == 0
    captured = capsys.readouterr()
    assert [(r["input_len"], r["output_len"]) for r in json.loads(captured.out)] == points  # stdout: the JSON alone
    assert "skipping" in captured.err


def test_sweep_honours_the_bench_options(tiny_llama_dir, tmp_path, capsys):
    """--quantize, several --kernels, --max-seq-len and --seed reach the sweep: each kernel path swept in turn."""
    path = tmp_path / "sweep.csv"
    extra = ("--quantize", "int8", "--kernels", "cpu-aten,torch", "--max-seq-len", "32", "--seed", "3", "--input-lens",
             "4", "--output-lens", "2")
    assert main(sweep_args(tiny_llama_dir, path, "transformers,accelerated", *extra)) == 0
    out = capsys.readouterr().out
    assert "accelerated[cpu-aten] vs transformers" in out and "accelerated[torch] vs transformers" in out
    rows = read_rows(path)[1]
    assert [(r["backend"], r["kernels"], r["quantize"]) for r in rows] == [
        ("transformers", "transformers", "none"), ("accelerated", "cpu-aten", "int8"), ("accelerated", "torch", "int8")]
    assert {(r["max_seq_len"], r["seed"], r["repeat"], r["warmup"], r["tp"]) for r in rows} == {("32", "3", "1", "0", "1")}


def test_a_resumed_sweep_with_another_setting_measures_it_beside_the_first(tiny_llama_dir, tmp_path, capsys):
    path = tmp_path / "sweep.csv"
    grid = ("--input-lens", "4", "--output-lens", "2")
    assert main(sweep_args(tiny_llama_dir, path, "transformers", *grid)) == 0
    assert main(sweep_args(tiny_llama_dir, path, "transformers", *grid, "--resume", "--max-seq-len", "16")) == 0
    assert main(sweep_args(tiny_llama_dir, path, "transformers", *grid, "--resume", "--seed", "1", "--json")) == 0
    rows = read_rows(path)[1]
    assert [(r["max_seq_len"], r["seed"]) for r in rows] == [("6", "0"), ("16", "0"), ("6", "1")]
    capsys.readouterr()
    assert main(sweep_args(tiny_llama_dir, path, "transformers", *grid, "--resume", "--seed", "1", "--json")) == 0
    assert json.loads(capsys.readouterr().out)[0]["seed"] == 1 and len(read_rows(path)[1]) == 3  # read back


@pytest.mark.parametrize("damage", [lambda row: row[: len(row) // 2], lambda row: row.replace(",", ",,", 1),
                                    lambda row: "garbage"], ids=["cut", "extra-cell", "garbage"])
def test_an_incomplete_row_before_others_refuses_the_file_in_one_line(tiny_llama_dir, tmp_path, capsys, damage):
    path = tmp_path / "sweep.csv"
    assert main(sweep_args(tiny_llama_dir, path, "transformers", "--input-lens", "4")) == 0
    header, row_1, row_2 = path.read_text().splitlines()
    path.write_text(f"{header}\n{damage(row_1)}\n{row_2}\n")
    content = path.read_text()
    capsys.readouterr()
    assert main(sweep_args(tiny_llama_dir, path, "transformers", "--input-lens", "4", "--resume")) == 2
    err = capsys.readouterr().err
    assert f"{path} line 2" in err and len(err.strip().splitlines()) == 1
    assert path.read_text() == content  # refused, not rewritten


def test_compare_two_csv_files(tmp_path, capsys):
    base = [{"batch_size": 1, "input_len": 32, "output_len": out, "ttft_ms": 40.0, "tpot_ms": 10.0, "e2e_ms": 400.0}
            for out in (32, 64)]
    write_guides_csv(base, tmp_path / "a100.csv")
    write_guides_csv([{**row, "ttft_ms": 20.0, "tpot_ms": 40.0} for row in base], tmp_path / "atlas.csv")
    assert main(["bench", "--compare", str(tmp_path / "atlas.csv"), str(tmp_path / "a100.csv"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["output_len"], r["first_token_speedup"], r["next_token_speedup"]) for r in rows] == [(32, 2.0, 0.25),
                                                                                                   (64, 2.0, 0.25)]
    assert "tpot_ms (a100)" in rows[0]


@pytest.mark.parametrize("argv, message", [
    (["bench", "--csv", "x.csv"], "go with --sweep"),
    (["bench", "--sweep", "--resume"], "add --csv PATH"),
    (["bench", "--sweep", "--compare", "a.csv", "b.csv"], "separate modes"),
    (["bench", "--compare", "missing-a.csv", "missing-b.csv"], "does not exist"),
    (["bench", "--sweep", "--input-len", "8", "--batch-size", "2"], "grid of --batch-sizes, --input-lens and "
                                                                  "--output-lens: drop --batch-size, --input-len"),
    (["bench", "--input-lens", "8"], "make the grid of --sweep: add --sweep"),
    (["bench", "--grid", "guides"], "make the grid of --sweep: add --sweep"),
    (["bench", "--sweep", "--backend", "accelerated", "--tp", "2"], "--sweep runs in one process, --tp 2 needs torchrun"),
    (["bench", "--sweep", "--backend", "transformers", "--quantize", "int8"], "quantize, graphs and kernels apply to"),
    (["bench", "--sweep", "--max-seq-len", "2"], "--max-seq-len must hold"),
])
def test_user_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\xff binary", "is not a CSV file"),
    (b"# title\n\nsome prose, with a comma\nand, more, commas, here\n", "is not a CSV file"),
    (b"", "is not a CSV file"),
    (b"batch_size,input_len,output_len,ttft_ms,tpot_ms,e2e_ms\n1,32,32,fast,1,2\n", "column ttft_ms holds non-numbers"),
])
def test_compare_on_a_file_that_is_not_a_performance_csv_is_one_line(tmp_path, content, message, capsys):
    path = tmp_path / "notes.csv"
    path.write_bytes(content)
    assert main(["bench", "--compare", str(path), str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bench_tp_below_one_is_one_line(capsys):
    assert main(["bench", "--tp", "0"]) == 2
    assert "--tp must be a number of ranks >= 1, got 0" in capsys.readouterr().err


def test_bad_grid_values_are_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--sweep", "--input-lens", "32,abc"])
    assert "comma-separated integers" in capsys.readouterr().err
