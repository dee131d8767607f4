"""Notebook progress bars end in their final state with an ETA; finished figures become static plotly bundles."""

from __future__ import annotations

import plotly.graph_objects as go

from ascend_nb import progress
from ascend_nb.figure_style import PLOTLY_MIME, static_bundle


def test_progress_text_counts_resumed_steps_as_free_and_ends_done(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    bar = progress.NotebookProgress(6, initial=2, desc="sweep transformers", unit="points")
    assert bar.text() == "sweep transformers: 2/6 points · 0:00"  # no ETA before a step has been timed
    now[0] += 30
    bar.update(1)
    assert bar.text() == "sweep transformers: 3/6 points · 0:30 · ETA 1:30"  # 30 s per measured point, 3 left
    bar.set_postfix(ttft_ms="12.0")
    now[0] += 90
    bar.update(3)
    bar.close()
    assert bar.text() == "sweep transformers: 6/6 points · 2:00 · done · ttft_ms=12.0"
    assert '<progress value="6" max="6"' in bar._bundle()["text/html"]


def test_outside_a_kernel_the_bar_is_tqdm_and_its_notes_go_to_stderr(capsys):
    from tqdm import tqdm

    assert not progress.in_jupyter_kernel()
    bar = progress.progress_bar(3, desc="x")
    assert isinstance(bar, tqdm)
    bar.write("a note")
    bar.close()
    captured = capsys.readouterr()
    assert captured.out == "" and "a note" in captured.err  # stdout keeps only results (--json)


def test_a_static_bundle_holds_plotly_json_html_and_a_text_line():
    figure = go.Figure(go.Bar(x=["a"], y=[1.0]), layout={"title": "accuracy"})
    bundle = static_bundle(go.FigureWidget(figure))
    assert bundle[PLOTLY_MIME]["data"][0]["y"] == [1.0] and bundle[PLOTLY_MIME]["layout"]["title"]["text"] == "accuracy"
    assert "Plotly.newPlot" in bundle["text/html"] and 'src="https://cdn.plot.ly' not in bundle["text/html"]  # nothing to fetch
    assert bundle["text/plain"] == "<figure: accuracy>"


def test_plotly_js_travels_once_per_kernel_with_the_first_figure(monkeypatch):
    """An exported notebook draws offline: the first saved figure carries plotly.js, the others refer to it;
    a live figure that carries it keeps it on every redraw."""
    from ascend_nb import figure_style
    from ascend_nb.ui.figures import FigureDisplay

    monkeypatch.setattr(figure_style, "PLOTLYJS", figure_style._PlotlyJs())
    monkeypatch.setattr("ascend_nb.ui.figures.PLOTLYJS", figure_style.PLOTLYJS)
    figure = go.Figure(go.Bar(x=["a"], y=[1.0]))
    live = FigureDisplay(figure, widget=False)
    sizes = [len(live._bundle()["text/html"]), len(live._bundle()["text/html"])]  # shown, then redrawn
    later = len(static_bundle(figure)["text/html"])
    assert sizes[0] == sizes[1] > 3_000_000 > 100_000 > later  # plotly.js (~4.7 MB) in the first output only
    assert "plotly.js is not in this page" in static_bundle(figure)["text/html"]  # said, never white space


def test_every_figure_gets_the_house_style():
    from ascend_nb.figure_style import house_style

    figure = house_style(go.Figure(go.Heatmap(z=[[1]], colorbar={"title": "% of roofline"}), layout={"width": 1100}))
    assert figure.layout.width is None and figure.layout.autosize  # follows the page, never a fixed 1100 px
    legend = figure.layout.legend
    assert legend.orientation == "h" and legend.yref == "container" and legend.y < 0.05  # at the foot: nothing cuts it
    assert figure.data[0].colorbar.title.side == "right"
