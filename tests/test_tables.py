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


def test_headers_carry_units_and_floats_are_rounded_by_what_they_hold():
    frame = pd.DataFrame({"ttft_ms": [28.3712], "decode_tokens_per_s": [61.04], "pct_of_roofline": [47.55],
                          "weight_bytes": [269030016.0], "accuracy": [0.4618143], "MaxAbsErr": [1.57065e-06],
                          "dtype": ["float16"]})
    html = Table(frame)._repr_html_()
    for header in ("TTFT (ms)", "decode tokens/s", "% of roofline", "weight (bytes)", "accuracy", "MaxAbsErr"):
        assert f">{header}</th>" in html
    for cell in (">28.4<", ">61.0<", ">47.5<", ">269,030,016<", ">0.462<", ">1.57e-06<", ">float16<"):
        assert cell in html
    assert "0.461814" not in html and "269030016.0" not in html


def test_no_value_can_wrap_inside_itself():
    """Numbers never wrap; text wraps between words only (it broke inside words: floa/t16, Cosi/ne)."""
    html = Table(pd.DataFrame({"ms": [1.0], "model": ["baichuan2-7b-chat"], "hint": ["pip install torch-npu"]}))._repr_html_()
    number_cell, name_cell, text_cell = html.split("<td ")[1:4]
    assert "white-space: nowrap" in number_cell and "white-space: nowrap" in name_cell  # not even at its '-'
    assert "white-space: pre-wrap" in text_cell  # between words only:
    assert "word-break: normal" in text_cell and "overflow-wrap: normal" in text_cell and "anywhere" not in html
    assert "word-break: keep-all" in html.split("<th ")[1]  # headers break between words, never inside one


def test_infinity_reads_as_such_with_the_tables_note_and_long_tables_fold():
    table = Table(pd.DataFrame({"MaxRelativeErr": [float("inf"), 0.5]}), note="∞: the reference is 0 there")
    html = table._repr_html_()
    assert ">∞<" in html and "inf" not in html and "∞: the reference is 0 there" in html
    long = Table(pd.DataFrame({"step": range(28)}))._repr_html_()
    preview, rest = long.split("<details>")
    assert preview.count("<tr>") == 1 + 12 and "show all 28 rows (16 more)" in rest and rest.count("<tr>") == 1 + 28
