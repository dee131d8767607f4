"""MindIE ModelTest's performance CSV: read theirs, write ours in their columns.

ModelTest writes one row per (batch, input, output) case with the columns ``Model, Batchsize,
In_seq, Out_seq, Total time(s), First token time(ms), Non-first token time(ms), Non-first token
Throughput(Tokens/s), E2E Throughput(Tokens/s)``, where the non-first-token throughput is
batch / non-first-token time and the E2E throughput batch x Out_seq / total time; the last row adds
``Non-first token Throughput Average(Tokens/s)`` and ``E2E Throughput Average(Tokens/s)`` (means over
the file's rows). Cells are padded with spaces; older files spell "Throughput" "Throughout" and
name the E2E column ``Throughput(Tokens/s)``; the formatted variant separates cells with ``|``.

A load level maps onto a case as: Batchsize = concurrency, In_seq / Out_seq = the requested lengths,
Total time = the level's duration, first / non-first token time = mean TTFT / TPOT, E2E throughput
= the level's output token throughput.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from ascend_nb.bench.guides_csv import write_rows
from ascend_nb.errors import AscendNbError

CASE_COLUMNS = ("Model", "Batchsize", "In_seq", "Out_seq", "Total time(s)", "First token time(ms)",
                "Non-first token time(ms)", "Non-first token Throughput(Tokens/s)", "E2E Throughput(Tokens/s)")
AVERAGE_COLUMNS = ("Non-first token Throughput Average(Tokens/s)", "E2E Throughput Average(Tokens/s)")
MINDIE_COLUMNS = CASE_COLUMNS + AVERAGE_COLUMNS
_ALIASES = {"Throughput(Tokens/s)": "E2E Throughput(Tokens/s)"}
# our load-level field for each MindIE column (read direction)
_OURS = {"Model": "model", "Batchsize": "concurrency", "In_seq": "input_len", "Out_seq": "output_len",
         "Total time(s)": "duration_s", "First token time(ms)": "mean_ttft_ms",
         "Non-first token time(ms)": "mean_tpot_ms", "E2E Throughput(Tokens/s)": "output_throughput"}


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def mindie_values(row: Mapping) -> dict:
    """ModelTest's case columns for one load-level row (our field names)."""
    batch = row.get("concurrency")
    batch = None if batch is None or (isinstance(batch, float) and math.isnan(batch)) else int(batch)
    tpot = _number(row.get("mean_tpot_ms"))
    return {"Model": row.get("model"), "Batchsize": batch, "In_seq": row.get("input_len"),
            "Out_seq": row.get("output_len"), "Total time(s)": _number(row.get("duration_s")),
            "First token time(ms)": _number(row.get("mean_ttft_ms")), "Non-first token time(ms)": tpot,
            "Non-first token Throughput(Tokens/s)": 1000.0 * batch / tpot if batch and tpot else None,
            "E2E Throughput(Tokens/s)": _number(row.get("output_throughput"))}


def write_mindie_csv(rows: pd.DataFrame | Iterable[Mapping], path: str | Path) -> Path:
    """Write load-level rows as a ModelTest performance CSV (the two averages on the last row, as theirs)."""
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    cases = [mindie_values(row) for row in records]
    if not cases:
        raise AscendNbError("no rows to write: run a load benchmark first")
    for column, source in zip(AVERAGE_COLUMNS, CASE_COLUMNS[-2:]):
        values = [case[source] for case in cases if case[source] is not None]
        cases[-1][column] = sum(values) / len(values) if values else None
    return write_rows(path, MINDIE_COLUMNS, cases)


def read_mindie_csv(path: str | Path) -> pd.DataFrame:
    """Load a ModelTest performance CSV (theirs, any spelling above, or ours) with its columns and ours
    (``model, concurrency, input_len, output_len, duration_s, mean_ttft_ms, mean_tpot_ms, output_throughput``)."""
    path = Path(path)
    if not path.is_file():
        raise AscendNbError(f"{path} does not exist: give the path of a MindIE ModelTest performance CSV")
    first = path.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
    table = pd.read_csv(path, sep="|" if first and "|" in first[0] else ",", skipinitialspace=True)
    table.columns = [_ALIASES.get(c, c) for c in (str(c).strip().replace("Throughout", "Throughput")
                                                  for c in table.columns)]
    missing = [c for c in CASE_COLUMNS if c not in table.columns]
    if missing:
        raise AscendNbError(f"{path} is not a MindIE performance CSV: it lacks {', '.join(missing)}")
    table = table.loc[:, [c for c in table.columns if not c.startswith("Unnamed")]]
    table["Model"] = table["Model"].astype(str).str.strip()
    for column in MINDIE_COLUMNS[1:]:
        if column in table:
            table[column] = pd.to_numeric(table[column].astype(str).str.strip().replace("", None), errors="coerce")
    for theirs, ours in _OURS.items():
        table[ours] = table[theirs]
    return table
