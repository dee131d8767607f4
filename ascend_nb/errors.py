"""User-facing errors: one line that names the problem and the fix; and one-time notes."""

import sys


class AscendNbError(Exception):
    """An error caused by input or environment; the CLI prints it on one line and exits 2."""


_NOTED: set[str] = set()


def note_once(message: str) -> None:
    """Tell the user something worth knowing that is not an error, once per process, on stderr."""
    if message not in _NOTED:
        _NOTED.add(message)
        print(f"ascend-nb: note: {message}", file=sys.stderr)
