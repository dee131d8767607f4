"""Precision figures: live accuracy per category, runs side by side, and the layer-by-layer agreement curve.

:class:`AccuracyPlot` fills in as :func:`ascend_nb.precision.evaluate` answers (pass its ``update`` as
``on_result``): one bar per category and Avg acc with the 95% Wilson interval as error bars, next to
optional reference columns (e.g. the guides' Aquila-7B table). In a Jupyter kernel it is a plotly
``FigureWidget`` updated with ``batch_update``; otherwise (``widget=False``) a plain figure re-rendered
through ``display(..., display_id=True)``; after the last answer it stays as a static figure (see
:class:`ascend_nb.ui.figures.FigureDisplay`). Colours: the guides' columns grey, this run's pink,
in every figure.
"""

from __future__ import annotations

import math
import time

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ascend_nb.figure_style import house_style
from ascend_nb.precision.accuracy import AVG_ACC, binomial_interval
from ascend_nb.precision.tables import ROWS
from ascend_nb.ui.figures import FigureDisplay

CHANCE = 0.25  # four options
REFERENCE_COLORS = ("#9aa5b1", "#c3cbd3", "#6b7785", "#dde3e8")
RUN_COLOR = "#d6336c"
RUN_COLORS = (RUN_COLOR, "#1c7ed6", "#f59f00", "#37b24d")  # further runs (other engines) of one figure
MAX_ABS_ERR_FLOOR = 1e-8  # an exact 0 has no place on a log axis: drawn here, and the axis says so


def _is_reference(name: str) -> bool:
    return "(guide)" in name or "reference" in name.lower()


def column_colors(names) -> dict[str, str]:
    """One colour per column: the guides' columns grey, each run its own (the first: :data:`RUN_COLOR`)."""
    colors, references, runs = {}, 0, 0
    for name in names:
        if _is_reference(str(name)):
            colors[name], references = REFERENCE_COLORS[references % len(REFERENCE_COLORS)], references + 1
        else:
            colors[name], runs = RUN_COLORS[runs % len(RUN_COLORS)], runs + 1
    return colors


def _json_values(values: pd.Series) -> list[float | None]:
    """NaN as None: widget messages must be strict JSON."""
    return [None if math.isnan(v) else float(v) for v in values]


def _accuracy_layout(figure: go.Figure, title: str) -> None:
    figure.add_hline(y=CHANCE, line_dash="dot", line_color="gray", annotation_text="chance",
                     annotation_position="top right")
    figure.update_layout(title=title, barmode="group", height=420, yaxis={"title": "accuracy", "range": [0, 1]})
    house_style(figure)


