"""The doctor's result: check rows (pass / warn / fail / skip with found, expected, hint) and facts.

``Report.table`` is a pandas DataFrame, ``style_table`` colours it for notebooks (inline styles, so
an executed copy keeps the colours), ``step_summary`` counts statuses per install step, ``to_text``
renders it for a terminal and ``as_dict`` is the ``--json`` object.
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from ascend_nb.tables import Table

STATUSES = ("pass", "warn", "fail", "skip")
COLUMNS = ("check", "status", "found", "expected", "hint")
STATUS_STYLES = {
    "pass": "background-color: #c8e6c9; color: #1b5e20",
    "warn": "background-color: #ffe0b2; color: #e65100",
    "fail": "background-color: #ffcdd2; color: #b71c1c",
    "skip": "background-color: #eeeeee; color: #616161",
}


@dataclass(frozen=True)
class Check:
    """One row: what was checked, its status, what was found and expected, and the exact fix."""

    name: str
    status: str
    found: str = ""
    expected: str = ""
    hint: str = ""
    step: str = ""  # the install step of the guides this row belongs to

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "found": self.found, "expected": self.expected,
                "hint": self.hint}


@dataclass
class Report:
    """Every check plus the facts they were judged on (versions, devices)."""

    checks: list[Check]
    facts: dict = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        """check / status / found / expected / hint, one row per check."""
        return _frame(self.checks)

    def step_table(self, step: str) -> pd.DataFrame:
        """The rows of one install step (see ``ascend_nb.doctor.checks.STEPS``)."""
        return _frame([c for c in self.checks if c.step == step])

    def step_summary(self) -> pd.DataFrame:
        """One row per install step (in the guides' order): how many checks pass / warn / fail / skip."""
        import pandas as pd

        steps = list(dict.fromkeys(c.step for c in self.checks))
        return pd.DataFrame([{"step": step, **{s: sum(c.step == step and c.status == s for c in self.checks)
                                               for s in STATUSES}} for step in steps])

    def by_status(self, status: str) -> list[Check]:
        return [c for c in self.checks if c.status == status]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 otherwise (the CLI's exit status)."""
        return 1 if self.by_status("fail") else 0

    def fixes(self) -> list[str]:
        """``[status] check: hint`` for every failed, then every warned, row that has a hint."""
        return [f"[{c.status}] {c.name}: {c.hint}" for status in ("fail", "warn") for c in self.by_status(status)
                if c.hint]

    def as_dict(self) -> dict:
        """The ``--json`` object: ``{"checks": [{name, status, found, expected, hint}], "facts": {...}}``."""
        return {"checks": [c.as_dict() for c in self.checks], "facts": self.facts}

    def summary(self) -> str:
        counts = {s: len(self.by_status(s)) for s in STATUSES}
        return ", ".join(f"{n} {s}" for s, n in counts.items() if n)

    def to_text(self, width: int | None = None) -> str:
        """A terminal table (cells wrapped to fit ``width``), then the fixes for failed and warned rows."""
        width = width or shutil.get_terminal_size((120, 24)).columns
        widths = [max(len("check"), *(len(c.name) for c in self.checks)), 6]
        flexible = max(width - sum(widths) - 6, 40)
        widths += [flexible * 3 // 5, flexible - flexible * 3 // 5]
        lines = [_row(("CHECK", "STATUS", "FOUND", "EXPECTED"), widths)]
        lines += [_row((c.name, c.status, c.found, c.expected), widths) for c in self.checks]
        fixes = self.fixes()
        if fixes:
            lines += ["", "How to fix:"] + [textwrap.fill(f, width, initial_indent="  ", subsequent_indent="      ")
                                             for f in fixes]
        lines += ["", f"{self.summary()}."]
        return "\n".join(lines)


def _frame(checks: list[Check]) -> pd.DataFrame:
    import pandas as pd  # only tables need pandas; the CLI stays light

    return pd.DataFrame([[c.name, c.status, c.found, c.expected, c.hint] for c in checks], columns=list(COLUMNS))


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    wrapped = [textwrap.wrap(cell, w) or [""] for cell, w in zip(cells, widths)]
    height = max(len(w) for w in wrapped)
    return "\n".join("  ".join((w[i] if i < len(w) else "").ljust(width) for w, width in zip(wrapped, widths)).rstrip()
                     for i in range(height))


def _count_style(status: str):
    return lambda count: STATUS_STYLES[status] if count else "color: #999"


def style_table(table: pd.DataFrame) -> Table:
    """The check table for notebooks: the status column green / amber / red / grey (inline styles),
    left-aligned, unclipped text, no index. A :meth:`Report.step_summary` gets its counts coloured."""
    from ascend_nb.tables import Table

    if "status" in table:
        return Table(table, styles={"status": lambda status: STATUS_STYLES.get(status, "")})
    return Table(table, styles={status: _count_style(status) for status in STATUSES if status in table})
