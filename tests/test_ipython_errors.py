"""In IPython an AscendNbError shows as its one line (as the CLI prints it); other errors keep their traceback."""

from __future__ import annotations

import re

import pytest
from IPython.core.interactiveshell import InteractiveShell

import ascend_nb
from ascend_nb import errors
from ascend_nb.ui.ipython import install_error_display


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    yield shell
    shell.set_custom_exc((), None)
    InteractiveShell.clear_instance()


def test_an_ascend_nb_error_is_one_line_and_still_fails_the_cell(shell, capsys):
    assert install_error_display(shell)
    result = shell.run_cell("import ascend_nb\nascend_nb.load('/nonexistent/dir')")
    out = capsys.readouterr().out
    assert isinstance(result.error_in_exec, errors.AscendNbError)
    assert "Traceback" not in out and "loading.py" not in out
    assert [line for line in out.splitlines() if line.strip()] == [f"\x1b[0;31mAscendNbError\x1b[0m: {result.error_in_exec}"]


def test_other_errors_keep_their_traceback(shell, capsys):
    install_error_display(shell)
    shell.run_cell("def f():\n    raise ValueError('a bug')\nf()")
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert "Traceback" in out and "raise ValueError('a bug')" in out and "ValueError: a bug" in out


def test_outside_ipython_nothing_is_installed():
    InteractiveShell.clear_instance()
    assert install_error_display() is False  # IPython is imported here, but no shell runs


def test_float16_on_cpu_is_noted_once(tiny_llama_dir, capsys, monkeypatch):
    monkeypatch.setattr(errors, "_NOTED", set())
    for _ in range(2):
        ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float16")
    assert capsys.readouterr().err.count("ascend-nb: note: float16 on CPU is slow") == 1
    ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32")
    assert "note" not in capsys.readouterr().err
