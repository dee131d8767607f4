"""MindIE ModelTest's performance CSV: our rows round-trip through it, and theirs read back."""

from __future__ import annotations

import math

import pytest

from ascend_nb.bench.mindie_csv import AVERAGE_COLUMNS, MINDIE_COLUMNS, read_mindie_csv, write_mindie_csv
from ascend_nb.errors import AscendNbError

ROWS = [{"model": "aquila-7b", "concurrency": c, "request_rate": math.inf, "input_len": 256, "output_len": 64,
         "duration_s": 1.5 * c, "mean_ttft_ms": 40.0 * c, "mean_tpot_ms": 12.5 + c, "output_throughput": 80.0 * c}
        for c in (1, 2, 4)]


def test_our_rows_round_trip(tmp_path):
    path = write_mindie_csv(ROWS, tmp_path / "performance_pa_batch1_tp1_result.csv")
    header = path.read_text().splitlines()[0]
    assert header.split(",") == list(MINDIE_COLUMNS)
    table = read_mindie_csv(path)
    for column in ("model", "concurrency", "input_len", "output_len", "duration_s", "mean_ttft_ms", "mean_tpot_ms",
                   "output_throughput"):
        assert table[column].tolist() == [row[column] for row in ROWS], column
    throughput = [1000.0 * r["concurrency"] / r["mean_tpot_ms"] for r in ROWS]
    assert table["Non-first token Throughput(Tokens/s)"].tolist() == pytest.approx(throughput)
    averages = table[list(AVERAGE_COLUMNS)]
    assert averages.iloc[:-1].isna().all().all()  # as ModelTest: the averages sit on the last row only
    assert averages.iloc[-1].tolist() == pytest.approx([sum(throughput) / 3, sum(r["output_throughput"] for r in ROWS) / 3])


def test_reads_modeltest_own_files_padded_and_older_spellings(tmp_path):
    """Cells padded with ljust as ModelTest writes them; "Throughout" and ``Throughput(Tokens/s)`` as older
    versions spell them; the '|'-separated formatted variant."""
    cells = [["llama2_7b".ljust(15), "1".ljust(15), "256".ljust(15), "64".ljust(15), "2.5".ljust(15), "85.1".ljust(25),
              "37.6".ljust(25), "26.59".ljust(36), "25.6".ljust(25)]]
    cells[-1] += ["26.59".ljust(45), "25.6".ljust(35)]
    old = ["Model", "Batchsize", "In_seq", "Out_seq", "Total time(s)", "First token time(ms)", "Non-first token time(ms)",
           "Non-first token Throughout(Tokens/s)", "Throughout(Tokens/s)", "Non-first token Throughout Average(Tokens/s)",
           "E2E Throughout Average(Tokens/s)"]
    for sep, name in ((",", "result.csv"), ("|", "formatted_result.csv")):
        path = tmp_path / name
        path.write_text(sep.join(old) + "\n" + "\n".join(sep.join(row) for row in cells) + "\n")
        table = read_mindie_csv(path)
        assert table["model"].tolist() == ["llama2_7b"] and table["concurrency"].tolist() == [1]
        assert table["mean_tpot_ms"].tolist() == [37.6] and table["output_throughput"].tolist() == [25.6]
        assert table["E2E Throughput Average(Tokens/s)"].tolist() == [25.6]


def test_clear_errors(tmp_path):
    with pytest.raises(AscendNbError, match="does not exist"):
        read_mindie_csv(tmp_path / "missing.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(AscendNbError, match="not a MindIE performance CSV"):
        read_mindie_csv(tmp_path / "other.csv")
    with pytest.raises(AscendNbError, match="no rows"):
        write_mindie_csv([], tmp_path / "empty.csv")
