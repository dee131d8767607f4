"""Explain an error: match pasted text against ``data/error_signatures.csv``, one row per known error.

Each row has a ``signature`` (the error as users see it), a ``pattern`` (a case-insensitive regular
expression), the ``cause``, the ``fix`` as commands, the doctor ``check`` that confirms it (a
:class:`~ascend_nb.doctor.report.Check` name, or empty) and a public ``source`` (an issue or a doc
page), plus a real ``sample`` line the pattern must match. A row is as specific as the longest text
its pattern matches, so ``libtorch_npu.so: undefined symbol`` ranks above a bare ``undefined
symbol:``. The doctor's failed checks map to the same rows through ``check``
(:func:`explain_checks`), so one table holds every fix.

    >>> from ascend_nb import doctor
    >>> doctor.explain("ImportError: libhccl.so: cannot open shared object file")   # signature, cause, fix, check, source
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

import pandas as pd

from ascend_nb.files import data_dir
from ascend_nb.doctor.report import Check
from ascend_nb.errors import AscendNbError

SIGNATURES_FILE = "error_signatures.csv"
COLUMNS = ("signature", "cause", "fix", "check", "source")
NO_MATCH = ("no known error signature matches this text: run `ascend-nb doctor` (or doctor.run() in notebook 01) "
            "to check drivers, CANN, torch/torch_npu and ATB, and paste the first error line of the log")


@functools.cache
def signatures() -> pd.DataFrame:
    """The signature table (columns: signature, pattern, cause, fix, check, source, sample)."""
    path = data_dir() / SIGNATURES_FILE
    if not path.is_file():
        raise AscendNbError(f"signature table {path} is missing: restore it from the repository")
    table = pd.read_csv(path, keep_default_na=False)
    for pattern in table["pattern"]:
        re.compile(pattern)  # a broken row fails loudly, not silently unmatched
    return table


def _specificity(pattern: str, text: str) -> int:
    """Length of the longest text ``pattern`` matches in ``text`` (0: no match)."""
    return max((len(m.group(0)) for m in re.finditer(pattern, text, re.IGNORECASE)), default=0)


def _frame(rows: pd.DataFrame, message: str = "") -> pd.DataFrame:
    frame = rows.loc[:, list(COLUMNS)].reset_index(drop=True)
    frame.attrs["message"] = message
    return frame


def explain(text: str) -> pd.DataFrame:
    """The rows whose pattern occurs in ``text``, most specific first (columns: signature, cause,
    fix, check, source). No match gives an empty frame whose ``attrs["message"]`` points at
    ``ascend-nb doctor``."""
    if not isinstance(text, str) or not text.strip():
        raise AscendNbError("nothing to explain: paste the error text (the log lines around the first error)")
    table = signatures()
    scores = table["pattern"].map(lambda pattern: _specificity(pattern, text))
    hits = table[scores > 0].assign(_score=scores[scores > 0])
    hits = hits.sort_values("_score", ascending=False, kind="stable")
    return _frame(hits, "" if len(hits) else NO_MATCH)


def _best(text: str) -> str | None:
    """The signature of the most specific row matching ``text``, or None."""
    found = explain(text)
    return None if found.empty else found.iloc[0]["signature"]


def explain_checks(checks: Iterable[Check]) -> pd.DataFrame:
    """The rows that explain the failed doctor checks: those linked by check name, and
    the most specific match of what each check found (e.g. ``dcmi module initialize failed``)."""
    bad = [c for c in checks if c.status == "fail"]
    table = signatures()
    quoted = {_best(c.found) for c in bad if c.found.strip()} - {None}
    linked = table["check"].isin({c.name for c in bad}) | table["signature"].isin(quoted)
    message = "" if linked.any() else "no failed check has a known error signature" if bad else \
        "nothing to explain: no check failed"
    return _frame(table[linked], message)


def to_text(frame: pd.DataFrame) -> str:
    """Each match as a short block for a terminal; the no-match message otherwise."""
    if frame.empty:
        return frame.attrs.get("message") or NO_MATCH
    blocks = []
    for i, row in enumerate(frame.itertuples(index=False), 1):
        confirm = f"\n   confirm: ascend-nb doctor (row '{row.check}')" if row.check else ""
        blocks.append(f"{i}. {row.signature}\n   cause: {row.cause}\n   fix:   {row.fix}{confirm}\n"
                      f"   source: {row.source}")
    return "\n\n".join(blocks)
