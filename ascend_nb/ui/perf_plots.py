"""Live latency-sweep figure: four panels that fill in as each sweep point lands.

TTFT vs input length and TPOT vs output length (one line per backend and batch size, averaged
over the other length), a heatmap of decode tokens/s over the grid, and a bar per point of the
share of the decode roofline reached. In a Jupyter kernel it is a plotly ``FigureWidget`` updated
in place with ``batch_update``; without a widget frontend (``widget=False``: headless runs,
exported notebooks) it is a plain figure re-rendered through ``display(..., display_id=True)``.
:class:`LiveFigure` holds that machinery for every live figure (the sweep's, the load benchmark's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ascend_nb.files import atomic_write_text
from ascend_nb.errors import AscendNbError

PANELS = ("TTFT vs input length", "TPOT vs output length", "Decode tokens/s", "% of decode roofline")


def widget_frontend_likely() -> bool:
    """True inside a Jupyter kernel with anywidget installed (what plotly's FigureWidget needs)."""
    try:
        import anywidget  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class LiveFigure:
    """A figure re-drawn from its rows after each added row: a ``FigureWidget`` updated in place when
    ``widget`` (``None``: when :func:`widget_frontend_likely`), else re-rendered through a display
    handle. Subclasses build the figure and implement ``_render`` (rows -> traces)."""

    def __init__(self, figure: go.Figure, rows: Iterable[Mapping] = (), widget: bool | None = None):
        self.widget = widget_frontend_likely() if widget is None else widget
        self.figure = go.FigureWidget(figure) if self.widget else figure
        self.rows: list[dict] = [dict(row) for row in rows]
        self._handle = None
        if self.rows:
            self._render()

    def show(self) -> None:
        """Display the figure in the notebook (call once, before the rows start coming)."""
        from IPython.display import display

        if self.widget:
            display(self.figure)
        else:  # the raw bundle: a figure's own _ipython_display_ would ignore the display_id
            self._handle = display(self.figure._repr_mimebundle_(), raw=True, display_id=True)

    def add(self, row: Mapping) -> None:
        """Add one row and update every panel in one batch."""
        self.rows.append(dict(row))
        self._render()
        if self._handle is not None:
            self._handle.update(self.figure._repr_mimebundle_(), raw=True)

    def follow(self, rows: Iterable[Mapping]) -> pd.DataFrame:
        """Add rows as they come (e.g. from a generator of results); return them all."""
        for row in rows:
            self.add(row)
        return self.frame()

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
    :func:`widget_frontend_likely`, else the ``display_id`` fallback."""

    def __init__(self, rows: Iterable[Mapping] = (), widget: bool | None = None, title: str = "Latency sweep"):
        figure = make_subplots(rows=2, cols=2, subplot_titles=PANELS, vertical_spacing=0.16, horizontal_spacing=0.1)
        figure.add_trace(go.Heatmap(x=[], y=[], z=[], colorscale="Viridis", name="decode tokens/s",
                                    colorbar={"title": "tok/s", "len": 0.42, "y": 0.2},
                                    hovertemplate="%{y}, out %{x}: %{z:.1f} tok/s<extra></extra>"), row=2, col=1)
        figure.add_trace(go.Bar(x=[], y=[], name="% of roofline", showlegend=False,
                                hovertemplate="%{x}: %{y:.1f}%<extra></extra>"), row=2, col=2)
        figure.update_layout(title=title, height=720, legend={"orientation": "h", "y": 1.08})
        for col, axis in ((1, "input length (tokens)"), (2, "output length (tokens)")):
            figure.update_xaxes(title_text=axis, type="log", row=1, col=col)
            figure.update_yaxes(title_text="ms", row=1, col=col)
        figure.update_xaxes(title_text="output length", type="category", row=2, col=1)
        figure.update_yaxes(type="category", row=2, col=1)
        figure.update_yaxes(title_text="% of roofline", row=2, col=2)
        self._series: dict[tuple[str, int], tuple[int, int]] = {}  # (backend, batch) -> trace indices
        super().__init__(figure, rows, widget)

    def _series_label(self, backend: str, batch_size: int, several_backends: bool) -> str:
        return f"{backend} b{batch_size}" if several_backends else f"batch {batch_size}"

    def _add_series(self, key: tuple[str, int], label: str) -> None:
        color = qualitative.Plotly[len(self._series) % len(qualitative.Plotly)]
        style = {"mode": "lines+markers", "legendgroup": label, "line": {"color": color}}
        self.figure.add_trace(go.Scatter(x=[], y=[], name=label, **style), row=1, col=1)
        self.figure.add_trace(go.Scatter(x=[], y=[], name=label, showlegend=False, **style), row=1, col=2)
        self._series[key] = (len(self.figure.data) - 2, len(self.figure.data) - 1)

    def _render(self) -> None:
        table = self.frame()
        if "backend" not in table:
            table["backend"] = ""
        table["backend"] = table["backend"].fillna("").astype(str)
        several = table["backend"].nunique() > 1
        table["series"] = [self._series_label(b, n, several) for b, n in zip(table["backend"], table["batch_size"])]
        for (backend, batch_size), group in table.groupby(["backend", "batch_size"], sort=True):
            if (backend, batch_size) not in self._series:
                self._add_series((backend, batch_size), group["series"].iloc[0])
        table["grid_row"] = [f"{s} · in {i}" for s, i in zip(table["series"], table["input_len"])]
        heat = table.pivot_table(index="grid_row", columns="output_len", values="decode_tokens_per_s", sort=False)
        heat = heat[sorted(heat.columns)]
        if "pct_of_roofline" not in table:
            table["pct_of_roofline"] = float("nan")
        bars = table.dropna(subset=["pct_of_roofline"])
        with self.figure.batch_update():
            for (backend, batch_size), (ttft_index, tpot_index) in self._series.items():
                group = table[(table["backend"] == backend) & (table["batch_size"] == batch_size)]
                for index, x, y in ((ttft_index, "input_len", "ttft_ms"), (tpot_index, "output_len", "tpot_ms")):
                    means = group.groupby(x)[y].mean().sort_index()
                    self.figure.data[index].x = [int(v) for v in means.index]
                    self.figure.data[index].y = [float(v) for v in means.values]
            heatmap, bar = self.figure.data[0], self.figure.data[1]
            heatmap.x = [str(c) for c in heat.columns]
            heatmap.y = list(heat.index)
            heatmap.z = [[None if pd.isna(v) else float(v) for v in values] for values in heat.to_numpy()]
            bar.x = [f"{g} · out {o}" for g, o in zip(bars["grid_row"], bars["output_len"])]
            bar.y = [float(v) for v in bars["pct_of_roofline"]]
