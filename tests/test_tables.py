"""Notebook tables: inline styles (kept in untrusted notebooks), no index, rounded, nothing clipped, escaped."""

from __future__ import annotations

import pandas as pd

from ascend_nb.tables import Table


def test_rounds_hides_the_index_escapes_and_keeps_long_text():
    long_hint = "pip install torch_npu==2.12.0, 2.11.0, 2.10.0.post4, 2.9.0.post6, 2.7.1.post8 " * 2
    frame = pd.DataFrame({"op": ["aten::mm", "aten::add"], "ms": [1667.091739, 2.0], "len": [32.0, float("nan")],
                          "hint": [long_hint, "<atb>/cxx_abi_1"]})
    table = Table(frame, decimals={"ms": 1})
    html = table._repr_html_()
    assert "1667.1" in html and "1667.09" not in html and ">32<" in html  # a column of whole numbers stays whole
    assert long_hint.strip() in html and "..." not in html and "width: 100%" in html  # wraps, never clipped
    assert "&lt;atb&gt;/<wbr>cxx_abi_1" in html and ">0<" not in html  # escaped; no 0..n-1 index
    assert repr(table).splitlines()[0].split() == ["op", "ms", "len", "hint"]


def test_cell_styles_are_inline_and_empty_columns_can_go():
    frame = pd.DataFrame({"status": ["pass", "fail"], "empty": [None, None]})
    colours = {"pass": "color: green", "fail": "color: red"}
    html = Table(frame, styles={"status": colours.get}, drop_empty=True)._repr_html_()
    assert "<style" not in html and 'color: red">fail</td>' in html and "empty" not in html


def test_a_named_index_becomes_the_first_column_and_formats_can_be_per_column():
    frame = pd.DataFrame({"Cosine": [0.99999912], "MaxAbsErr": [0.000123]}, index=pd.Index(["logits"], name="tensor"))
    table = Table(frame, decimals={"Cosine": 6, "MaxAbsErr": ".2e"})
    assert repr(table).splitlines() == ["tensor   Cosine MaxAbsErr", "logits 0.999999  1.23e-04"]
