"""The small widget toolkit the chat views share: buttons, a line of HTML, routing a worker thread's
output to the cell that started it (ipykernel >= 7), and waiting for that worker."""

from __future__ import annotations

import html
import threading
from contextlib import contextmanager

import ipywidgets as widgets
from IPython import get_ipython


def html_line(css_class: str, text: str) -> str:
    """``text`` escaped in a div of ``css_class``; nothing for no text."""
    return f'<div class="{css_class}">{html.escape(text)}</div>' if text else ""


def current_parent() -> dict | None:
    """The request of the running cell, for output written later from worker threads."""
    shell = get_ipython()
    return shell.get_parent() if shell is not None and hasattr(shell, "set_thread_parent") else None


@contextmanager
def output_parent(parent: dict | None):
    """Route this thread's output to ``parent``'s cell (ipykernel >= 7 keeps the parent per thread)."""
    shell = get_ipython()
    if parent is None or shell is None:
        yield
        return
    tokens = shell.set_thread_parent(parent)
    try:
        yield
    finally:
        shell.reset_thread_parent(tokens)


def button(description: str, icon: str, style: str = "", tooltip: str = "", disabled: bool = False) -> widgets.Button:
    """A button as wide as its label (at least 92 px)."""
    return widgets.Button(description=description, icon=icon, button_style=style, tooltip=tooltip, disabled=disabled,
                          layout=widgets.Layout(width="auto", min_width="92px"))


def enable(button: widgets.Button, enabled: bool, style: str) -> None:
    """Enable a button in its colour, or disable it grey (a disabled coloured button still looks live)."""
    button.disabled = not enabled
    button.button_style = style if enabled else ""


def join_worker(worker: threading.Thread | None, timeout: float | None, still: str, hint: str = "") -> None:
    """Wait for a widget's background thread; ``TimeoutError`` ("<still> after <timeout> s<hint>") if it
    is still running after ``timeout`` seconds."""
    if worker is None:
        return
    worker.join(timeout)
    if worker.is_alive():
        raise TimeoutError(f"{still} after {timeout} s{hint}")
