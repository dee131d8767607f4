"""Live latency-sweep figure: four panels that fill in as each sweep point lands.

TTFT vs input length and TPOT vs output length (one line per backend and batch size, averaged
over the other length, ticks at the measured lengths), and two heatmaps over the grid with their
colour bars beside them: decode tokens/s and the share of the decode roofline reached (cells above
100 % and noisy points are marked). Live it is a plotly ``FigureWidget`` (or, with ``widget=False``,
a figure re-rendered in place); when the sweep ends the output becomes a static plotly figure, so
executed and exported notebooks show it (see :class:`ascend_nb.ui.figures.FigureDisplay`).
:class:`LiveFigure` holds that machinery for every live figure (the sweep's, the load benchmark's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ascend_nb.figure_style import house_style
from ascend_nb.errors import AscendNbError
from ascend_nb.files import atomic_write_text
from ascend_nb.ui.figures import FigureDisplay

PANELS = ("TTFT vs input length", "TPOT vs output length", "Decode tokens/s", "% of decode roofline")
_HEAT = {"decode_tokens_per_s": (0, "tok/s", "Viridis"), "pct_of_roofline": (1, "% of roofline", "RdYlGn")}


def _colorbar_beside(figure: go.Figure, axis: str, title: str) -> dict:
    """A colour bar standing right of the subplot whose x axis is ``axis``, as tall as its row."""
    x_domain = figure.layout[axis].domain
    y_domain = figure.layout["y" + axis[1:]].domain
    return {"title": {"text": title, "side": "right"}, "x": x_domain[1] + 0.008, "xanchor": "left",
            "y": (y_domain[0] + y_domain[1]) / 2, "len": y_domain[1] - y_domain[0], "thickness": 12}


class LiveFigure:
    """A figure re-drawn from its rows after each added row, in one notebook output that is live
    while rows come and static once they end (:class:`~ascend_nb.ui.figures.FigureDisplay`; ``widget``
    None: a FigureWidget when a widget frontend is likely). Subclasses build the figure and implement
    ``_render`` (rows -> traces)."""

    def __init__(self, figure: go.Figure, rows: Iterable[Mapping] = (), widget: bool | None = None):
        self._display = FigureDisplay(figure, widget)
        self.widget, self.figure = self._display.widget, self._display.figure
        self.rows: list[dict] = [dict(row) for row in rows]
        if self.rows:
            self._render()

    def show(self) -> None:
        """Display the figure in the notebook (call once, before the rows start coming)."""
        self._display.show()

    def add(self, row: Mapping) -> None:
        """Add one row and update every panel in one batch."""
        self.rows.append(dict(row))
        self._render()
        self._display.refresh()

    def follow(self, rows: Iterable[Mapping]) -> pd.DataFrame:
        """Add rows as they come (e.g. from a generator of results); return them all.
        When they end (or fail), the figure is left as a static output."""
        try:
            for row in rows:
                self.add(row)
        finally:
            self.finish()
        return self.frame()

    def finish(self) -> None:
        """Leave the figure as it is now as a static plotly output (for executed/exported notebooks)."""
        self._display.finish()

    def frame(self) -> pd.DataFrame:
        """The rows added so far."""
        return pd.DataFrame(self.rows)

    def export(self, path: str | Path) -> Path:
        """Write the figure as self-contained HTML (``.html``, plotly.js inlined, opens offline) or
        plotly JSON (``.json``)."""
        path = Path(path)
        if path.suffix == ".html":
            return atomic_write_text(path, self.figure.to_html(include_plotlyjs=True, full_html=True))
        if path.suffix == ".json":
            return atomic_write_text(path, self.figure.to_json())
        raise AscendNbError(f"cannot export a figure to {path.name}: use a .html or .json file name")

    def _render(self) -> None:
        raise NotImplementedError


class LiveSweepPlot(LiveFigure):
    """A sweep figure that updates once per added row. ``widget=None`` picks the FigureWidget when
    :func:`~ascend_nb.ui.figures.widget_frontend_likely`, else the ``display_id`` fallback.
    ``roofline_note`` (e.g. where the bandwidth came from) is printed under the figure."""

    def __init__(self, rows: Iterable[Mapping] = (), widget: bool | None = None, title: str = "Latency sweep",
                 roofline_note: str | None = None):
        figure = make_subplots(rows=2, cols=2, subplot_titles=PANELS, vertical_spacing=0.14, horizontal_spacing=0.16)
        for metric, (offset, unit, scale) in _HEAT.items():
            axis = ("xaxis3", "xaxis4")[offset]
            figure.add_trace(go.Heatmap(x=[], y=[], z=[], text=[], texttemplate="%{text}", colorscale=scale,
                                        name=unit, colorbar=_colorbar_beside(figure, axis, unit),
                                        zmin=0 if offset else None, zmax=100 if offset else None,
                                        hovertemplate="%{y}, out %{x}: %{z:.1f} " + unit + "<extra></extra>"),
                             row=2, col=1 + offset)
        note = "▲ above the roofline · ! runs spread more than 25 %"
        if roofline_note:
            note = f"roofline: {roofline_note} · {note}"
        figure.update_layout(title={"text": title, "subtitle": {"text": note, "font": {"size": 11, "color": "#555"}}},
                             height=860)
        house_style(figure)
        figure.update_layout(margin={"t": 100})
        for col, axis in ((1, "input length (tokens)"), (2, "output length (tokens)")):
            figure.update_xaxes(title_text=axis, type="log", row=1, col=col)
            figure.update_yaxes(title_text="ms", row=1, col=col)
        for col in (1, 2):  # the two heatmaps share their rows: labels on the left one only
            figure.update_xaxes(title_text="output length", type="category", row=2, col=col)
            figure.update_yaxes(type="category", autorange="reversed", showticklabels=col == 1, row=2, col=col)
        self._series: dict[tuple[str, int], tuple[int, int]] = {}  # (backend, batch) -> trace indices
        super().__init__(figure, rows, widget)

    @staticmethod
    def _series_label(backend: str, batch_size: int, several_backends: bool) -> str:
        return f"{backend} · batch {batch_size}" if several_backends else f"batch {batch_size}"

    def _add_series(self, key: tuple[str, int]) -> None:
        color = qualitative.Plotly[len(self._series) % len(qualitative.Plotly)]
        style = {"mode": "lines+markers", "line": {"color": color}, "legendgroup": f"{key}"}
        self.figure.add_trace(go.Scatter(x=[], y=[], **style), row=1, col=1)
        self.figure.add_trace(go.Scatter(x=[], y=[], showlegend=False, **style), row=1, col=2)
        self._series[key] = (len(self.figure.data) - 2, len(self.figure.data) - 1)

    def _render(self) -> None:
        table = self.frame()
        if "backend" not in table:
            table["backend"] = ""
        table["backend"] = table["backend"].fillna("").astype(str)
        for column in ("pct_of_roofline", "flags"):
            if column not in table:
                table[column] = float("nan") if column == "pct_of_roofline" else ""
        several = table["backend"].nunique() > 1
        table["series"] = [self._series_label(b, n, several) for b, n in zip(table["backend"], table["batch_size"])]
        for key in sorted(set(zip(table["backend"], table["batch_size"]))):
            if key not in self._series:
                self._add_series(key)
        table["grid_row"] = [f"{s} · in {i}" for s, i in zip(table["series"], table["input_len"])]
        table["mark"] = ["!" if "spread" in str(f) else "" for f in table["flags"].fillna("")]
        with self.figure.batch_update():
            for (backend, batch_size), indices in self._series.items():
                group = table[(table["backend"] == backend) & (table["batch_size"] == batch_size)]
                label = self._series_label(backend, batch_size, several)  # relabelled when a 2nd backend arrives
                for index, x, y in zip(indices, ("input_len", "output_len"), ("ttft_ms", "tpot_ms")):
                    means = group.groupby(x)[y].mean().sort_index()
                    trace = self.figure.data[index]
                    trace.name, trace.legendgroup = label, label
                    trace.x = [int(v) for v in means.index]
                    trace.y = [float(v) for v in means.values]
            for col, x in ((1, "input_len"), (2, "output_len")):
                ticks = sorted({int(v) for v in table[x]})
                self.figure.update_xaxes(tickvals=ticks, ticktext=[str(t) for t in ticks], row=1, col=col)
            for metric, (offset, _, _) in _HEAT.items():
                cells = table.dropna(subset=[metric])
                heat = cells.pivot_table(index="grid_row", columns="output_len", values=metric, sort=False)
                heat = heat.reindex(columns=sorted(heat.columns))
                marks = cells.pivot_table(index="grid_row", columns="output_len", values="mark", aggfunc="last",
                                          sort=False).reindex(index=heat.index, columns=heat.columns)
                trace = self.figure.data[offset]
                trace.x = [str(c) for c in heat.columns]
                trace.y = list(heat.index)
                trace.z = [[None if pd.isna(v) else float(v) for v in values] for values in heat.to_numpy()]
                trace.text = [["" if pd.isna(v) else
                               f"{v:.0f}{'▲' if offset and v > 100 else ''}{m if isinstance(m, str) else ''}"
                               for v, m in zip(values, mark_row)]
                              for values, mark_row in zip(heat.to_numpy(), marks.to_numpy())]
