"""Precision figures: live accuracy bars with Wilson error bars, side-by-side runs, the layer curve."""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import pytest

from ascend_nb.precision import binomial_interval, load_aquila_reference, precision_table
from ascend_nb.precision.engine_compare import compare_models
from ascend_nb.ui.precision_plots import (MAX_ABS_ERR_FLOOR, REFERENCE_COLORS, RUN_COLOR, AccuracyPlot,
                                         accuracy_comparison_figure, layer_comparison_figure)
from tests.test_precision_compare import hand_made


def answer(category: str, right: bool) -> dict:
    return {"id": "0", "subject": "x", "category": category, "truth": "A", "pred": "A" if right else "B", "shots": 0}


def test_accuracy_bars_fill_in_as_answers_arrive():
    plot = AccuracyPlot(label="smollm2", widget=False, min_interval_s=3600)
    assert isinstance(plot.figure, go.Figure) and not isinstance(plot.figure, go.FigureWidget)
    rows = [answer("STEM", True), answer("STEM", False), answer("Other", True),
            {**answer("Other", True), "truth": ""}]  # a test-split row: no truth, not counted
    for done, row in enumerate(rows, start=1):
        plot.update(row, done, len(rows))
    bar = plot.figure.data[-1]
    assert list(bar.y) == [0.5, None, None, 1.0, pytest.approx(2 / 3)]
    low, high = binomial_interval(1, 2)
    assert bar.error_y.array[0] == pytest.approx(high - 0.5) and bar.error_y.arrayminus[0] == pytest.approx(0.5 - low)
    assert list(bar.text) == ["1/2", "", "", "1/1", "2/3"]
    assert plot.figure.layout.title.text.endswith("4/4 answered")


def test_redraws_are_throttled_but_the_last_answer_always_draws():
    plot = AccuracyPlot(widget=False, min_interval_s=3600)
    plot.update(answer("STEM", True), 1, 3)  # first draw: nothing drawn before
    plot.update(answer("STEM", False), 2, 3)  # throttled
    assert list(plot.figure.data[-1].y)[0] == 1.0
    plot.update(answer("STEM", False), 3, 3)
    assert list(plot.figure.data[-1].y)[0] == pytest.approx(1 / 3)
    assert plot.accuracy().loc["STEM", "n"] == 3


def test_the_widget_variant_is_a_figure_widget():
    plot = AccuracyPlot(widget=True)
    assert isinstance(plot.figure, go.FigureWidget)
    plot.update(answer("Humanities", True), 1, 1)
    bar = plot.figure.data[-1]
    assert list(bar.y)[2] == 1.0
    json.dumps([list(bar.y), list(bar.error_y.array)], allow_nan=False)  # widget messages are strict JSON


def test_reference_columns_stand_beside_the_run():
    reference = load_aquila_reference()[["A100"]]
    plot = AccuracyPlot(reference=reference, widget=False)
    assert [trace.name for trace in plot.figure.data] == ["A100", "this run"]
    assert list(plot.figure.data[0].y) == pytest.approx(reference["A100"].tolist())


def test_side_by_side_figure_skips_the_compare_column():
    reference = load_aquila_reference()
    table = precision_table({"A": reference["Atlas 800I A2"], "B": reference["A100"]})
    figure = accuracy_comparison_figure(table)
    assert [trace.name for trace in figure.data] == ["A", "B"]
    guides = precision_table({"smollm2 · generate": reference["A100"], "Aquila-7B · A100 (guide)": reference["A100"]})
    colors = [trace.marker.color for trace in accuracy_comparison_figure(guides).data]
    assert colors == [RUN_COLOR, REFERENCE_COLORS[0]]  # the same colours as the live AccuracyPlot
    assert list(figure.data[0].x) == list(table.index)


def test_layer_curve_plots_cosine_and_max_abs_err_per_hidden_state():
    report = compare_models(hand_made(), hand_made(scale_layer=1, factor=1.2), prompts=["abcd"])
    figure = layer_comparison_figure(report)
    by_name = {trace.name: trace for trace in figure.data}
    assert list(by_name["Cosine"].x) == [0, 1, 2] and list(by_name["Cosine (logits)"].x) == [3]
    raw = report.table["MaxAbsErr"][:3]
    assert raw.iloc[0] == 0  # the embeddings agree exactly: drawn at the floor, the real 0 in the hover data
    assert list(by_name["MaxAbsErr"].y) == pytest.approx(raw.clip(lower=MAX_ABS_ERR_FLOOR).tolist())
    assert list(by_name["MaxAbsErr"].customdata) == pytest.approx(raw.tolist())
    assert f"0 drawn at {MAX_ABS_ERR_FLOOR:g}" in figure.layout.yaxis2.title.text
    assert "NOT reached" in figure.layout.title.text
    assert figure.layout.yaxis2.type == "log"


def test_precision_table_has_the_guides_shape_and_compare_column():
    reference = load_aquila_reference()
    assert list(reference.index) == ["STEM", "Social Science", "Humanities", "Other", "Avg acc"]
    assert reference.loc["Avg acc", "n"] == 1346
    weighted = (reference["A100"][:4] * reference["n"][:4]).sum() / 1346
    assert weighted == pytest.approx(reference.loc["Avg acc", "A100"])  # Avg acc is the micro average
    table = precision_table({"800I A2": reference["Atlas 800I A2"], "A100": reference["A100"]})
    assert table.loc["STEM", "compare"] == pytest.approx(-0.0046511627906977)
    assert table.loc["Avg acc", "compare"] == pytest.approx(-0.00074294205052005)
    single = precision_table({"only": pd.Series({"STEM": 0.5})})
    assert list(single.columns) == ["only"] and single["only"].isna().sum() == 4
