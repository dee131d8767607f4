import pytest

from tests.notebook_runner import outputs_text, run_notebook

pytestmark = pytest.mark.slow


def test_quickstart_runs_headless_and_answers(tmp_path):
    notebook = run_notebook("00_quickstart.ipynb", {"DTYPE": "float32"}, tmp_dir=tmp_path)
    text = outputs_text(notebook)
    assert "Paris" in text
    assert "TTFT (ms)" in text and "TPOT (ms)" in text


def test_a_bad_parameter_prints_one_line(tmp_path):
    notebook = run_notebook("00_quickstart.ipynb", {"MODEL": "/nonexistent/dir"}, tmp_dir=tmp_path, expect_error=True)
    [error] = [o for c in notebook.cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert error["ename"] == "AscendNbError" and "/nonexistent/dir" in error["evalue"]
    assert len(error["traceback"]) == 1 and "\n" not in error["traceback"][0]
