"""The chat's prompt box: an anywidget text area (front end in ``assets/prompt_box.js`` / ``.css``)."""

from __future__ import annotations

from pathlib import Path

import anywidget
import ipywidgets as widgets
import traitlets

ASSETS = Path(__file__).with_name("assets")


class PromptBox(anywidget.AnyWidget):
    """A multi-line text box: Enter sends, Shift+Enter adds a line (IME composition is left alone)."""

    _esm = (ASSETS / "prompt_box.js").read_text(encoding="utf-8")
    _css = (ASSETS / "prompt_box.css").read_text(encoding="utf-8")
    value = traitlets.Unicode("").tag(sync=True)
    placeholder = traitlets.Unicode("").tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._submit_handlers = widgets.CallbackDispatcher()
        self.on_msg(self._handle_message)

    def on_submit(self, callback) -> None:
        """Call ``callback(box)`` when the user presses Enter."""
        self._submit_handlers.register_callback(callback)

    def submit(self) -> None:
        """Do what Enter does in the browser."""
        self._submit_handlers(self)

    def _handle_message(self, _widget, content, _buffers) -> None:
        if content.get("event") == "submit":
            self.submit()
