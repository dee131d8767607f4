import json
import re

import pytest

from tests.browser import assert_reads_offline
from tests.notebook_runner import (export_html, outputs_text, plotly_outputs, run_notebook, static_figures,
                                   widget_views)


@pytest.mark.slow
def test_inside_the_model_runs_headless_and_answers_each_question(tmp_path):
    notebook = run_notebook("06_inside_the_model.ipynb", {"DTYPE": "float32", "MAX_NEW_TOKENS": 8,
                                                           "ANATOMY_INPUT_LEN": 32, "SPECULATIVE_TOKENS": 40,
                                                           "SPECULATIVE_ROUNDS": 1, "SPECULATIVE_DTYPE": "bfloat16"},
                            tmp_dir=tmp_path)
    text = outputs_text(notebook)
    assert "tokens_per_char" in text  # 1: tokens
    assert "reply:" in text  # 2: the live next-token view followed a reply
    assert "mean weight on the first token" in text  # 3: attention
    assert "the model predicts ' Paris'" in text  # 3: logit lens, the answer read at some layer
    assert "measured decode step (TPOT)" in text  # 4: one decode step against the memory floor
    assert "the greedy replies" in text or "the replies part ways at token" in text  # 5: drift
    # 6: speculative decoding, live: marked tokens, the figure left static, the speed against plain decoding
    assert 'class="anb-spec-accepted"' in text and "drafted tokens accepted" in text
    assert re.search(r"\d+\.\d\d× plain decoding</b>", text) and "tokens per pass" in text and "GB/s" in text
    spec_cell = next(i for i, c in enumerate(notebook.cells) if "SpeculativeView(" in c.source and "import" in c.source)
    assert len(static_figures(notebook)[spec_cell]) == 1 and widget_views(notebook.cells[spec_cell]) == 0
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    figures = json.dumps([o["data"]["application/vnd.plotly.v1+json"] for cell in notebook.cells
                          for o in cell.get("outputs", []) if "application/vnd.plotly.v1+json" in o.get("data", {})])
    assert "<0xE5>" in figures  # byte tokens read as their bytes in the token strip, not as mojibake
    assert_reads_offline(export_html(tmp_path / "executed_06_inside_the_model.ipynb"), plotly_outputs(notebook))
