"""The live sweep figure: one update per point, in every panel; exports."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest

from ascend_nb.bench.sweep import sweep
from ascend_nb.errors import AscendNbError
from ascend_nb.ui.perf_plots import LiveSweepPlot


def row(batch_size: int, input_len: int, output_len: int, backend: str = "transformers") -> dict:
    ttft, tpot = 1.0 + input_len / 10, 2.0 + output_len / 100 + batch_size
    return {"backend": backend, "batch_size": batch_size, "input_len": input_len, "output_len": output_len,
            "ttft_ms": ttft, "tpot_ms": tpot, "decode_tokens_per_s": 1000 * batch_size / tpot,
            "pct_of_roofline": 10.0 * batch_size}


def points(plot: LiveSweepPlot) -> dict[str, int]:
    """How many points each panel shows."""
    heatmap, bar, *lines = plot.figure.data
    return {"heatmap": sum(v is not None for values in heatmap.z for v in values), "bar": len(bar.y),
            "ttft": sum(len(t.x) for t in lines[0::2]), "tpot": sum(len(t.x) for t in lines[1::2])}


def test_each_added_point_lands_in_every_panel():
    plot = LiveSweepPlot(widget=True)
    assert isinstance(plot.figure, go.FigureWidget)
    grid = [(b, i, o) for b in (1, 2) for i in (32, 64) for o in (32, 64, 128)]
    for count, point in enumerate(grid, start=1):
        plot.add(row(*point))
        seen = grid[:count]
        assert points(plot) == {"heatmap": count, "bar": count,
                                "ttft": len({(b, i) for b, i, _ in seen}), "tpot": len({(b, o) for b, _, o in seen})}
    ttft_b1, tpot_b1 = plot.figure.data[2], plot.figure.data[3]
    assert (ttft_b1.name, list(ttft_b1.x)) == ("batch 1", [32, 64])
    assert list(ttft_b1.y) == pytest.approx([1 + 32 / 10, 1 + 64 / 10])  # mean over output lengths
    assert list(tpot_b1.x) == [32, 64, 128]
    assert len(plot.frame()) == len(grid)


def test_two_backends_get_their_own_lines():
    plot = LiveSweepPlot([row(1, 32, 32, "transformers"), row(1, 32, 32, "accelerated")], widget=False)
    names = [trace.name for trace in plot.figure.data[2::2]]
    assert sorted(names) == ["accelerated b1", "transformers b1"]
    assert points(plot)["heatmap"] == 2


def test_rows_without_a_roofline_still_plot():
    plot = LiveSweepPlot(widget=False)
    plot.add({key: value for key, value in row(1, 32, 32).items() if key != "pct_of_roofline"})
    assert points(plot) == {"heatmap": 1, "bar": 0, "ttft": 1, "tpot": 1}


def test_follow_a_real_sweep(tiny_engine):
    plot = LiveSweepPlot(widget=False)
    table = plot.follow(sweep(tiny_engine, [1], [4, 8], [2, 3], progress=False, bandwidth_gbs=10.0))
    assert len(table) == 4 and points(plot)["bar"] == 4


def test_exports_html_and_json(tmp_path):
    plot = LiveSweepPlot([row(1, 32, 32), row(1, 64, 32)], widget=True)
    html = plot.export(tmp_path / "sweep.html").read_text()
    assert "plotly" in html.lower() and "batch 1" in html
    figure = json.loads(plot.export(tmp_path / "sweep.json").read_text())
    assert [len(trace["x"]) for trace in figure["data"][1:3]] == [2, 2]
    with pytest.raises(AscendNbError, match=".html or .json"):
        plot.export(tmp_path / "sweep.png")
