"""Tables for notebooks that look the same live, executed and exported, and read well in a report.

:class:`Table` renders a DataFrame as HTML with *inline* styles (JupyterLab strips ``<style>``
blocks from untrusted, e.g. executed, notebooks, which loses a pandas Styler's colours), without
the index, every cell HTML-escaped (so ``<atb>/cxx_abi_1`` reads as written) and nothing clipped.
A performance engineer pastes it into a report as it is: headers name their units (``ttft_ms`` reads
``TTFT (ms)``), floats are rounded by what the column holds (milliseconds to 0.1, accuracy to 0.001,
an error like MaxAbsErr in scientific notation), a number or a word never wraps inside itself (text
wraps between words; long paths after a ``/``), infinities read ``∞`` with the table's note saying
why, and a long table shows its first rows with the rest one click away. Its text form is the full
``to_string`` under the frame's own column names.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Mapping
from html import escape

import pandas as pd

NUMBER = "text-align: right; padding: 2px 8px; vertical-align: top; white-space: nowrap"
TEXT = ("text-align: left; padding: 2px 8px; vertical-align: top; white-space: pre-wrap; overflow-wrap: normal; "
        "word-break: normal")
WORD = TEXT.replace("white-space: pre-wrap", "white-space: nowrap")
HEADER = ("text-align: left; padding: 2px 8px; vertical-align: bottom; font-weight: bold; "
          "border-bottom: 1px solid #999; white-space: normal; overflow-wrap: normal; word-break: keep-all")
NOTE = "color: #555; font-size: 90%; margin: 4px 0 0 0"
LONG_TEXT = 60  # a table with a cell longer than this spans the output width, so its long cells wrap
SHOWN_ROWS = 12  # a longer table shows this many rows; the rest sits in a <details> one click away
# a name's word -> how it reads in a header; its unit -> the header's "(unit)"
WORDS = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2e": "E2E", "e2el": "E2EL", "kv": "KV", "tp": "TP",
         "npu": "NPU", "cpu": "CPU", "gpu": "GPU", "slo": "SLO", "id": "id", "len": "length"}
UNITS = {"ms": "ms", "s": "s", "mb": "MB", "gb": "GB", "gbs": "GB/s", "mib": "MiB", "pct": "%", "bytes": "bytes"}
# (pattern on the column name, format of its floats): the first match wins
KINDS = ((r"(^|_)(pct|percent)(_|$)|spread", ".1f"), (r"(^|_)bytes$", ",.0f"), (r"(^|_)(ms|gbs|mb|mib)(_|$)", ".1f"),
         (r"per_s$|throughput|tokens_s$", ".1f"), (r"(^|_)(s|gb)(_|$)", ".2f"), (r"accuracy|(^|_)acc(_|$)", ".3f"),
         (r"cosine", ".6f"), (r"err|kl", ".2e"), (r"speedup|ratio", ".2f"))


def column_header(name: object) -> str:
    """How a column name reads as a header: ``ttft_ms`` -> ``TTFT (ms)``, ``decode_tokens_per_s`` ->
    ``decode tokens/s``, ``pct_of_roofline`` -> ``% of roofline``; a name that is already a label
    (``Cosine``, ``TTFT (ms)``) stays as it is."""
    text = str(name)
    if not re.fullmatch(r"[a-z0-9_]+", text):
        return text
    text = re.sub(r"_per_s(?=_|$)", "/s", text)
    words = text.split("_")
    if words[0] == "pct":
        return " ".join(["%", *(WORDS.get(w, w) for w in words[1:])])
    unit = next((w for w in words if w in UNITS and w != words[0]), None)
    label = " ".join(WORDS.get(w, w) for w in words if w != unit)
    return f"{label} ({UNITS[unit]})" if unit else label


def float_format(name: object, values: pd.Series) -> str:
    """The format of a float column by what it holds (see :data:`KINDS`), else by its magnitude."""
    lowered = str(name).lower().replace(" ", "_")
    for pattern, spec in KINDS:
        if re.search(pattern, lowered):
            return spec
    finite = values[values.map(lambda v: isinstance(v, float) and math.isfinite(v))].abs()
    if finite.empty or finite.max() >= 1000:
        return ",.0f"
    return ".2f" if finite.min() >= 1 or finite.max() >= 10 else ".3g"


class Table:
    """A DataFrame shown with inline styles, unit headers and floats rounded by kind.

    ``decimals`` overrides the rounding: an int for every float column, or per column an int or a
    format spec such as ``".2e"``. A meaningful index (not 0..n-1) becomes the first column; a plain
    one is hidden. ``styles`` maps a column name to a function of the cell value returning CSS for that
    cell (e.g. a status colour); ``drop_empty`` leaves out columns that are empty in every row;
    ``note`` is a line printed under the table (say what an ``∞`` or an empty cell means).
    """

    def __init__(self, frame: pd.DataFrame, decimals: int | Mapping[str, int | str] | None = None,
                 styles: Mapping[str, Callable[[object], str]] | None = None, drop_empty: bool = False,
                 note: str = ""):
        plain = isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1
        if plain:
            frame = frame.reset_index(drop=True)
        else:  # index levels become the first columns (an unnamed single one gets no header)
            frame = frame.reset_index(names=[name or "" for name in frame.index.names])
        if drop_empty:
            frame = frame.loc[:, [c for c in frame.columns if not frame[c].isna().all()]]
        self.frame, self.decimals, self.styles, self.note = frame, decimals, dict(styles or {}), note
        self._integral = {c for c in frame.columns if pd.api.types.is_float_dtype(frame[c])
                          and frame[c].dropna().map(lambda v: math.isinf(v) or float.is_integer(v)).all()}
        self._specs = {c: self._spec(c) for c in frame.columns}

    def _spec(self, column: str) -> str:
        digits = self.decimals.get(column) if isinstance(self.decimals, Mapping) else self.decimals
        if digits is None:
            return float_format(column, self.frame[column])
        return digits if isinstance(digits, str) else f".{digits}f"

    def cell_text(self, column: str, value: object) -> str:
        """How one cell reads: floats rounded (a column of whole numbers as integers), ``∞`` for an
        infinity, missing values blank."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            if math.isinf(value):
                return "∞" if value > 0 else "-∞"
            if column in self._integral:
                value = int(value)
            else:
                return format(value, self._specs[column])
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and re.search(r"bytes", str(column)):
            return f"{value:,}"
        return str(value)

    def _row_html(self, record) -> str:
        cells = []
        for column, value in zip(self.frame.columns, record):
            number = isinstance(value, numbers.Number) and not isinstance(value, bool)
            raw = self.cell_text(column, value)
            one_word = not number and "/" not in raw and not any(c.isspace() for c in raw)  # a name: never at a '-'
            style = (NUMBER if number else WORD if one_word else TEXT) + \
                ("; " + self.styles[column](value) if column in self.styles else "")
            text = escape(raw)
            if not number:
                text = text.replace("/", "/<wbr>")  # a long path may wrap after a slash, nowhere else
            cells.append(f'<td style="{style}">{text}</td>')
        return "<tr>" + "".join(cells) + "</tr>"

    def _table_html(self, records: list, head: bool = True) -> str:
        header = "".join(f'<th style="{HEADER}">{escape(column_header(c))}</th>' for c in self.frame.columns)
        long_text = any(len(self.cell_text(c, v)) > LONG_TEXT for c in self.frame.columns for v in self.frame[c])
        width = "; width: 100%" if long_text else ""  # JupyterLab's own table CSS is table-layout: fixed
        thead = f"<thead><tr>{header}</tr></thead>" if head else ""
        return (f'<table style="border-collapse: collapse; table-layout: auto{width}">{thead}'
                f'<tbody>{"".join(self._row_html(r) for r in records)}</tbody></table>')

    def _repr_html_(self) -> str:
        records = list(self.frame.itertuples(index=False))
        if not records:  # no header over nothing: say so
            return f'<p style="{NOTE}">{escape(self.note or "no rows")}</p>'
        html = self._table_html(records if len(records) <= SHOWN_ROWS + 2 else records[:SHOWN_ROWS])
        if len(records) > SHOWN_ROWS + 2:
            rest = len(records) - SHOWN_ROWS
            html += (f'<details><summary style="cursor: pointer">show all {len(records)} rows ({rest} more)</summary>'
                     f"{self._table_html(records)}</details>")
        if self.note:
            html += f'<p style="{NOTE}">{escape(self.note)}</p>'
        return html

    def __repr__(self) -> str:
        if self.frame.empty:
            return self.note or "no rows"
        text = self.frame.copy()
        for column in text.columns:
            text[column] = [self.cell_text(column, v) for v in text[column]]
        return text.to_string(index=False) + (f"\n{self.note}" if self.note else "")