class AccuracyPlot:
    """Accuracy per category filling in as answers arrive.

    ``reference`` is a table indexed by category (e.g. ``load_aquila_reference()[["A100"]]``): each
    column becomes a static bar beside the live one. Redraws at most every ``min_interval_s`` seconds
    and always on the last answer.
    """

    def __init__(self, label: str = "this run", reference: pd.DataFrame | None = None, title: str = "C-Eval accuracy",
                 widget: bool | None = None, min_interval_s: float = 0.5):
        self.title = title
        self.min_interval_s = min_interval_s
        self.tallies = {row: [0, 0] for row in ROWS}  # correct, answered (with a known truth)
        figure = go.Figure()
        for i, (name, column) in enumerate((reference if reference is not None else pd.DataFrame()).items()):
            if name == "n":
                continue
            figure.add_bar(x=list(ROWS), y=column.reindex(list(ROWS)).tolist(), name=str(name),
                           marker_color=REFERENCE_COLORS[i % len(REFERENCE_COLORS)], texttemplate="%{y:.4f}",
                           textposition="inside", insidetextanchor="end",
                           hovertemplate="%{x}: %{y:.4f}<extra>" + str(name) + "</extra>")
        figure.add_bar(x=list(ROWS), y=[None] * len(ROWS), name=label, marker_color=RUN_COLOR, text=[""] * len(ROWS),
                       textposition="inside", insidetextanchor="start",  # counts at the base: clear of the error bars
                       error_y={"type": "data", "symmetric": False, "array": [], "arrayminus": []},
                       hovertemplate="%{x}: %{y:.4f} (%{text})<extra>" + label + "</extra>")
        _accuracy_layout(figure, title)
        self._run_trace = len(figure.data) - 1
        self._display = FigureDisplay(figure, widget)
        self.widget, self.figure = self._display.widget, self._display.figure
        self._last_draw = -math.inf

    def show(self) -> AccuracyPlot:
        """Display the figure (once, before the evaluation starts)."""
        self._display.show()
        return self

    def update(self, row: dict, done: int, total: int) -> None:
        """Count one answer (the ``on_result`` callback of :func:`~ascend_nb.precision.evaluate`)."""
        if row["truth"]:
            for name in (row["category"], AVG_ACC):
                tally = self.tallies.setdefault(name, [0, 0])
                tally[0] += row["pred"] == row["truth"]
                tally[1] += 1
        if done == total or time.monotonic() - self._last_draw >= self.min_interval_s:
            self.redraw(done, total)
        if done == total:
            self._display.finish()

    def accuracy(self) -> pd.DataFrame:
        """``acc, correct, n, ci_low, ci_high`` per category and Avg acc, as counted so far."""
        rows = {}
        for name in ROWS:
            correct, n = self.tallies[name]
            low, high = binomial_interval(correct, n)
            rows[name] = {"acc": correct / n if n else math.nan, "correct": correct, "n": n, "ci_low": low,
                          "ci_high": high}
        return pd.DataFrame.from_dict(rows, orient="index")

    def redraw(self, done: int | None = None, total: int | None = None) -> None:
        table = self.accuracy()
        acc, upper, lower = (_json_values(values) for values in
                             (table["acc"], table["ci_high"] - table["acc"], table["acc"] - table["ci_low"]))
        text = [f"{c}/{n}" if n else "" for c, n in zip(table["correct"], table["n"])]
        title = self.title if done is None else f"{self.title}: {done}/{total} answered"
        trace = self.figure.data[self._run_trace]
        if self.widget:
            with self.figure.batch_update():
                trace.y, trace.text = acc, text
                trace.error_y.array, trace.error_y.arrayminus = upper, lower
                self.figure.layout.title.text = title
        else:
            trace.update(y=acc, text=text, error_y={"array": upper, "arrayminus": lower})
            self.figure.update_layout(title_text=title)
            self._display.refresh()
        self._last_draw = time.monotonic()


def accuracy_comparison_figure(table: pd.DataFrame, title: str = "C-Eval accuracy side by side") -> go.Figure:
    """Grouped bars of every column of a :func:`~ascend_nb.precision.precision_table` (``compare`` is skipped)."""
    figure = go.Figure()
    names = [name for name in table.columns if name != "compare"]
    colors = column_colors(names)
    for name in names:
        figure.add_bar(x=[str(i) for i in table.index], y=table[name].tolist(), name=str(name),
                       marker_color=colors[name], texttemplate="%{y:.4f}", textposition="inside",
                       hovertemplate="%{x}: %{y:.4f}<extra>" + str(name) + "</extra>")
    _accuracy_layout(figure, title)
    return figure


def layer_comparison_figure(report, title: str | None = None) -> go.Figure:
    """Cosine (left axis) and MaxAbsErr (right axis, log; an exact 0 drawn at :data:`MAX_ABS_ERR_FLOOR`,
    as the axis title says) per hidden state of a :class:`~ascend_nb.precision.ComparisonReport`, the
    logits as diamonds after the last layer, and the Cosine threshold as a dotted line. The verdict
    stands on its own title line, so a long pair of engine names does not cut it off."""
    table = report.table
    hidden = table[table["tensor"] != "logits"]
    logits = table[table["tensor"] == "logits"]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    for frame, suffix, mode, symbol in ((hidden, "", "lines+markers", "circle"), (logits, " (logits)", "markers", "diamond")):
        figure.add_trace(go.Scatter(x=frame["layer"], y=frame["Cosine"], name="Cosine" + suffix, mode=mode,
                                    marker={"symbol": symbol, "size": 9 if suffix else 6, "color": "#1c7ed6"},
                                    text=frame["tensor"], hovertemplate="%{text}: Cosine %{y:.6f}<extra></extra>"),
                         secondary_y=False)
        figure.add_trace(go.Scatter(x=frame["layer"], y=frame["MaxAbsErr"].clip(lower=MAX_ABS_ERR_FLOOR),
                                    name="MaxAbsErr" + suffix, mode=mode, customdata=frame["MaxAbsErr"],
                                    marker={"symbol": symbol, "size": 9 if suffix else 6, "color": "#f76707"},
                                    text=frame["tensor"], hovertemplate="%{text}: MaxAbsErr %{customdata:.3e}<extra></extra>"),
                         secondary_y=True)
    figure.add_hline(y=report.thresholds.cosine, line_dash="dot", line_color="#1c7ed6",
                     annotation_text=f"Cosine threshold {report.thresholds.cosine}", secondary_y=False)
    verdict = "reached" if report.reached else "NOT reached"
    figure.update_layout(title={"text": title or f"{report.candidate}<br>vs {report.reference}: <b>{verdict}</b>",
                                "font": {"size": 15}},
                         height=460)
    house_style(figure)
    figure.update_layout(margin={"t": 100})  # two title lines
    figure.update_xaxes(title_text="hidden state (0 = embeddings)")
    figure.update_yaxes(title_text="Cosine", secondary_y=False)
    largest = max(float(table["MaxAbsErr"].max()), 1.0)
    figure.update_yaxes(title_text=f"MaxAbsErr (log; 0 drawn at {MAX_ABS_ERR_FLOOR:g})", type="log",
                        exponentformat="power", dtick=1, secondary_y=True,  # one tick per decade
                        range=[math.log10(MAX_ABS_ERR_FLOOR) - 1, math.ceil(math.log10(largest)) + 0.2])
    return figure


