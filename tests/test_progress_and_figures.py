"""Notebook progress bars end in their final state with an ETA; finished figures become static plotly bundles."""

from __future__ import annotations

import plotly.graph_objects as go

from ascend_nb import progress
from ascend_nb.ui.figures import PLOTLY_MIME, static_bundle


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
    assert "Plotly.newPlot" in bundle["text/html"] and "cdn.plot.ly" in bundle["text/html"]
    assert bundle["text/plain"] == "<figure: accuracy>"
