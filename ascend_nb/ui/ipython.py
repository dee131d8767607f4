"""IPython integration: an :class:`AscendNbError` shows as its one line, as the CLI prints it."""

from __future__ import annotations

import sys

from ascend_nb.errors import AscendNbError


def _one_line(shell, etype, value, tb, tb_offset=None) -> list[str]:
    """IPython custom-exception handler: the structured traceback is the error's single line."""
    stb = [f"\x1b[0;31m{etype.__name__}\x1b[0m: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def install_error_display(shell=None) -> bool:
    """Make the running IPython (or ``shell``) show ``AscendNbError`` without its traceback.

    Called when ``ascend_nb`` is imported; a no-op outside IPython. Returns whether it was installed.
    """
    if shell is None:
        if "IPython" not in sys.modules:  # never import IPython into a plain script
            return False
        shell = sys.modules["IPython"].get_ipython()
    if shell is None:
        return False
    shell.set_custom_exc((AscendNbError,), _one_line)
    return True
