"""Every setting of a notebook is a papermill parameter: an UPPER_CASE name a notebook assigns is first
assigned in its `parameters` cell, so `papermill -p NAME VALUE` (and the tests) can set it."""

import ast
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def settings(source: str) -> set[str]:
    """The UPPER_CASE names a cell assigns at its top level."""
    names = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and n.id.isupper()}
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_setting_is_in_the_parameters_cell(path):
    code = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    parameters = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1 and parameters[0] is code[0], "the first code cell is the one parameters cell"
    declared = settings(parameters[0].source)
    elsewhere = set().union(*(settings(cell.source) for cell in code[1:]))
    assert elsewhere <= declared, f"set outside the parameters cell: {sorted(elsewhere - declared)}"
