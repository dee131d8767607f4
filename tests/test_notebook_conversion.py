"""Notebook 02 runs headless: converts the embedded GGUF and a tiny Baichuan2 checkpoint, verified."""

import pytest

from tests.browser import assert_reads_offline
from tests.notebook_runner import export_html, outputs_text, plotly_outputs, run_notebook


@pytest.mark.slow
def test_weight_conversion_notebook(tmp_path):
    notebook = run_notebook("02_weight_conversion.ipynb", {"WORKDIR": str(tmp_path), "DEVICE": "cpu", "DTYPE": "float32"},
                            timeout=900, tmp_dir=tmp_path)
    text = outputs_text(notebook)
    assert text.count("PASS:") >= 2  # the embedded GGUF and the Baichuan2 checkpoint
    assert "W_pack rows" in text and "NormHead" in text
    assert "contains custom code" in text  # transformers refuses the original without remote code
    assert "all files match" in text
    assert "Loading weights" not in text  # transformers' own bar would stay frozen at 0 % in the saved notebook
    assert (tmp_path / "smollm2-135m-instruct" / "checksums.sha256").is_file()
    assert (tmp_path / "Baichuan2-7B-Chat-tiny-llama" / "model.safetensors").is_file()
    assert (tmp_path / "vendor-layout" / "config.json.bak").is_file()
    assert_reads_offline(export_html(tmp_path / "executed_02_weight_conversion.ipynb"), plotly_outputs(notebook))
