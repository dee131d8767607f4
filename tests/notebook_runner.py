"""Execute a notebook headless through the real papermill CLI, as users run parameterized notebooks.

``papermill IN OUT -p NAME VALUE ...`` injects the parameters after the ``parameters``-tagged cell
and writes the executed notebook; we read that output back. A cell error fails the run, and so does
any warning or stderr text in a cell's outputs: the notebooks print only what we mean them to.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOTE_PREFIX = "ascend-nb: note: "  # ascend_nb.errors.note_once: stderr we print on purpose
# Warnings printed as text (warnings.showwarning, logging) rather than to stderr.
WARNING_TEXT = re.compile(r"\b\w*Warning: |^WARNING[: ]", re.MULTILINE)


def papermill_arguments(parameters: dict) -> list[str]:
    """``-p NAME VALUE`` for strings and numbers (as a user types them), ``-y NAME: VALUE`` for the rest."""
    arguments = []
    for key, value in parameters.items():
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and \
                (not isinstance(value, str) or _kept_as_string(value)):
            arguments += ["-p", key, str(value)]
        else:  # lists, tuples, None, booleans and number-like strings: YAML (JSON is YAML) keeps their type
            arguments += ["-y", json.dumps({key: list(value) if isinstance(value, tuple) else value})]
    return arguments


def _kept_as_string(value: str) -> bool:
    """Whether papermill's ``-p`` would keep ``value`` a string (it turns '1', 'True', 'None' into values)."""
    if value in ("True", "False", "None", "true", "false"):
        return False
    try:
        float(value)
    except ValueError:
        return True
    return False


def run_notebook(name: str | Path, parameters: dict | None = None, timeout: int = 600, tmp_dir: Path | None = None,
                 expect_error: bool = False):
    """Run ``notebooks/<name>`` (or the notebook at a path) with ``papermill``, ``parameters`` as
    ``-p``/``-y``; return the output notebook.

    The kernel works in ``tmp_dir`` (default: the notebooks folder). Raises on a cell error and on
    any output we did not print (see :func:`unexpected_outputs`); with ``expect_error`` a cell must
    fail instead, and the notebook up to that cell is returned as papermill wrote it.
    """
    work = Path(tmp_dir or NOTEBOOKS)
    source = name if isinstance(name, Path) else NOTEBOOKS / name
    output = work / f"executed_{source.name}"
    command = [sys.executable, "-m", "papermill", str(source), str(output), "-k", "python3",
               "--cwd", str(work), "--start-timeout", "180", "--execution-timeout", str(timeout),
               *papermill_arguments(parameters or {})]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout * 4)
    if expect_error:
        assert done.returncode, f"{name} ran through, but a cell was expected to fail"
        return nbformat.read(output, as_version=4)
    if done.returncode:
        raise AssertionError(f"papermill failed on {name} (exit {done.returncode}):\n{done.stderr[-4000:]}")
    notebook = nbformat.read(output, as_version=4)
    unexpected = unexpected_outputs(notebook)
    assert not unexpected, f"{name}: output we did not print:\n" + "\n".join(unexpected)
    return notebook


def unexpected_outputs(notebook) -> list[str]:
    """Each stderr stream (but our own notes) or warning text in the outputs, as ``cell N: <text>``."""
    found = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("output_type") == "stream" else \
                output.get("data", {}).get("text/plain", "")
            ours = all(line.startswith(NOTE_PREFIX) for line in text.splitlines())  # errors.note_once
            if (output.get("name") == "stderr" and not ours) or WARNING_TEXT.search(text):
                found.append(f"cell {index}: {text[:500]}")
    return found


def static_figures(notebook) -> dict[int, list[dict]]:
    """Per code cell index: the static plotly figures (plotly JSON + HTML) in its outputs."""
    figures = {}
    for index, cell in enumerate(notebook.cells):
        found = [o["data"]["application/vnd.plotly.v1+json"] for o in cell.get("outputs", [])
                 if {"application/vnd.plotly.v1+json", "text/html"} <= set(o.get("data", {}))]
        if cell.cell_type == "code":
            figures[index] = found
    return figures


def widget_views(cell) -> int:
    """How many outputs of a cell only a live kernel can draw (ipywidgets views)."""
    return sum("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cell.get("outputs", []))


def outputs_text(notebook) -> str:
    """All text/plain, stream and text/html outputs of an executed notebook, joined."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            data = output.get("data", {})
            parts.append(data.get("text/plain", ""))
            parts.append(data.get("text/html", ""))
            parts.append(data.get("text/markdown", ""))
    return "\n".join(parts)


def plotly_outputs(notebook) -> int:
    """How many plotly figures an executed notebook holds (each drawn once its HTML is opened)."""
    return sum("application/vnd.plotly.v1+json" in o.get("data", {}) for cell in notebook.cells
               for o in cell.get("outputs", []))


def export_html(notebook_path: Path) -> Path:
    """``jupyter nbconvert --to html`` of an executed notebook, as users export a report; the HTML's path."""
    done = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", str(notebook_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return notebook_path.with_suffix(".html")
