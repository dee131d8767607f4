"""The guides' precision table: runs side by side (and beside the guides' Aquila-7B numbers)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ascend_nb.errors import AscendNbError
from ascend_nb.files import DATA_DIR
from ascend_nb.precision.ceval import CATEGORIES
from ascend_nb.precision.accuracy import AVG_ACC, EvalResult

ROWS = (*CATEGORIES, AVG_ACC)
AQUILA_REFERENCE_CSV = DATA_DIR / "reference" / "precision_aquila.csv"


def load_aquila_reference(path: str | Path = AQUILA_REFERENCE_CSV) -> pd.DataFrame:
    """The Aquila-7B C-Eval val table of the guides: one column per device, rows STEM .. Avg acc, plus ``n``.

    The guides' numbers come from the Ascend harness (protocol ``generate``).
    """
    path = Path(path)
    if not path.is_file():
        raise AscendNbError(f"reference table {path} is missing: restore data/reference/ from the repository")
    table = pd.read_csv(path).set_index("category")
    missing = [row for row in ROWS if row not in table.index]
    if missing:
        raise AscendNbError(f"{path} lacks the rows {', '.join(missing)}: restore it from the repository")
    return table.loc[list(ROWS)]


def precision_table(columns: Mapping[str, EvalResult | pd.Series]) -> pd.DataFrame:
    """Accuracy per category and Avg acc, one column per run (an :class:`EvalResult` or a Series indexed
    by category, e.g. a column of :func:`load_aquila_reference`). Two columns get the guides'
    ``compare`` column (first minus second)."""
    if not columns:
        raise AscendNbError("precision_table needs at least one run")
    table = pd.DataFrame(index=list(ROWS))
    table.index.name = "precision"
    for name, column in columns.items():
        accuracy = column.by_category()["acc"] if isinstance(column, EvalResult) else column
        table[name] = accuracy.reindex(list(ROWS)).astype(float)
    if len(columns) == 2:
        first, second = table.columns
        table["compare"] = table[first] - table[second]
    return table


def markdown_table(table: pd.DataFrame, number_format: str = ".5f") -> str:
    """A plain Markdown rendering (index first), floats in ``number_format``, NaN shown as ``-``."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else format(value, number_format)
        return str(value)

    header = [table.index.name or "", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("-" * (len(h) + 2) for h in header) + "|"]
    for name, row in table.astype(object).iterrows():
        lines.append("| " + " | ".join([str(name), *(cell(v) for v in row.tolist())]) + " |")
    return "\n".join(lines)
