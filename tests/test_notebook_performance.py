"""04_performance.ipynb runs headless on a tiny grid: live figure, roofline, guides' tables, trace."""

from __future__ import annotations

import pandas as pd
import pytest

from ascend_nb.bench.guides_csv import read_csv
from ascend_nb.bench.mindie_csv import read_mindie_csv
from ascend_nb.models.loading import BACKENDS
from tests.notebook_runner import outputs_text, run_notebook

GRID = {"BATCH_SIZES": [1], "INPUT_LENS": [8, 16], "OUTPUT_LENS": [2, 4]}


def figure_points(notebook) -> list[int]:
    """Bar points (one per sweep point) of every figure in the outputs, as last re-rendered."""
    counts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            figure = output.get("data", {}).get("application/vnd.plotly.v1+json")
            if figure:
                counts.append(sum(len(trace.get("y", [])) for trace in figure["data"] if trace["type"] == "bar"))
    return counts


@pytest.mark.slow
def test_performance_notebook_runs_headless(tmp_path):
    notebook = run_notebook("04_performance.ipynb", {
        **GRID, "DTYPE": "float32", "REPEAT": 1, "WARMUP": 0, "LIVE_WIDGET": False,
        "TRACE_INPUT_LEN": 16, "TRACE_DECODE_STEPS": 2, "TP_SIZES": [1, 3], "TP_LENS": (16, 4)},
        timeout=900, tmp_dir=tmp_path)
    text = outputs_text(notebook)
    assert "served (transformers serve)" in text and "local transformers" in text
    results = read_csv(tmp_path / "results" / "04_performance.csv")
    compared = "accelerated" in BACKENDS
    assert len(results) == (8 if compared else 4)
    tp_table = next(o["data"]["text/plain"] for c in notebook.cells if "bench_tensor_parallel(" in c.source
                    for o in c.outputs if o["output_type"] == "execute_result")
    assert [line.split()[1] for line in tp_table.splitlines()[1:]] == ["1", "3"]  # one row per tp size
    assert figure_points(notebook)[0] == 4  # the live figure, re-rendered once per point
    if compared:
        assert figure_points(notebook)[1] == 8
        assert "next_token_speedup" in text
    else:
        assert "No backend comparison" in text
    for expected in ("Atlas 300I DUO", "H100 SXM", "measured", "first_token_speedup", "aten::", "guides' format"):
        assert expected in text
    assert (tmp_path / "results" / "04_performance.html").stat().st_size > 100_000  # plotly.js inlined
    assert read_csv(tmp_path / "results" / "performance_test_cpu_transformers.csv")["ttft_ms"].tolist() == \
        results[results["backend"] == "transformers"]["ttft_ms"].tolist()
    load = pd.read_csv(tmp_path / "results" / "04_load.csv")  # the served-model-under-load section
    assert load["concurrency"].tolist() == [1, 2, 4] and (load["failed"] == 0).all()
    assert read_mindie_csv(tmp_path / "results" / "04_load_mindie.csv")["Batchsize"].tolist() == [1, 2, 4]
    assert "highest load meeting" in text and "TPOT" in text
