"""Latency sweeps on a tiny random Llama: grid trimming, rows, CSV writing and resuming after a kill."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest

from ascend_nb.bench import latency_sweep as sweep_module
from ascend_nb.bench.guides_csv import read_csv, read_rows, write_guides_csv
from ascend_nb.bench.latency_sweep import (CSV_COLUMNS, KEY_FIELDS, SweepPoint, flags, grid_lengths, plan_sweep,
                                   point_memory_bytes, sweep)
from ascend_nb.errors import AscendNbError

BANDWIDTH_GBS = 10.0  # fixed, so these tests do not depend on (or spend time measuring) this machine


@pytest.fixture(scope="module")
def engine(tiny_engine):
    """The shared tiny random Llama (conftest), float32 on CPU, max_seq_len 256."""
    return tiny_engine


def run(engine, csv_path=None, **grid):
    grid = {"batch_sizes": [1], "input_lens": [4, 8], "output_lens": [2, 3], "repeat": 1, **grid}
    return list(sweep(engine, **grid, csv_path=csv_path, progress=False, bandwidth_gbs=BANDWIDTH_GBS))


def test_plan_keeps_the_guides_order_and_trims_to_max_seq_len(engine):
    assert engine.max_seq_len == 256
    plan = plan_sweep(engine, [1], [64, 128, 256], [2, 128])
    assert plan.points == [SweepPoint(1, 64, 2), SweepPoint(1, 64, 128), SweepPoint(1, 128, 2), SweepPoint(1, 128, 128)]
    assert [p for p, _ in plan.skipped] == [SweepPoint(1, 256, 2), SweepPoint(1, 256, 128)]
    assert all("max_seq_len 256" in reason for _, reason in plan.skipped)


def test_plan_trims_points_that_need_more_memory_than_is_free(engine, monkeypatch):
    small, large = SweepPoint(1, 8, 2), SweepPoint(4, 64, 64)
    free = (point_memory_bytes(engine, small) + point_memory_bytes(engine, large)) / 2
    monkeypatch.setattr(sweep_module.devices, "free_memory_bytes", lambda device: free)
    plan = plan_sweep(engine, [1, 4], [8, 64], [2, 64])
    assert small in plan.points and large not in plan.points
    assert dict(plan.skipped)[large].endswith("MB free")


@pytest.mark.parametrize("grid", [{"output_lens": [1, 4]}, {"batch_sizes": []}, {"input_lens": [0]}])
def test_bad_grids_are_rejected(engine, grid):
    with pytest.raises(AscendNbError):
        run(engine, **grid)


def test_nothing_fits_is_an_error(engine):
    with pytest.raises(AscendNbError, match="no grid point fits"):
        run(engine, input_lens=[240], output_lens=[64])


def test_rows_have_exact_lengths_consistent_fields_and_the_guides_columns(engine, tmp_path):
    rows = run(engine, tmp_path / "sweep.csv", batch_sizes=[1, 2])
    assert [(r["batch_size"], r["input_len"], r["output_len"]) for r in rows] == [
        (b, i, o) for b in (1, 2) for i in (4, 8) for o in (2, 3)]
    for row in rows:
        assert set(row) == set(CSV_COLUMNS)
        assert (row["backend"], row["device"], row["dtype"]) == ("transformers", "cpu", "float32")
        assert row["quantize"] == "none" and (row["kernels"], row["graphs"]) == ("transformers", "none")
        assert 0 < row["ttft_ms"] <= row["e2e_ms"]
        assert row["e2e_ms"] == pytest.approx(row["ttft_ms"] + row["tpot_ms"] * (row["output_len"] - 1))
        assert row["decode_tokens_per_s"] == pytest.approx(1000 * row["batch_size"] / row["tpot_ms"])
        ceiling = row["roofline_tokens_per_s"]
        assert row["pct_of_roofline"] == pytest.approx(100 * row["decode_tokens_per_s"] / ceiling)
        assert row["input_seq_len(Encoding)"] == row["input_len"]
        assert row["output_seq_len(Decoding)"] == row["output_len"]
        assert row["ResponseTime(s)"] == pytest.approx(row["e2e_ms"] / 1000)
        assert row["forward_first_token_time(ms)"] == row["ttft_ms"]
        assert row["forward_next_token_time(ms)"] == row["tpot_ms"]
    # A larger batch shares the weight reads: its roofline is higher.
    assert rows[4]["roofline_tokens_per_s"] > rows[0]["roofline_tokens_per_s"]


def test_three_timed_runs_by_default_with_their_minimum_and_spread(engine):
    [row] = list(sweep(engine, [1], [4], [3], progress=False, bandwidth_gbs=BANDWIDTH_GBS))
    assert row["repeat"] == 3
    for metric in ("ttft", "tpot"):
        assert 0 < row[f"{metric}_ms_min"] <= row[f"{metric}_ms"]
        assert row[f"{metric}_spread_pct"] >= 100 * (row[f"{metric}_ms"] - row[f"{metric}_ms_min"]) / row[f"{metric}_ms"]
    assert row["flags"] == flags(row)


def test_noisy_points_and_points_above_the_roofline_are_flagged():
    assert flags({"ttft_spread_pct": 3.0, "tpot_spread_pct": 10.0, "pct_of_roofline": 80.0}) == ""
    assert flags({"ttft_spread_pct": 140.0, "tpot_spread_pct": 10.0, "pct_of_roofline": 120.0}) == \
        "ttft spread 140%; above roofline"


def test_the_quick_grid_is_the_default_and_the_guides_grid_one_name_away():
    assert grid_lengths("guides") == ((32, 64, 128, 256, 512, 1024),) * 2
    quick = grid_lengths("quick")
    assert len(quick[0]) * len(quick[1]) <= 6 and inspect.signature(sweep).parameters["input_lens"].default == quick[0]
    with pytest.raises(AscendNbError, match="unknown grid 'full'"):
        grid_lengths("full")


def test_csv_holds_exactly_the_yielded_rows(engine, tmp_path):
    rows = run(engine, tmp_path / "sweep.csv")
    table = read_csv(tmp_path / "sweep.csv")
    assert list(table.columns[: len(CSV_COLUMNS)]) == list(CSV_COLUMNS)
    assert table[list(CSV_COLUMNS)].to_dict("records") == rows


def test_resume_measures_only_missing_points_and_keeps_the_others(engine, tmp_path):
    path = tmp_path / "sweep.csv"
    first = run(engine, path, input_lens=[4])
    before = path.read_text()
    rows = run(engine, path, input_lens=[4, 8])
    assert rows[:2] == first  # read back from the CSV, not measured again
    assert path.read_text().startswith(before)
    assert len(read_rows(path)[1]) == 4
    again = run(engine, path, input_lens=[4, 8])
    assert again == rows and len(read_rows(path)[1]) == 4


def test_resume_key_holds_the_kernel_path(tiny_llama_dir, tmp_path):
    """Rows measured on one kernel path are not reused for another: a resumed CSV never mixes them."""
    import ascend_nb

    path = tmp_path / "sweep.csv"
    load = dict(device="cpu", dtype="float32", backend="accelerated", max_seq_len=64)
    assert {"kernels", "graphs"} <= set(KEY_FIELDS)
    first = run(ascend_nb.load(tiny_llama_dir, kernels="cpu-aten", **load), path, input_lens=[4])
    second = run(ascend_nb.load(tiny_llama_dir, kernels="torch", **load), path, input_lens=[4])
    assert [r["kernels"] for r in first + second] == ["cpu-aten"] * 2 + ["torch"] * 2
    assert len(read_rows(path)[1]) == 4  # measured again, appended beside the first path's rows


def test_resume_key_holds_every_setting_of_the_bench_config():
    """Each BenchConfig field changes a figure, so each is in the key (backends as the row's backend; the
    point's fields as the grid point's), and so is the device's name: a CSV carried to another machine's
    GPU of the same device string is measured again there."""
    from dataclasses import fields

    from ascend_nb.bench.run import BenchConfig, run_sweep

    # a sweep refuses --speculative (and so its --dataset): those never reach a sweep's rows
    settings = {f.name for f in fields(BenchConfig)} - {"backends", "speculative", "dataset"} | {"backend", "device_name"}
    assert settings <= set(KEY_FIELDS)
    with pytest.raises(AscendNbError, match="not over a sweep grid"):
        run_sweep(BenchConfig(backends=("accelerated",), speculative="prompt-lookup"), [1], [8], [4])


def test_a_resumed_csv_never_mixes_settings_it_measures_the_new_ones_beside(engine, tiny_llama_dir, tmp_path):
    import ascend_nb

    path = tmp_path / "sweep.csv"
    first = run(engine, path, input_lens=[4])
    assert [(r["seed"], r["warmup"], r["repeat"], r["tp"], r["max_seq_len"]) for r in first] == [(0, 1, 1, 1, 256)] * 2
    changed = [run(engine, path, input_lens=[4], seed=1), run(engine, path, input_lens=[4], warmup=0),
               run(engine, path, input_lens=[4], repeat=2),
               run(ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", max_seq_len=64), path, input_lens=[4])]
    stored = read_rows(path)[1]
    assert len(stored) == 10  # each setting measured again, appended beside the first rows
    assert [(r["seed"], r["warmup"], r["repeat"], r["max_seq_len"]) for r in stored[::2]] == [
        ("0", "1", "1", "256"), ("1", "1", "1", "256"), ("0", "0", "1", "256"), ("0", "1", "2", "256"),
        ("0", "1", "1", "64")]
    assert all(row not in first for rows in changed for row in rows)
    assert run(engine, path, input_lens=[4], seed=1) == changed[0] and len(read_rows(path)[1]) == 10  # read back


def test_resume_false_starts_the_file_over(engine, tmp_path):
    path = tmp_path / "sweep.csv"
    run(engine, path)
    rows = list(sweep(engine, [1], [4], [2], csv_path=path, resume=False, progress=False, bandwidth_gbs=BANDWIDTH_GBS))
    assert len(read_rows(path)[1]) == len(rows) == 1


def test_a_csv_of_another_format_is_not_overwritten(engine, tmp_path):
    path = tmp_path / "theirs.csv"
    write_guides_csv(run(engine), path)
    content = path.read_text()
    with pytest.raises(AscendNbError, match="other columns"):
        run(engine, path)
    assert path.read_text() == content


def complete(stored: list[dict]) -> bool:
    """Every stored row has a cell for every column and its measured figures."""
    return all(None not in row.values() and row["tpot_ms"] and row["e2e_ms"] for row in stored)


@pytest.mark.parametrize("cut", [0.5, 0.99], ids=["mid-row", "in-the-last-cell"])
def test_a_row_cut_mid_write_is_measured_again_not_kept(engine, tmp_path, capsys, cut):
    path = tmp_path / "sweep.csv"
    first = run(engine, path, input_lens=[4])
    header, row_1, row_2 = path.read_text().splitlines()
    path.write_text(f"{header}\n{row_1}\n{row_2[: int(len(row_2) * cut)]}")  # the last write cut: no line end
    rows = run(engine, path, input_lens=[4])
    assert rows[0] == first[0] and rows[1] != first[1]  # the cut point measured again
    assert rows[1]["tpot_ms"] > 0 and rows[1]["e2e_ms"] > 0
    _, stored = read_rows(path)
    assert len(stored) == 2 and complete(stored) and path.read_text().splitlines()[1] == row_1
    assert f"{path} line 3" in capsys.readouterr().err


@pytest.mark.parametrize("garbage", ["\x00" * 48, "1,transformers,garb\n", "x" * 200_000],
                         ids=["nul-bytes", "fragment", "huge-cell"])
def test_a_garbage_fragment_after_the_rows_is_dropped(engine, tmp_path, garbage):
    path = tmp_path / "sweep.csv"
    first = run(engine, path, input_lens=[4])
    path.write_text(path.read_text() + garbage)
    rows = run(engine, path, input_lens=[4, 8])
    assert rows[:2] == first  # the complete rows are kept, read back
    _, stored = read_rows(path)
    assert len(stored) == 4 and complete(stored)  # rewritten without the fragment


CHILD = textwrap.dedent("""
    import sys
    import ascend_nb
    from ascend_nb.bench.latency_sweep import sweep

    engine = ascend_nb.load(sys.argv[1], device="cpu", dtype="float32")
    for row in sweep(engine, [1], [4, 8, 16], [2, 4, 8, 16], csv_path=sys.argv[2], progress=False, bandwidth_gbs=10.0):
        print("row", flush=True)
""")


def test_a_killed_sweep_resumes_without_duplicated_or_lost_rows(engine, tiny_llama_dir, tmp_path):
    path = tmp_path / "sweep.csv"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tiny_llama_dir), str(path)], stdout=subprocess.PIPE,
                             text=True)
    try:
        for _ in range(2):
            assert child.stdout.readline() == "row\n"
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    _, survived = read_rows(path)
    assert 2 <= len(survived) < 12  # killed mid-way, with complete rows only
    rows = list(sweep(engine, [1], [4, 8, 16], [2, 4, 8, 16], csv_path=path, progress=False, bandwidth_gbs=10.0))
    _, stored = read_rows(path)
    keys = [tuple(r[k] for k in KEY_FIELDS) for r in stored]
    assert len(rows) == len(stored) == len(set(keys)) == 12
    assert stored[: len(survived)] == survived
    assert [(r["input_len"], r["output_len"]) for r in rows] == [(i, o) for i in (4, 8, 16) for o in (2, 4, 8, 16)]


def test_a_served_model_is_refused_with_a_clear_error():
    from ascend_nb.engine.openai_backend import OpenAIEngine

    with pytest.raises(AscendNbError, match="openai backend has no local model"):
        run(OpenAIEngine("served-model"))
