"""Execute a notebook headless with nbclient, injecting papermill-style parameters."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run_notebook(name: str, parameters: dict | None = None, timeout: int = 600, tmp_dir: Path | None = None):
    """Run ``notebooks/<name>`` top to bottom and return the executed notebook.

    ``parameters`` become a cell inserted right after the ``parameters``-tagged cell (as papermill
    does), so the notebook's own defaults are overridden. Any cell error raises.
    """
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    if parameters:
        index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
        source = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
        notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    client = NotebookClient(notebook, timeout=timeout, startup_timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_dir or NOTEBOOKS)}})
    client.execute()
    return notebook


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
