"""Two engines side by side behind one prompt box: :class:`CompareChat` and :func:`compare_chat`."""

from __future__ import annotations

import threading

import ipywidgets as widgets

from ascend_nb.models.params import GenerationParams
from ascend_nb.ui.chat import ChatWidget
from ascend_nb.ui.controls import button, current_parent, enable, html_line, join_worker, output_parent
from ascend_nb.ui.prompt_box import PromptBox


class CompareChat(widgets.VBox):
    """One prompt box, two engines answering side by side with their stats.

    The two replies run one after the other, never at once, so neither disturbs the other's timings.
    """

    def __init__(self, engine_a, engine_b, system_prompt: str | None = None, params: GenerationParams | None = None):
        self.left = ChatWidget(engine_a, system_prompt, params, show_input=False)
        self.right = ChatWidget(engine_b, system_prompt, params, show_input=False)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._parent = current_parent()
        self.prompt = PromptBox(placeholder="Ask both models. Enter sends, Shift+Enter adds a line.",
                                layout=widgets.Layout(width="100%"))
        self.send_button = button("Send", "paper-plane", "primary", "Send to both models (Enter)")
        self.stop_button = button("Stop", "stop", "", "Stop both replies", disabled=True)
        self.clear_button = button("Clear", "trash", tooltip="Forget both conversations")
        self.stream_toggle = widgets.Checkbox(value=True, description="Stream", indent=False,
                                              layout=widgets.Layout(width="auto", margin="0 0 0 12px"))
        for chat in (self.left, self.right):
            widgets.link((self.stream_toggle, "value"), (chat.stream_toggle, "value"))
            chat.layout.width = "50%"
        self.notice = widgets.HTML()
        self.send_button.on_click(lambda _: self._send_prompt())
        self.prompt.on_submit(lambda _: self._send_prompt())
        self.stop_button.on_click(lambda _: self.stop())
        self.clear_button.on_click(lambda _: self.clear())
        super().__init__([
            widgets.HBox([self.left, self.right], layout=widgets.Layout(width="100%", grid_gap="12px")),
            self.notice, self.prompt,
            widgets.HBox([self.send_button, self.stop_button, self.clear_button, self.stream_toggle],
                         layout=widgets.Layout(align_items="center"))],
            layout=widgets.Layout(width="100%"))

    def ask(self, text: str) -> bool:
        """Ask both engines ``text``, left first; False (with a notice) while the previous pair is running."""
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                self.notice.value = html_line("anb-chat-notice", "Still answering: wait or press Stop, then send again.")
                return False
            if not text.strip():
                self.notice.value = html_line("anb-chat-notice", "Type a message first.")
                return False
            self.notice.value = ""
            self._stop.clear()
            enable(self.stop_button, True, "warning")
            self._worker = threading.Thread(target=self._ask_both, args=(text,), name="ascend-nb-compare",
                                            daemon=True)
            self._worker.start()
            return True

    def stop(self) -> None:
        """Stop the running reply and skip the other one."""
        self._stop.set()
        self.left.stop()
        self.right.stop()

    def clear(self) -> None:
        """Forget both conversations."""
        self.left.clear()
        self.right.clear()

    def wait(self, timeout: float | None = None) -> None:
        """Block until both replies are finished; TimeoutError after ``timeout`` seconds."""
        join_worker(self._worker, timeout, "the replies are still running", ": call stop() or wait longer")

    def _send_prompt(self) -> None:
        if self.ask(self.prompt.value):
            self.prompt.value = ""

    def _ask_both(self, text: str) -> None:
        with output_parent(self._parent):
            for chat in (self.left, self.right):
                if self._stop.is_set() or not chat.ask(text):
                    break
                chat.wait()
            enable(self.stop_button, False, "warning")


def compare_chat(engine_a, engine_b, system_prompt: str | None = None,
                 params: GenerationParams | None = None) -> CompareChat:
    """Two engines side by side behind one prompt box (e.g. transformers vs accelerated, fp16 vs int8)."""
    return CompareChat(engine_a, engine_b, system_prompt, params)
