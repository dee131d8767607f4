"""The guides' CSV format, the published reference tables and compare()."""

from __future__ import annotations

import pandas as pd
import pytest

from ascend_nb.bench import published
from ascend_nb.bench.comparison import compare, summarize
from ascend_nb.bench.guides_csv import GUIDE_COLUMNS, read_csv, write_guides_csv
from ascend_nb.errors import AscendNbError

# What the guides' performance test writes (it adds two columns after the six DESIGN.md lists).
THEIR_CSV = ",".join(GUIDE_COLUMNS + ("pre_next_token_time(ms)", "post_next_token_time_post(ms)")) + """
1,32,32,2.98,235.0490424,88.5,0,0
1,32,64,6.12,231.5,93.25,0,0
"""


def result_rows() -> list[dict]:
    """Rows with our field names for a 2x2 grid, made-up but self-consistent timings."""
    rows = []
    for input_len in (32, 64):
        for output_len in (32, 64):
            ttft, tpot = 10.0 + input_len / 3, 5.0 + output_len / 7
            rows.append({"batch_size": 1, "input_len": input_len, "output_len": output_len, "ttft_ms": ttft,
                         "tpot_ms": tpot, "e2e_ms": ttft + tpot * (output_len - 1)})
    return rows


def test_guides_csv_round_trips(tmp_path):
    rows = result_rows()
    path = write_guides_csv(rows, tmp_path / "performance_test_npu_tiny.csv")
    assert path.read_text().splitlines()[0] == ",".join(GUIDE_COLUMNS)
    table = read_csv(path)
    for field in ("batch_size", "input_len", "output_len", "ttft_ms", "tpot_ms"):
        assert table[field].tolist() == [row[field] for row in rows]
    assert table["e2e_ms"].tolist() == pytest.approx([row["e2e_ms"] for row in rows], rel=1e-12)
    write_guides_csv(table, tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == path.read_text()


def test_their_own_csv_loads_with_our_field_names(tmp_path):
    path = tmp_path / "performance_test_npu_aquila_7b.csv"
    path.write_text(THEIR_CSV)
    table = read_csv(path)
    assert table["input_len"].tolist() == [32, 32] and table["output_len"].tolist() == [32, 64]
    assert table["ttft_ms"].tolist() == [235.0490424, 231.5]
    assert table["e2e_ms"].tolist() == pytest.approx([2980.0, 6120.0])
    assert table["decode_tokens_per_s"].tolist() == pytest.approx([1000 / 88.5, 1000 / 93.25])
    assert table["pre_next_token_time(ms)"].tolist() == [0, 0]  # extra columns are kept


def test_read_csv_rejects_other_files(tmp_path):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(AscendNbError, match="not a performance CSV"):
        read_csv(tmp_path / "other.csv")
    with pytest.raises(AscendNbError, match="does not exist"):
        read_csv(tmp_path / "missing.csv")


def test_reference_tables_derive_times_from_published_speeds():
    a100 = published.performance("aquila-7b", "A100").iloc[0]
    assert a100["ttft_ms"] == pytest.approx(1000 / 22.68088002)
    assert a100["tpot_ms"] == pytest.approx(1000 / 88.88888889)
    duo = published.performance("aquila-7b", "Atlas 300I DUO").iloc[0]
    assert (duo["ttft_ms"], duo["tpot_ms"]) == (235.0490424, 91.39817598)
    assert duo["decode_tokens_per_s"] == pytest.approx(1000 / 91.39817598)
    assert (duo["input_len_min"], duo["input_len_max"]) == (32, 1024)
    with pytest.raises(AscendNbError, match="device='TPU'"):
        published.performance(device="TPU")


def test_device_specs():
    table = published.devices()
    assert {"Atlas 800I A2", "Atlas 300I DUO", "A100", "H100 SXM"} <= set(table["device"])
    duo = published.device_spec("Atlas 300I DUO")
    assert (duo["bandwidth_gbs_max"], bool(duo["supports_bf16"])) == (204, False)
    assert published.device_spec("A100")["bandwidth_gbs_max"] == 2039


def test_compare_reproduces_the_guides_compare_row():
    atlas = published.performance("aquila-7b", "Atlas 800I A2")
    a100 = published.performance("aquila-7b", "A100")
    row = compare(atlas, a100, labels=("Atlas 800I A2", "A100")).iloc[0]
    assert row["first_token_speedup"] == pytest.approx(1.067157158, rel=1e-8)
    assert row["next_token_speedup"] == pytest.approx(0.760111527, rel=1e-8)
    assert row["ttft_ms (A100)"] == pytest.approx(1000 / 22.68088002)


def test_compare_two_runs_point_by_point():
    ours = result_rows()
    theirs = [{**row, "ttft_ms": row["ttft_ms"] * 2, "tpot_ms": row["tpot_ms"] * 4} for row in ours[::-1]]
    table = compare(ours, theirs)
    assert sorted(zip(table["input_len"], table["output_len"])) == [(32, 32), (32, 64), (64, 32), (64, 64)]
    assert table["points"].tolist() == [1] * 4
    assert table["first_token_speedup"].tolist() == pytest.approx([2.0] * 4)
    assert table["next_token_speedup"].tolist() == pytest.approx([4.0] * 4)


def test_compare_a_run_with_a_published_grid_average():
    ours = pd.DataFrame(result_rows() + [{**result_rows()[0], "input_len": 2048}])
    row = compare(ours, published.performance("aquila-7b", "Atlas 300I DUO")).iloc[0]
    inside = ours[ours["input_len"] <= 1024]
    assert (row["input_len"], row["output_len"], row["points"]) == ("32-1024", "32-1024", 4)
    assert row["first_token_speedup"] == pytest.approx(235.0490424 / inside["ttft_ms"].mean())
    assert row["next_token_speedup"] == pytest.approx(91.39817598 / inside["tpot_ms"].mean())


def test_compare_refuses_mixed_results_and_disjoint_grids():
    mixed = [{**row, "backend": backend} for backend in ("a", "b") for row in result_rows()]
    with pytest.raises(AscendNbError, match="several runs"):
        compare(mixed, result_rows())
    with pytest.raises(AscendNbError, match="share no batch size"):
        compare(result_rows(), [{**row, "batch_size": 8} for row in result_rows()])


def test_summarize_puts_a_run_in_the_guides_table_form():
    rows = [{**row, "backend": "transformers", "model": "tiny", "pct_of_roofline": 10.0 * i}
            for i, row in enumerate(result_rows())]
    summary = summarize(rows)
    assert len(summary) == 1
    row = summary.iloc[0]
    assert (row["source"], row["points"], row["input_len_min"], row["input_len_max"]) == ("this run", 4, 32, 64)
    assert row["tpot_ms"] == pytest.approx(sum(r["tpot_ms"] for r in rows) / 4)
    assert row["decode_tokens_per_s"] == pytest.approx(1000 / row["tpot_ms"])
    assert row["pct_of_roofline"] == pytest.approx(15.0)
    both = pd.concat([published.performance("aquila-7b"), summary], ignore_index=True)
    assert both["tpot_ms"].notna().all()
