"""04_performance.ipynb runs headless on a tiny grid: live figure, roofline, guides' tables, trace."""

from __future__ import annotations

import pandas as pd
import pytest

from ascend_nb.bench.guides_csv import read_csv
from ascend_nb.bench.mindie_csv import read_mindie_csv
from tests.browser import assert_reads_offline
from tests.notebook_runner import export_html, outputs_text, plotly_outputs, run_notebook, static_figures, widget_views

GRID = {"BATCH_SIZES": [1], "INPUT_LENS": [8, 16], "OUTPUT_LENS": [2, 4]}  # the GRID parameter's lists, tiny


def figure_points(notebook) -> list[int]:
    """Roofline heatmap cells (one per sweep point) of every sweep figure's static output, in cell order."""
    figures = static_figures(notebook)
    return [sum(v is not None for row in figure["data"][1]["z"] for v in row)
            for cell in plot_cells(notebook) for figure in figures.get(cell, [])]


def plot_cells(notebook) -> list[int]:
    return [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and "LiveSweepPlot(" in cell.source
            and "import" not in cell.source]


@pytest.mark.slow
def test_performance_notebook_runs_headless(tmp_path):
    notebook = run_notebook("04_performance.ipynb", {
        **GRID, "DTYPE": "float32", "REPEAT": 1, "WARMUP": 0,  # LIVE_WIDGET default: the FigureWidget, as in JupyterLab
        "TRACE_INPUT_LEN": 16, "TRACE_DECODE_STEPS": 2, "TP_SIZES": [1, 3], "TP_LENS": (16, 4),
        "LOAD_LEVELS": [1, 2], "LOAD_PROMPTS": 2},  # the load section's settings are papermill parameters too
        timeout=900, tmp_dir=tmp_path)
    text = outputs_text(notebook)
    assert "served (transformers serve)" in text and "local transformers" in text
    results = read_csv(tmp_path / "results" / "04_performance.csv")
    assert len(results) == 8  # the transformers sweep, then the accelerated comparison
    tp_table = next(o["data"]["text/plain"] for c in notebook.cells if "bench_tensor_parallel(" in c.source
                    for o in c.outputs if o["output_type"] == "execute_result")
    assert [line.split()[0] for line in tp_table.splitlines()[1:]] == ["1", "3"]  # one row per tp size
    figures = static_figures(notebook)
    for cell in plot_cells(notebook):  # each live figure ends as one static figure; no widget left behind
        assert len(figures[cell]) == 1
        assert widget_views(notebook.cells[cell]) == 0
    assert "sweep transformers: 4/4 points" in text and "done" in text  # the progress bar's final state
    assert figure_points(notebook)[0] == 4
    assert "best decode:" in text and "decode roofline: median" in text
    assert figure_points(notebook)[1] == 8
    assert "accelerated vs transformers (geometric mean over 4 points)" in text
    assert "next_token_speedup" in text
    for expected in ("Atlas 300I DUO", "H100 SXM", "measured", "first_token_speedup", "aten::", "guides' format"):
        assert expected in text
    assert (tmp_path / "results" / "04_performance.html").stat().st_size > 100_000  # plotly.js inlined
    assert read_csv(tmp_path / "results" / "performance_test_cpu_transformers.csv")["ttft_ms"].tolist() == \
        results[results["backend"] == "transformers"]["ttft_ms"].tolist()
    load = pd.read_csv(tmp_path / "results" / "04_load.csv")  # the served-model-under-load section
    assert load["concurrency"].tolist() == [1, 2] and (load["failed"] == 0).all()
    assert read_mindie_csv(tmp_path / "results" / "04_load_mindie.csv")["Batchsize"].tolist() == [1, 2]
    assert "highest load meeting" in text and "TPOT" in text
    assert "load level c=2: 2/2 requests" in text  # the load bars end in their final state too (not 0/4)
    load_cells = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and "LiveLoadPlot(" in c.source]
    assert load_cells and all(len(figures.get(cell, [])) == 1 for cell in load_cells)  # the load figure stays too
    assert all(widget_views(notebook.cells[cell]) == 0 for cell in load_cells)
    assert_reads_offline(export_html(tmp_path / "executed_04_performance.ipynb"), plotly_outputs(notebook))
