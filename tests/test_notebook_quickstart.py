import pytest

from tests.notebook_runner import outputs_text, run_notebook


@pytest.mark.slow
def test_quickstart_runs_headless_and_answers():
    notebook = run_notebook("00_quickstart.ipynb", {"DTYPE": "float32"})
    text = outputs_text(notebook)
    assert "Paris" in text
    assert "TTFT (ms)" in text and "TPOT (ms)" in text
