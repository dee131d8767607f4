"""``quantization_report()``: every format side by side (perplexity, C-Eval, per-layer Cosine, TTFT/TPOT, weight
bytes) from one run on a tiny random Llama, shown as a report table and one labelled figure."""

from __future__ import annotations

import pytest

from ascend_nb.errors import AscendNbError
from ascend_nb.models.footprint import model_weights_bytes
from ascend_nb.bench.quantization import COLUMNS, quantization_report
from ascend_nb.precision import perplexity, read_text
from ascend_nb.ui.precision_plots import quantization_figure


@pytest.fixture(scope="module")
def report(tiny_llama_dir):
    lines = []
    result = quantization_report(tiny_llama_dir, device="cpu", dtype="float32", max_tokens=150, window=64,
                                 ceval_limit=1, prompts=["The capital of France is"], input_len=8, output_len=4,
                                 repeat=1, warmup=0, on_progress=lines.append)
    return result, lines


def test_one_row_per_format_from_the_same_engines(report, tiny_llama_dir):
    result, lines = report
    table = result.table
    assert list(table.columns) == list(COLUMNS)
    assert table["format"].tolist() == ["float32", "int8", "w8a8", "int4"] and result.reference == "float32"
    base = table.iloc[0]
    assert base["perplexity_change_pct"] == 0 and base["logits_cosine"] == 1 and base["min_layer_cosine"] == 1
    assert (table["ceval_n"] == 5).all() and table["ceval_acc"].between(0, 1).all()
    assert (table["ttft_ms"] > 0).all() and (table["tpot_ms"] > 0).all()
    assert table["logits_cosine"].iloc[1:].between(0.5, 1).all()
    mib = {row["format"]: row["weights_mib"] for _, row in table.iterrows()}
    assert mib["int4"] < mib["int8"] == mib["w8a8"] < mib["float32"]
    from ascend_nb.models.validation import read_config

    config = read_config(tiny_llama_dir)
    assert mib["int4"] * 2 ** 20 == model_weights_bytes(config, "float32", "int4")  # the planner's bytes
    # the perplexity column is perplexity() of that engine on the same tokens
    import ascend_nb

    engine = ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated", max_seq_len=64,
                            quantize="int4")
    assert table["perplexity"].iloc[3] == pytest.approx(perplexity(engine, read_text(), max_tokens=150).perplexity, rel=1e-6)
    # per-layer Cosine of each quantized format: the embeddings, layer 2's input, the final norm, the logits
    assert result.layers.groupby("format").size().to_dict() == {"int8": 4, "w8a8": 4, "int4": 4}
    assert sum("C-Eval" in line for line in lines) == 4 and sum("TPOT" in line for line in lines) == 4


def test_the_report_reads_as_a_table_a_summary_and_json(report):
    result, _ = report
    html = result.as_table()._repr_html_()
    for header in ("perplexity change (%)", "TTFT (ms)", "TPOT (ms)", "weights (MiB)", "logits cosine"):
        assert header in html
    assert "perplexity over 150 tokens" in html and "logits protocol" in html
    summary = result.summary().splitlines()
    assert len(summary) == 4 and summary[0].startswith("reference float32") and summary[3].startswith("int4: perplexity")
    data = result.to_dict()
    assert [row["format"] for row in data["formats"]] == ["float32", "int8", "w8a8", "int4"] and data["layers"]


def test_the_figure_has_a_labelled_panel_for_each_measure(report):
    result, _ = report
    figure = quantization_figure(result)
    titles = [a.text for a in figure.layout.annotations]
    assert any(t.startswith("perplexity (150 tokens") for t in titles) and "TPOT (ms)" in titles
    assert any(t.startswith("Cosine against float32") for t in titles)
    assert figure.layout.title.text.startswith("What does quantization cost?")
    lines = [trace for trace in figure.data if trace.type == "scatter"]
    assert [trace.name for trace in lines] == ["int8", "w8a8", "int4"]


@pytest.mark.parametrize("formats, message", [
    (("int8", None), "the first format is the reference"),
    ((None, "int8", "int8"), "named twice"),
    ((None, "int3"), "unknown quantize 'int3'"),
])
def test_bad_formats_are_refused_before_loading(formats, message):
    with pytest.raises(AscendNbError, match=message):
        quantization_report("/no/such/model", formats=formats)
