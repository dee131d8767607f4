"""The live load figure: one point per level in both panels, SLO lines, the knee."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from ascend_nb.ui.serve_plots import COLORS, LiveLoadPlot


def level(concurrency: int, failed: int = 0) -> dict:
    return {"concurrency": concurrency, "request_rate": math.inf, "completed": 8 - failed, "failed": failed,
            "request_throughput": float(concurrency), "output_throughput": 30.0 * concurrency,
            "p99_tpot_ms": 10.0 * concurrency, "p99_ttft_ms": 120.0 * concurrency}


def test_each_level_lands_in_both_panels_with_the_knee_marked():
    plot = LiveLoadPlot(slo="ttft_ms=500,tpot_ms=50", widget=True)
    assert isinstance(plot.figure, go.FigureWidget)
    tpot, ttft, tpot_knee, ttft_knee = plot.figure.data
    assert [shape.x0 for shape in plot.figure.layout.shapes] == [50.0, 500.0]  # the SLO lines
    for count, concurrency in enumerate((1, 2, 4, 8), start=1):
        plot.add(level(concurrency))
        assert len(tpot.x) == len(ttft.x) == count
    assert list(tpot.x) == [10.0, 20.0, 40.0, 80.0] and list(ttft.y) == [30.0, 60.0, 120.0, 240.0]
    assert list(tpot.text) == ["c=1", "c=2", "c=4", "c=8"]
    assert list(tpot.marker.color) == [COLORS[True]] * 3 + [COLORS[False]]  # c=8 misses both SLOs
    assert plot.knee()["concurrency"] == 4 and list(tpot_knee.x) == [40.0] and list(ttft_knee.x) == [480.0]


def test_lost_requests_disqualify_a_level_and_no_slo_means_no_knee(tmp_path):
    plot = LiveLoadPlot([level(1), level(2, failed=1)], slo={"tpot_ms": 100}, widget=False)
    assert plot.knee()["concurrency"] == 1
    assert len(LiveLoadPlot([level(1)], widget=False).figure.data[2].x) == 0
    assert plot.export(tmp_path / "load.html").stat().st_size > 100_000
