"""The guides' performance CSV: read theirs, write ours in their columns, rewrite files atomically.

The guides' performance test writes one row per (input, output) length pair with the columns
``batch_size, input_seq_len(Encoding), output_seq_len(Decoding), ResponseTime(s),
forward_first_token_time(ms), forward_next_token_time(ms)`` (newer versions add
``pre_next_token_time(ms)`` and ``post_next_token_time_post(ms)``). Our sweep CSV carries our field
names and those columns in the same rows; :func:`read_csv` loads either kind (and theirs).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from ascend_nb.errors import AscendNbError
from ascend_nb.files import atomic_write_text

GUIDE_COLUMNS = ("batch_size", "input_seq_len(Encoding)", "output_seq_len(Decoding)", "ResponseTime(s)",
                 "forward_first_token_time(ms)", "forward_next_token_time(ms)")


def guide_values(row: Mapping) -> dict:
    """The guides' columns for one row with our field names (``e2e_ms`` becomes seconds)."""
    return {"batch_size": row["batch_size"], "input_seq_len(Encoding)": row["input_len"],
            "output_seq_len(Decoding)": row["output_len"], "ResponseTime(s)": row["e2e_ms"] / 1000.0,
            "forward_first_token_time(ms)": row["ttft_ms"], "forward_next_token_time(ms)": row["tpot_ms"]}


def from_guide_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Fill our field names from the guides' columns where a table lacks them."""
    table = table.copy()
    derived = {"input_len": lambda t: t["input_seq_len(Encoding)"],
               "output_len": lambda t: t["output_seq_len(Decoding)"],
               "e2e_ms": lambda t: t["ResponseTime(s)"] * 1000.0,
               "ttft_ms": lambda t: t["forward_first_token_time(ms)"],
               "tpot_ms": lambda t: t["forward_next_token_time(ms)"]}
    for field, compute in derived.items():
        if field not in table:
            table[field] = compute(table)
    if "decode_tokens_per_s" not in table:
        table["decode_tokens_per_s"] = 1000.0 * table["batch_size"] / table["tpot_ms"]
    return table


def read_csv(path: str | Path) -> pd.DataFrame:
    """Load a sweep CSV (ours, or the guides' own ``performance_test_*.csv``) with our field names."""
    path = Path(path)
    if not path.is_file():
        raise AscendNbError(f"{path} does not exist: give the path of a sweep or guides' performance CSV")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AscendNbError(f"{path} is not a CSV file ({first[:120]}): give a sweep or guides' performance CSV") from exc
    table.columns = [column.strip() for column in table.columns]
    if "flags" in table:  # text; an empty cell means no flag, not a missing value
        table["flags"] = table["flags"].astype(object).where(table["flags"].notna(), "").astype(str)
    ours = {"batch_size", "input_len", "output_len", "ttft_ms", "tpot_ms", "e2e_ms"}
    if not ours <= set(table.columns) and not set(GUIDE_COLUMNS) <= set(table.columns):
        raise AscendNbError(f"{path} is not a performance CSV: it needs the guides' columns "
                            f"({', '.join(GUIDE_COLUMNS)}) or ours ({', '.join(sorted(ours))})")
    table = from_guide_columns(table)
    for column in ("batch_size", "input_len", "output_len", "ttft_ms", "tpot_ms", "e2e_ms"):
        if not pd.api.types.is_numeric_dtype(table[column]):
            raise AscendNbError(f"{path} is not a performance CSV: column {column} holds non-numbers "
                                f"(e.g. {str(table[column].iloc[0])[:40]!r})")
    return table


def write_guides_csv(rows: pd.DataFrame | Iterable[Mapping], path: str | Path) -> Path:
    """Write results (our field names) in exactly the guides' six columns."""
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    return write_rows(path, GUIDE_COLUMNS, [guide_values(row) for row in records])


def format_value(value) -> str:
    """A CSV cell: empty for None/NaN, ``repr`` for floats (exact round trip), ``str`` otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def write_rows(path: str | Path, columns: Sequence[str], rows: Iterable[Mapping]) -> Path:
    """Write ``rows`` (missing keys left empty) under a header of ``columns``, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_value(row.get(column)) for column in columns])
    return atomic_write_text(path, buffer.getvalue())


def read_rows(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the raw (string) rows of a CSV file, for rewriting it unchanged."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows
