"""A progress bar that ends in its final state in a notebook, with an ETA; tqdm on a console.

``tqdm.auto`` in a kernel draws an ipywidgets bar that an executed or exported notebook shows frozen
at its first state (``0/36``). :class:`NotebookProgress` is one ``display`` output updated in place
(HTML ``<progress>`` plus a text line), so the saved notebook keeps the last state: ``36/36 · 4:10``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm


def in_jupyter_kernel() -> bool:
    """True when running inside a Jupyter kernel (IPython with a kernel attached)."""
    if "IPython" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class NotebookProgress:
    """The part of tqdm's interface the package uses (``update``, ``set_postfix[_str]``, ``write``,
    ``close``, ``with``).

    The ETA is the mean time of the steps counted by :meth:`update` in this run (steps passed as
    ``initial``, e.g. resumed from a CSV, cost nothing) times the steps left.
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it"):
        from IPython.display import display

        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self._initial, self._start, self._postfix, self._closed = initial, time.monotonic(), "", False
        self._handle = display(self._bundle(), raw=True, display_id=True)

    def text(self) -> str:
        """The one-line state: ``desc: n/total unit · elapsed · ETA`` and the postfix."""
        elapsed = time.monotonic() - self._start
        done_here = self.n - self._initial
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}", _clock(elapsed)]
        if self.n < self.total and done_here > 0:
            parts.append(f"ETA {_clock(elapsed / done_here * (self.total - self.n))}")
        elif self.n >= self.total:
            parts.append("done")
        return " · ".join(parts + ([self._postfix] if self._postfix else []))

    def _bundle(self) -> dict[str, str]:
        from html import escape

        return {"text/plain": self.text(),
                "text/html": f'<progress value="{self.n}" max="{max(self.total, 1)}" style="width:16em"></progress> '
                             f"<code>{escape(self.text())}</code>"}

    def _draw(self) -> None:
        if self._handle is not None:  # None outside IPython
            self._handle.update(self._bundle(), raw=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._draw()

    def set_postfix(self, **values) -> None:
        self._postfix = " ".join(f"{key}={value}" for key, value in values.items())
        self._draw()

    def set_postfix_str(self, text: str) -> None:
        self._postfix = text
        self._draw()

    def write(self, message: str) -> None:
        print(message)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._draw()

    def __enter__(self) -> NotebookProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class ConsoleProgress(tqdm):
    """tqdm on stderr whose :meth:`write` notes go to stderr too, so stdout keeps only the results
    (``ascend-nb bench --sweep --json | jq`` reads JSON alone)."""

    def write(self, message: str) -> None:  # tqdm.write goes to stdout by default
        tqdm.write(message, file=sys.stderr)


def progress_bar(total: int, initial: int = 0, desc: str = "", unit: str = "it", disable: bool = False):
    """A :class:`NotebookProgress` inside a Jupyter kernel, else a console :class:`ConsoleProgress` (which has an ETA)."""
    if not disable and in_jupyter_kernel():
        return NotebookProgress(total, initial=initial, desc=desc, unit=unit)
    return ConsoleProgress(total=total, initial=initial, desc=desc, unit=unit, disable=disable)


@contextmanager
def transformers_bars_off() -> Iterator[None]:
    """transformers' own progress bars off (``from_pretrained``'s "Loading weights" is a tqdm widget that
    an executed notebook shows frozen at 0 %), restored afterwards."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
