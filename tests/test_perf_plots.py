"""The live sweep figure: one update per point, in every panel; exports."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest

from ascend_nb.bench.latency_sweep import sweep
from ascend_nb.errors import AscendNbError
from ascend_nb.ui.perf_plots import LiveSweepPlot


def row(batch_size: int, input_len: int, output_len: int, backend: str = "transformers") -> dict:
    ttft, tpot = 1.0 + input_len / 10, 2.0 + output_len / 100 + batch_size
    return {"backend": backend, "batch_size": batch_size, "input_len": input_len, "output_len": output_len,
            "ttft_ms": ttft, "tpot_ms": tpot, "decode_tokens_per_s": 1000 * batch_size / tpot,
            "pct_of_roofline": 10.0 * batch_size}


def points(plot: LiveSweepPlot) -> dict[str, int]:
    """How many points each panel shows."""
    heatmap, roofline, *lines = plot.figure.data
    return {"heatmap": sum(v is not None for values in heatmap.z for v in values),
            "roofline": sum(v is not None for values in roofline.z for v in values),
            "ttft": sum(len(t.x) for t in lines[0::2]), "tpot": sum(len(t.x) for t in lines[1::2])}


def test_each_added_point_lands_in_every_panel():
    plot = LiveSweepPlot(widget=True)
    assert isinstance(plot.figure, go.FigureWidget)
    grid = [(b, i, o) for b in (1, 2) for i in (32, 64) for o in (32, 64, 128)]
    for count, point in enumerate(grid, start=1):
        plot.add(row(*point))
        seen = grid[:count]
        assert points(plot) == {"heatmap": count, "roofline": count,
                                "ttft": len({(b, i) for b, i, _ in seen}), "tpot": len({(b, o) for b, _, o in seen})}
    ttft_b1, tpot_b1 = plot.figure.data[2], plot.figure.data[3]
    assert (ttft_b1.name, list(ttft_b1.x)) == ("batch 1", [32, 64])
    assert list(ttft_b1.y) == pytest.approx([1 + 32 / 10, 1 + 64 / 10])  # mean over output lengths
    assert list(tpot_b1.x) == [32, 64, 128]
    assert len(plot.frame()) == len(grid)


def test_two_backends_get_their_own_lines():
    plot = LiveSweepPlot([row(1, 32, 32, "transformers"), row(1, 32, 32, "accelerated")], widget=False)
    names = [trace.name for trace in plot.figure.data[2::2]]
    assert sorted(names) == ["accelerated · batch 1", "transformers · batch 1"]
    assert points(plot)["heatmap"] == 2


def test_the_first_backend_is_relabelled_when_a_second_arrives():
    plot = LiveSweepPlot([row(1, 32, 32, "transformers")], widget=True)
    assert plot.figure.data[2].name == "batch 1"
    plot.add(row(1, 32, 32, "accelerated"))
    assert sorted(t.name for t in plot.figure.data[2:]) == ["accelerated · batch 1"] * 2 + ["transformers · batch 1"] * 2


def test_ticks_are_the_measured_lengths_and_colour_bars_stand_beside_their_heatmaps():
    plot = LiveSweepPlot([row(1, i, o) for i in (32, 256, 1024) for o in (32, 128)], widget=False)
    layout = plot.figure.layout
    assert list(layout.xaxis.tickvals) == [32, 256, 1024] and list(layout.xaxis.ticktext) == ["32", "256", "1024"]
    assert list(layout.xaxis2.tickvals) == [32, 128]
    tokens, roofline = plot.figure.data[:2]
    assert layout.xaxis3.domain[1] < tokens.colorbar.x < layout.xaxis4.domain[0]
    assert roofline.colorbar.x > layout.xaxis4.domain[1]


def test_cells_above_the_roofline_and_noisy_points_are_marked():
    high = {**row(1, 32, 32), "pct_of_roofline": 130.0, "flags": "above roofline"}
    noisy = {**row(1, 32, 64), "pct_of_roofline": 40.0, "flags": "ttft spread 60%"}
    plot = LiveSweepPlot([high, noisy], widget=False, roofline_note="24.0 GB/s, measured (cpu, 269 MB read)")
    tokens, roofline = plot.figure.data[:2]
    assert [list(r) for r in roofline.text] == [["130▲", "40!"]]
    assert [list(r) for r in tokens.text][0][1].endswith("!")
    assert "measured (cpu, 269 MB read)" in plot.figure.layout.title.subtitle.text  # under the title, never cut


def test_rows_without_a_roofline_still_plot():
    plot = LiveSweepPlot(widget=False)
    plot.add({key: value for key, value in row(1, 32, 32).items() if key != "pct_of_roofline"})
    assert points(plot) == {"heatmap": 1, "roofline": 0, "ttft": 1, "tpot": 1}


def test_follow_a_real_sweep(tiny_engine):
    plot = LiveSweepPlot(widget=False)
    table = plot.follow(sweep(tiny_engine, [1], [4, 8], [2, 3], progress=False, bandwidth_gbs=10.0))
    assert len(table) == 4 and points(plot)["roofline"] == 4


def test_exports_html_and_json(tmp_path):
    plot = LiveSweepPlot([row(1, 32, 32), row(1, 64, 32)], widget=True)
    html = plot.export(tmp_path / "sweep.html").read_text()
    assert "plotly" in html.lower() and "batch 1" in html
    figure = json.loads(plot.export(tmp_path / "sweep.json").read_text())
    assert [len(figure["data"][1]["y"]), len(figure["data"][2]["x"])] == [2, 2]  # roofline rows, TTFT points
    with pytest.raises(AscendNbError, match=".html or .json"):
        plot.export(tmp_path / "sweep.png")
