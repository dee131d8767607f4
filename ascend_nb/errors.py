"""User-facing errors: one line that names the problem and the fix."""


class AscendNbError(Exception):
    """An error caused by input or environment; the CLI prints it on one line and exits 2."""
