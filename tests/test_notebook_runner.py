"""The notebook runner itself: real papermill parameters, and output we did not print fails the run."""

from __future__ import annotations

import nbformat
import pytest

from tests.notebook_runner import run_notebook

pytestmark = pytest.mark.slow


def _notebook(tmp_path, *sources: str):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell("A = 0\nB = 'x'\nC = None", metadata={"tags": ["parameters"]}),
                      *(nbformat.v4.new_code_cell(source) for source in sources)]
    path = tmp_path / "probe.ipynb"
    nbformat.write(notebook, path)
    return path


def test_parameters_keep_their_types(tmp_path):
    path = _notebook(tmp_path, "print(repr(A), repr(B), repr(C))")
    executed = run_notebook(path, {"A": 3, "B": "/data/model", "C": [32, 64]}, tmp_dir=tmp_path)
    assert "injected-parameters" in executed.cells[1].metadata["tags"]  # papermill's own injection
    assert executed.cells[-1].outputs[0]["text"] == "3 '/data/model' [32, 64]\n"


@pytest.mark.parametrize("source", ["import warnings; warnings.warn('deprecated', FutureWarning)",
                                    "import sys; print('oops', file=sys.stderr)"])
def test_a_warning_or_stderr_in_a_cell_fails_the_run(tmp_path, source):
    with pytest.raises(AssertionError, match="output we did not print:\ncell 2: "):
        run_notebook(_notebook(tmp_path, "print('fine')", source), tmp_dir=tmp_path)
