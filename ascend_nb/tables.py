"""Tables for notebooks that look the same live, executed and exported.

:class:`Table` renders a DataFrame as HTML with *inline* styles (JupyterLab strips ``<style>``
blocks from untrusted, e.g. executed, notebooks, which loses a pandas Styler's colours), without
the index, with floats rounded, nothing clipped (pandas' ``max_colwidth`` ``...``; long paths may
break after a ``/``) and every cell HTML-escaped (so ``<atb>/cxx_abi_1`` reads as written). Its text form is the full ``to_string``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from html import escape

import pandas as pd

CELL = ("text-align: left; padding: 2px 8px; vertical-align: top; white-space: pre-wrap; word-wrap: break-word; "
        "overflow-wrap: anywhere; word-break: break-word")
LONG_TEXT = 60  # a table with a cell longer than this spans the output width, so its long cells wrap
HEADER = CELL + "; font-weight: bold; border-bottom: 1px solid #999"


class Table:
    """A DataFrame shown with inline styles and ``decimals`` digits after the point (an int for every
    float column, or per column: an int, or a format spec such as ``".2e"``). A meaningful index
    (not 0..n-1) becomes the first column; a plain one is hidden.

    ``styles`` maps a column name to a function of the cell value returning CSS for that cell
    (e.g. a status colour); ``drop_empty`` leaves out columns that are empty in every row.
    """

    def __init__(self, frame: pd.DataFrame, decimals: int | Mapping[str, int | str] = 2,
                 styles: Mapping[str, Callable[[object], str]] | None = None, drop_empty: bool = False):
        plain = isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1
        frame = frame.reset_index(drop=True) if plain else frame.reset_index(names=frame.index.name or "")
        if drop_empty:
            frame = frame.loc[:, [c for c in frame.columns if not frame[c].isna().all()]]
        self.frame, self.decimals, self.styles = frame, decimals, dict(styles or {})
        self._integral = {c for c in frame.columns if pd.api.types.is_float_dtype(frame[c])
                          and frame[c].dropna().map(float.is_integer).all()}  # e.g. lengths made float by a NaN

    def _spec(self, column: str) -> str:
        digits = self.decimals.get(column, 2) if isinstance(self.decimals, Mapping) else self.decimals
        return digits if isinstance(digits, str) else f".{digits}f"

    def cell_text(self, column: str, value: object) -> str:
        """How one cell reads: floats rounded (a column of whole numbers as integers), missing values blank."""
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.0f}" if column in self._integral else format(value, self._spec(column))
        return str(value)

    def _repr_html_(self) -> str:
        head = "".join(f'<th style="{HEADER}">{escape(str(c))}</th>' for c in self.frame.columns)
        rows = []
        for record in self.frame.itertuples(index=False):
            cells = []
            for column, value in zip(self.frame.columns, record):
                style = CELL + ("; " + self.styles[column](value) if column in self.styles else "")
                text = escape(self.cell_text(column, value)).replace("/", "/<wbr>")  # long paths may wrap
                cells.append(f'<td style="{style}">{text}</td>')
            rows.append("<tr>" + "".join(cells) + "</tr>")
        long_text = any(len(self.cell_text(c, v)) > LONG_TEXT for c in self.frame.columns for v in self.frame[c])
        width = "; width: 100%" if long_text else ""  # JupyterLab's own table CSS is table-layout: fixed
        return (f'<table style="border-collapse: collapse; table-layout: auto{width}"><thead><tr>{head}</tr></thead>'
                f'<tbody>{"".join(rows)}</tbody></table>')

    def __repr__(self) -> str:
        text = self.frame.copy()
        for column in text.columns:
            text[column] = [self.cell_text(column, v) for v in text[column]]
        return text.to_string(index=False)