FORMAT_COLORS = {"int8": "#1c7ed6", "w8a8": "#f59f00", "int4": "#d6336c"}  # the reference (a dtype) is grey
REFERENCE_FORMAT_COLOR = "#868e96"


def quantization_figure(report, title: str | None = None) -> go.Figure:
    """Six labelled panels of a :class:`~ascend_nb.bench.quantization.QuantizationReport`, one colour per
    format: perplexity (with its change against the reference), C-Eval accuracy, weight MiB, the Cosine of
    every hidden state and the logits against the reference, TTFT and TPOT."""
    table, layers = report.table, report.layers
    s = report.settings
    panels = (f"perplexity ({s.get('text_tokens', '?')} tokens of held-out text)",
              f"C-Eval accuracy (logits protocol, {s.get('ceval_n', '?')} questions)", "weights (MiB)",
              f"Cosine against {report.reference}, by hidden state", "TTFT (ms)", "TPOT (ms)")
    figure = make_subplots(rows=2, cols=3, subplot_titles=panels, horizontal_spacing=0.08, vertical_spacing=0.2)
    colors = [FORMAT_COLORS.get(name, REFERENCE_FORMAT_COLOR) for name in table["format"]]
    names = table["format"].tolist()
    change = [f"{v:.3f}" if i == 0 else f"{v:.3f}<br>({c:+.2f}%)"
              for i, (v, c) in enumerate(zip(table["perplexity"], table["perplexity_change_pct"]))]
    bars = ((1, 1, table["perplexity"], change), (1, 2, table["ceval_acc"], [f"{v:.3f}" for v in table["ceval_acc"]]),
            (1, 3, table["weights_mib"], [f"{v:.0f}" for v in table["weights_mib"]]),
            (2, 2, table["ttft_ms"], [f"{v:.1f}" for v in table["ttft_ms"]]),
            (2, 3, table["tpot_ms"], [f"{v:.2f}" for v in table["tpot_ms"]]))
    for row, col, values, text in bars:
        figure.add_trace(go.Bar(x=names, y=values.tolist(), marker_color=colors, text=text, textposition="auto",
                                showlegend=False, hovertemplate="%{x}: %{text}<extra></extra>"), row=row, col=col)
    for name in names[1:]:
        frame = layers[layers["format"] == name]
        figure.add_trace(go.Scatter(x=frame["layer"], y=frame["Cosine"], name=name, mode="lines+markers",
                                    marker={"size": 5, "color": FORMAT_COLORS.get(name, REFERENCE_FORMAT_COLOR)},
                                    text=frame["tensor"], hovertemplate=name + " · %{text}: Cosine %{y:.6f}<extra></extra>"),
                         row=2, col=1)
    figure.update_layout(title={"text": title or f"What does quantization cost? {s.get('model', '')} on "
                                                 f"{s.get('device', '')}, reference {report.reference}",
                                "font": {"size": 15}}, height=640)
    house_style(figure)
    figure.update_xaxes(title_text="hidden state (0 = embeddings; last = logits)", row=2, col=1)
    figure.update_yaxes(title_text="Cosine", row=2, col=1)
    figure.update_yaxes(range=[0, 1], row=1, col=2)
    return figure
