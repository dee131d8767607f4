"""05_precision.ipynb runs headless on a small slice of the sample: both protocols, the guides' table,
the layer-by-layer comparison (accelerated vs transformers), and what each quantization format costs
(a short slice of the held-out text, a tiny timed point)."""

from __future__ import annotations

import pytest

from tests.browser import assert_reads_offline
from tests.notebook_runner import export_html, outputs_text, plotly_outputs, run_notebook, static_figures, widget_views

pytestmark = pytest.mark.slow


def test_precision_notebook_runs_both_protocols_and_the_layer_comparison(tmp_path):
    parameters = {"DEVICE": "cpu", "DTYPE": "float32", "LIMIT": 1, "OUTPUT_DIR": str(tmp_path / "runs"),
                  "COMPARE_PROMPTS": ["The capital of France is"], "QUANT_TEXT_TOKENS": 128, "QUANT_INPUT_LEN": 16,
                  "QUANT_OUTPUT_LEN": 4, "QUANT_REPEAT": 1}
    notebook = run_notebook("05_precision.ipynb", parameters, timeout=900, tmp_dir=tmp_path)
    text = outputs_text(notebook)
    figures = static_figures(notebook)
    plot_cells = [i for i, c in enumerate(notebook.cells) if "AccuracyPlot(" in c.source and "import" not in c.source
                  or "show_static(layer_comparison_figure" in c.source]
    assert len(plot_cells) == 3
    for cell in plot_cells:  # the live accuracy bars end as static figures, as does the layer chart
        assert len(figures[cell]) == 1 and widget_views(notebook.cells[cell]) == 0
    assert "<b>" in figures[plot_cells[-1]][0]["layout"]["title"]["text"]  # the verdict on its own line
    assert "protocol logits (official C-Eval" in text and "protocol generate (Ascend harness" in text
    assert "5 questions" in text and "Avg acc" in text
    assert "Aquila-7B · A100 (guide)" in text and "0.41159" in text
    assert "thresholds (" in text and "verdict: " in text and "hidden states + logits" in text
    assert "(accelerated, cpu, float32)" in text
    for protocol in ("logits", "generate"):
        assert (tmp_path / "runs" / protocol / "predictions.csv").read_text().count("\n") == 6
    summary = next(o["text"] for c in notebook.cells if "print(headline(" in c.source for o in c.outputs
                   if o.get("name") == "stdout")  # the closing summary: one line per protocol, the verdict, its figures
    lines = summary.strip().splitlines()
    assert len(lines) == 4 and "logits protocol" in lines[0] and "generate protocol" in lines[1]
    assert "/5 questions, 95% interval" in lines[0] and "reached" in lines[2] and "logits Cosine" in lines[3]
    assert max(map(len, lines)) <= 160, lines  # wraps nowhere at 1400 px (about 165 characters of output)
    quant_cell = next(i for i, c in enumerate(notebook.cells) if "show_static(quantization_figure(" in c.source)
    figure = figures[quant_cell]
    assert len(figure) == 1 and figure[0]["layout"]["title"]["text"].startswith("What does quantization cost?")
    quant_text = next(o["text"] for o in notebook.cells[quant_cell].outputs if o.get("name") == "stdout").splitlines()
    assert quant_text[0].startswith("reference float32: perplexity") and len(quant_text) == 4
    assert [line.split(":")[0] for line in quant_text[1:]] == ["int8", "w8a8", "int4"]
    assert "perplexity change (%)" in text and "perplexity over 128 tokens" in text
    assert_reads_offline(export_html(tmp_path / "executed_05_precision.ipynb"), plotly_outputs(notebook))
