"""Live latency-throughput figure of a served model under load: one point per load level.

Output tokens/s against p99 TPOT (left) and against p99 TTFT (right), in the order the levels ran;
the SLOs as dashed vertical lines, points green where the level meets every SLO at p99 and red where
it does not, and the knee (the highest load meeting the SLOs, :func:`ascend_nb.bench.serve_metrics.knee`)
marked with a star. Rows come from :func:`ascend_nb.bench.serve_load`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ascend_nb.figure_style import house_style
from ascend_nb.bench.serve_metrics import knee, level_label, level_meets_slo, parse_slo
from ascend_nb.ui.perf_plots import LiveFigure

PANELS = (("tpot_ms", "p99 TPOT (ms)"), ("ttft_ms", "p99 TTFT (ms)"))
COLORS = {True: "#2ca02c", False: "#d62728", None: "#1f77b4"}  # meets the SLOs / misses / no SLO given


class LiveLoadPlot(LiveFigure):
    """The load figure, updated once per added level row (see :class:`~ascend_nb.ui.perf_plots.LiveFigure`)."""

    def __init__(self, rows: Iterable[Mapping] = (), slo: str | Mapping[str, float] | None = None,
                 widget: bool | None = None, title: str = "Served model under load"):
        self.slo = parse_slo(slo)
        figure = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                               subplot_titles=[f"throughput vs {axis.split(' (')[0]}" for _, axis in PANELS])
        for col, (key, axis) in enumerate(PANELS, start=1):
            figure.add_trace(go.Scatter(x=[], y=[], text=[], mode="lines+markers+text", textposition="top center",
                                        name="load levels", showlegend=col == 1, line={"color": "#7f7f7f"},
                                        marker={"size": 11},
                                        hovertemplate="%{text}: %{x:.1f} ms, %{y:.1f} tok/s<extra></extra>"),
                             row=1, col=col)
            figure.update_xaxes(title_text=axis, rangemode="tozero", row=1, col=col)
            if key in self.slo:
                figure.add_vline(x=self.slo[key], line_dash="dash", line_color=COLORS[False], row=1, col=col,
                                 annotation_text=f"SLO {self.slo[key]:g} ms", annotation_position="top right")
        for col in (1, 2):
            figure.add_trace(go.Scatter(x=[], y=[], mode="markers", name="knee: highest load meeting the SLOs",
                                        showlegend=col == 1, hoverinfo="skip",
                                        marker={"symbol": "star", "size": 22, "color": "gold",
                                                "line": {"color": "black", "width": 1}}), row=1, col=col)
        figure.update_yaxes(title_text="output tokens/s", rangemode="tozero", row=1, col=1)
        figure.update_layout(title=title, height=460)
        house_style(figure)
        super().__init__(figure, rows, widget)

    def knee(self) -> dict | None:
        """The row of the highest load meeting the SLOs so far (None without SLOs or when none meets them)."""
        return knee(self.rows, self.slo) if self.slo else None

    def _render(self) -> None:
        labels = [level_label(row) for row in self.rows]
        colors = [COLORS[level_meets_slo(row, self.slo) if self.slo else None] for row in self.rows]
        best = self.knee()
        with self.figure.batch_update():
            for index, (key, _) in enumerate(PANELS):
                levels, star = self.figure.data[index], self.figure.data[index + len(PANELS)]
                levels.x = [row.get(f"p99_{key}") for row in self.rows]
                levels.y = [row.get("output_throughput") for row in self.rows]
                levels.text, levels.marker.color = labels, colors
                star.x = [best[f"p99_{key}"]] if best else []
                star.y = [best["output_throughput"]] if best else []
