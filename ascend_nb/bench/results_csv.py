"""A resumable results CSV: rewritten atomically after every row, earlier rows found again by key.

The sweep and the serving load benchmark both append one row per finished point / load level; a
crash or a kernel restart loses at most the row in flight, and a later run with the same file
skips what is already there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ascend_nb.bench.guides_csv import format_value, read_rows, write_rows
from ascend_nb.errors import AscendNbError


class ResultsCsv:
    """The rows of ``path`` (when ``resume`` and it exists) under ``columns``; ``key_fields`` identify a row.

    Without a path it only keeps the rows in memory. Values read back are typed by :meth:`typed`:
    ``text_fields`` stay strings, ``int_fields`` become ints, the others floats, empty cells None.
    """

    def __init__(self, path: str | Path | None, columns: Sequence[str], key_fields: Sequence[str],
                 text_fields: Iterable[str] = (), int_fields: Iterable[str] = (), resume: bool = True,
                 kind: str = "results"):
        self.path = Path(path) if path is not None else None
        self.columns, self.key_fields = tuple(columns), tuple(key_fields)
        self.text_fields, self.int_fields = set(text_fields), set(int_fields)
        self.rows: list[Mapping] = []
        if self.path is not None and resume and self.path.exists():
            header, self.rows = read_rows(self.path)
            if tuple(header) != self.columns:
                raise AscendNbError(f"{self.path} has other columns than a {kind} CSV: choose another csv path, "
                                    "or move that file away to start over")
        self._done = {self.key(row): row for row in self.rows}

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
            if not isinstance(value, str):
                row[column] = value
            elif column in self.text_fields:
                row[column] = value
            elif value == "":
                row[column] = None
            else:
                row[column] = int(value) if column in self.int_fields else float(value)
        return row
