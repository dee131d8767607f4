"""A resumable results CSV: rewritten atomically after every row, earlier rows found again by key.

The sweep and the serving load benchmark both append one row per finished point / load level; a
crash or a kernel restart loses at most the row in flight, and a later run with the same file
skips what is already there. Only complete rows are kept: a last row cut mid-write (too few cells,
a figure missing or unparsable, no line end) is dropped with a note and measured again, and an
incomplete row before others refuses the file, naming its line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from ascend_nb.bench.guides_csv import format_value, write_rows
from ascend_nb.errors import AscendNbError, note_once


class ResultsCsv:
    """The rows of ``path`` (when ``resume`` and it exists) under ``columns``; ``key_fields`` identify a row.

    Without a path it only keeps the rows in memory. Values read back are typed by :meth:`typed`:
    ``text_fields`` stay strings, ``int_fields`` become ints, the others floats, empty cells None.
    A finished row fills every column that is neither text nor in ``optional_fields``.
    """

    def __init__(self, path: str | Path | None, columns: Sequence[str], key_fields: Sequence[str],
                 text_fields: Iterable[str] = (), int_fields: Iterable[str] = (),
                 optional_fields: Iterable[str] = (), resume: bool = True, kind: str = "results"):
        self.path = Path(path) if path is not None else None
        self.columns, self.key_fields = tuple(columns), tuple(key_fields)
        self.text_fields, self.int_fields = set(text_fields), set(int_fields)
        self.optional_fields = set(optional_fields)
        self.kind = kind
        self.rows: list[Mapping] = []
        if self.path is not None and resume and self.path.exists():
            self.rows = self._read()
        self._done = {self.key(row): row for row in self.rows}

    def _read(self) -> list[dict[str, str]]:
        """The complete raw rows of the file (a cut last row dropped with a note)."""
        text = self.path.read_text(encoding="utf-8", errors="replace")
        lines = _numbered_rows(text)
        _, header = next(lines, (1, []))
        if tuple(header or ()) != self.columns:
            raise AscendNbError(f"{self.path} has other columns than a {self.kind} CSV: choose another csv path, "
                                "or move that file away to start over")
        rows, cut = [], None
        for line, cells in lines:
            if cut is not None:
                raise AscendNbError(f"{self.path} line {cut[0]} is an incomplete {self.kind} row ({cut[1]}) before "
                                    "others: delete that line (its point is then measured again), "
                                    "or choose another csv path")
            problem = self.incomplete(cells)
            if problem is None:
                rows.append(dict(zip(self.columns, cells)))
            else:
                cut = (line, problem)
        if cut is None and rows and not text.endswith("\n"):
            rows.pop()
            cut = (line, "no line end")
        if cut is not None:
            note_once(f"{self.path} line {cut[0]} is an incomplete last row ({cut[1]}), cut mid-write: "
                      "dropped, its point is measured again")
        return rows

    def incomplete(self, cells: list[str] | None) -> str | None:
        """Why the raw ``cells`` of a row are not a finished row; None when they are."""
        if cells is None:
            return "not CSV"
        if len(cells) != len(self.columns):
            return f"{len(cells)} cells, the header has {len(self.columns)}"
        for column, value in zip(self.columns, cells):
            if "\ufffd" in value:
                return f"{column} is not UTF-8 text"
            if column in self.text_fields or (value == "" and column in self.optional_fields):
                continue
            try:
                self._number(column, value)
            except ValueError:
                return f"{column} is empty" if value == "" else f"{column} is not a number: {value[:20]!r}"
        return None

    def key(self, row: Mapping) -> tuple[str, ...]:
        """The row's key, the same for a typed row and for its raw CSV cells."""
        return tuple(format_value(row.get(field)) for field in self.key_fields)

    def find(self, row: Mapping) -> dict | None:
        """The stored row (typed) with the same key as ``row``, or None."""
        stored = self._done.get(self.key(row))
        return None if stored is None else self.typed(stored)

    def append(self, row: Mapping) -> None:
        """Keep ``row`` and rewrite the file with every row so far."""
        self.rows.append(row)
        self._done[self.key(row)] = row
        if self.path is not None:
            write_rows(self.path, self.columns, self.rows)

    def typed(self, raw: Mapping) -> dict:
        """A stored row with its values typed (raw CSV strings become str / int / float / None)."""
        row = {}
        for column in self.columns:
            value = raw.get(column)
            if not isinstance(value, str) or column in self.text_fields:
                row[column] = value
            else:
                row[column] = None if value == "" else self._number(column, value)
        return row

    def _number(self, column: str, value: str) -> int | float:
        return int(value) if column in self.int_fields else float(value)


def _numbered_rows(text: str) -> Iterator[tuple[int, list[str] | None]]:
    """(line number, cells) of each non-blank CSV row of ``text``; cells None for a row csv cannot read."""
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error:  # a NUL byte (Python 3.10) or a field over csv's size limit
            cells = None
        if cells != []:
            yield reader.line_num, cells
