"""Chat with a loaded engine in JupyterLab: :class:`ChatWidget` (two side by side: ``side_by_side``; a picker: ``chat_app``).

Replies are generated in a worker thread so the kernel stays responsive. ipykernel >= 7.1 may run
widget callbacks on a subshell thread while a cell runs, so the conversation is guarded by one lock,
a reply is stopped through a ``threading.Event`` (the engine checks it after every token), and the
worker adopts the parent message of the cell that created the widget, so whatever it prints lands
in that cell. An engine serves one request at a time: while another caller (a second widget, a
cell) holds it, the reply shows that it is waiting for the engine. Everything the buttons do is
also a method (``ask``, ``stop``, ``regenerate``, ``clear``, ``wait``), for demos and tests.
"""

from __future__ import annotations

import html
import json
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import ipywidgets as widgets
from markdown_it import MarkdownIt

from ascend_nb.device import set_thread_device
from ascend_nb.dtypes import dtype_name
from ascend_nb.models.params import GenerationError, GenerationParams
from ascend_nb.models.registry import chat_defaults
from ascend_nb.engine.repetition import repeated_unit
from ascend_nb.engine.request_queue import on_wait
from ascend_nb.errors import AscendNbError
from ascend_nb.ui.controls import button, current_parent, enable, html_line, join_worker, output_parent
from ascend_nb.ui.prompt_box import PromptBox

REFRESH_S = 0.05  # at most 20 redraws a second while streaming
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(["table", "strikethrough"])
GREEDY_NOTE = ("Greedy decoding (Sample off) gives the same answer again: tick Sample in the settings "
               "(opened below) for a different one.")
_STOP_NOTES = {"cancelled": "stopped", "length": "max_new_tokens reached"}
WAITING = "waiting for the engine: another request is using it…"

CSS = (Path(__file__).with_name("assets") / "chat.css").read_text(encoding="utf-8")


def render_markdown(text: str) -> str:
    """HTML for a message: CommonMark with tables, single newlines kept, raw HTML escaped."""
    return _MARKDOWN.render(text) if text.strip() else "<p></p>"


def format_stats(stats: dict) -> str:
    """One reply's numbers in the guides' vocabulary:
    ``TTFT 85.2 ms · TPOT 31.0 ms · 32.3 tokens/s · 24 tokens`` (plus why it ended early, if it did)."""
    line = (f"TTFT {stats['ttft_ms']:.1f} ms · TPOT {stats['tpot_ms']:.1f} ms · "
            f"{stats['tokens_per_s']:.1f} tokens/s · {stats['tokens']} tokens")
    if stats.get("tokens_per_step"):  # generated with speculative decoding
        line += (f" · {stats['tokens_per_step']:.2f} tokens per step, "
                 f"{stats['acceptance_rate']:.0%} of drafts accepted")
    note = _STOP_NOTES.get(stats.get("finish_reason"))
    return f"{line} · {note}" if note else line


def _bubble(role: str, title: str, body_html: str, footer: str = "", typing: bool = False) -> str:
    classes = f"anb-chat-row {role}" + (" anb-chat-typing" if typing else "")
    stats = f'<div class="anb-chat-stats">{html.escape(footer)}</div>' if footer else ""
    return (f'<div class="{classes}"><div class="anb-chat-bubble"><div class="anb-chat-role">{html.escape(title)}</div>'
            f'<div class="anb-chat-md">{body_html}</div>{stats}</div></div>')


class Transcript(NamedTuple):
    """A conversation exported as Markdown (to read) and JSON (to reload or diff)."""

    markdown: str
    json: str


@dataclass
class _Turn:
    role: str  # "user", "assistant" or "error" (errors are shown, never sent to the model)
    content: str
    view: widgets.HTML
    stats: dict | None = None
    started: float = 0.0  # when generation started (after any wait for the engine)
    repeats: str | None = None  # a greedy regeneration: the answer it replaces (the same one comes back)
    loop: str | None = None  # the phrase the reply keeps repeating, when it fell into a loop


def _slider(kind, description: str, value, low, high, step, fmt: str | None = None):
    extra = {"readout_format": fmt} if fmt else {}
    return kind(value=value, min=low, max=high, step=step, description=description, continuous_update=False,
                style={"description_width": "140px"}, layout=widgets.Layout(width="440px"), **extra)


def _speculative_dropdown(engine, params: GenerationParams) -> widgets.Dropdown | None:
    """The speculative-decoding setting (none / prompt-lookup, and a ``draft:`` method the params already name),
    only for an engine that can speculate (the accelerated backend)."""
    if not getattr(engine, "supports_speculative", False):
        return None
    options = [("none", "off"), ("prompt-lookup", "prompt-lookup")]
    if params.speculative and params.speculative != "prompt-lookup":
        options.append((params.speculative, params.speculative))
    return widgets.Dropdown(options=options, value=params.speculative or "off", description="speculative decoding",
                            style={"description_width": "140px"}, layout=widgets.Layout(width="440px"))


class ChatWidget(widgets.VBox):
    """Chat with one engine: Markdown history, streaming, Stop, Regenerate, Clear, sampling sliders and
    per-reply TTFT/TPOT.

    ``system_prompt`` pre-fills the system box; ``params`` (default: the model's chat settings,
    :func:`~ascend_nb.models.registry.chat_defaults`: its own ``generation_config.json``, else sampling
    with a mild repetition penalty) seeds the sliders, and its other fields (stop strings, seed) are
    kept. A reply that falls into a loop is flagged while it streams, with a button that stops it, and
    once finished can be dropped from the history (:meth:`drop_looped_reply`). The history follows the model's
    chat template and truncation rules (``engine.encode_chat``). ``show_input=False`` hides the prompt
    and buttons (used by :func:`compare_chat`, which drives two chats from one box).
    """

    def __init__(self, engine, system_prompt: str | None = None, params: GenerationParams | None = None, *,
                 show_input: bool = True):
        self.engine = engine
        self._base_params = engine.params(params or chat_defaults(engine.spec, getattr(engine, "model_dir", None)))
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._pending: _Turn | None = None
        self._turns: list[_Turn] = []
        self._replies: list[dict] = []
        self._parent = current_parent()

        self.header = widgets.HTML(self._header_html())
        self.history = widgets.VBox(layout=widgets.Layout(width="100%", flex="0 0 auto", overflow="visible"))
        scroller = widgets.Box([self.history], layout=widgets.Layout(
            flex_flow="column-reverse", overflow="auto", height="auto", min_height="90px", max_height="460px"))
        scroller.add_class("anb-chat-history")  # column-reverse keeps the newest message in view
        self.totals = widgets.HTML()
        self.notice = widgets.HTML()
        self.loop_notice = widgets.HTML()
        self.loop_stop_button = button("Stop the loop", "stop", "danger", "Stop this reply now")
        self.drop_button = button("Drop this reply", "eraser", "warning",
                                  "Take the looping reply out of the history, so it does not steer the next answer")
        self.loop_bar = widgets.HBox([self.loop_notice, self.loop_stop_button, self.drop_button],
                                     layout=widgets.Layout(align_items="center", display="none"))
        self.prompt = PromptBox(placeholder="Ask something. Enter sends, Shift+Enter adds a line.",
                                layout=widgets.Layout(width="100%"))
        self.send_button = button("Send", "paper-plane", "primary", "Send the message (Enter)")
        self.stop_button = button("Stop", "stop", "", "Stop the reply within one token", disabled=True)
        self.regenerate_button = button("Regenerate", "refresh", tooltip="Answer the last message again")
        self.clear_button = button("Clear", "trash", tooltip="Forget the conversation")
        self.stream_toggle = widgets.Checkbox(value=True, description="Stream", indent=False,
                                              layout=widgets.Layout(width="auto", margin="0 0 0 12px"))
        self.system_prompt = widgets.Textarea(value=system_prompt or "", description="System prompt",
                                              placeholder="optional instructions sent before the conversation",
                                              style={"description_width": "140px"},
                                              layout=widgets.Layout(width="100%", height="64px"))
        p = self._base_params
        longest = min(4096, engine.max_seq_len - 1)  # the prompt needs at least one token
        self.do_sample = widgets.Checkbox(value=p.do_sample, description="Sample (off: greedy)", indent=False)
        self.max_new_tokens = _slider(widgets.IntSlider, "max_new_tokens", min(p.max_new_tokens, longest),
                                      1, longest, 1)
        self.temperature = _slider(widgets.FloatSlider, "temperature", p.temperature, 0.05, 2.0, 0.05)
        self.top_p = _slider(widgets.FloatSlider, "top_p", p.top_p, 0.05, 1.0, 0.01)
        self.top_k = _slider(widgets.IntSlider, "top_k (0: off)", p.top_k, 0, 200, 1)
        self.repetition_penalty = _slider(widgets.FloatSlider, "repetition_penalty", p.repetition_penalty,
                                          0.8, 2.0, 0.01, ".2f")
        self.do_sample.observe(lambda _: self._show_sampling(), "value")
        self._show_sampling()
        self.speculative = _speculative_dropdown(engine, p)  # None: this backend cannot speculate
        self.settings = settings = widgets.Accordion([widgets.VBox([
            self.system_prompt, self.do_sample, self.max_new_tokens, self.temperature, self.top_p, self.top_k,
            self.repetition_penalty, *([self.speculative] if self.speculative is not None else [])])],
            titles=("Settings: system prompt, sampling" + (", speculative" if self.speculative is not None else ""),))

        self.send_button.on_click(lambda _: self._send_prompt())
        self.prompt.on_submit(lambda _: self._send_prompt())
        self.stop_button.on_click(lambda _: self.stop())
        self.regenerate_button.on_click(lambda _: self.regenerate())
        self.clear_button.on_click(lambda _: self.clear())
        self.loop_stop_button.on_click(lambda _: self.stop())
        self.drop_button.on_click(lambda _: self.drop_looped_reply())
        buttons = widgets.HBox([self.send_button, self.stop_button, self.regenerate_button, self.clear_button,
                                self.stream_toggle], layout=widgets.Layout(align_items="center"))
        inputs = [self.prompt, buttons] if show_input else []
        super().__init__([widgets.HTML(f"<style>{CSS}</style>", layout=widgets.Layout(display="none")),
                          self.header, scroller, self.totals, self.notice, self.loop_bar, *inputs, settings],
                         layout=widgets.Layout(width="100%", max_width="980px"))
        self.add_class("anb-chat")
        self._render()

    # -- scripting API -------------------------------------------------------------------------
    @property
    def messages(self) -> list[dict[str, str]]:
        """The conversation so far (user and assistant turns, without the system prompt or a reply in progress)."""
        with self._lock:
            return [{"role": t.role, "content": t.content} for t in self._turns
                    if t.role != "error" and t is not self._pending]

    @property
    def last_stats(self) -> dict | None:
        """Numbers of the latest finished reply: ttft_ms, tpot_ms, tokens, tokens_per_s, e2e_ms, finish_reason, ..."""
        with self._lock:
            return dict(self._replies[-1]) if self._replies else None

    @property
    def busy(self) -> bool:
        """True while a reply is being generated."""
        with self._lock:
            return self._pending is not None

    def generation_params(self) -> GenerationParams:
        """The parameters the next reply uses: ``params`` with the sliders applied."""
        return self._base_params.replace(
            max_new_tokens=self.max_new_tokens.value, do_sample=self.do_sample.value,
            temperature=self.temperature.value, top_p=self.top_p.value, top_k=self.top_k.value,
            repetition_penalty=self.repetition_penalty.value,
            speculative=self.speculative.value if self.speculative is not None else None)

    def ask(self, text: str) -> bool:
        """Send ``text`` as the next user turn and start the reply in a worker thread.

        Returns False, with a visible notice, when the text is empty or a reply is still running
        (a second message is refused, never queued)."""
        with self._lock:
            if self._refuse_if_busy():
                return False
            if not text.strip():
                self._notify("Type a message first.")
                return False
            self._turns.append(self._new_turn("user", text.strip()))
            self._start_reply()
            return True

    def stop(self) -> None:
        """Stop the running reply; the engine checks after every token, and the partial answer is kept."""
        self._stop.set()

    def regenerate(self) -> bool:
        """Drop the last answer and answer the last user turn again. When greedy decoding gives the
        same answer again, a notice says so and the settings open on the Sample box."""
        with self._lock:
            if self._refuse_if_busy():
                return False
            last_user = max((i for i, t in enumerate(self._turns) if t.role == "user"), default=None)
            if last_user is None:
                self._notify("Nothing to regenerate yet: send a message first.")
                return False
            previous = [t.content for t in self._turns[last_user + 1:] if t.role == "assistant"]
            del self._turns[last_user + 1:]
            self._start_reply()
            self._pending.repeats = previous[-1] if previous and not self.do_sample.value else None
            return True

    def drop_looped_reply(self) -> bool:
        """Take the last reply out of the history when it looped (its user turn stays, to ask again)."""
        with self._lock:
            if self._refuse_if_busy():
                return False
            last = self._turns[-1] if self._turns else None
            if last is None or last.role != "assistant" or last.loop is None:
                return False
            self._turns.pop()
            self._show_loop(None)
            self._render()
            return True

    def clear(self) -> bool:
        """Forget the conversation and the running totals."""
        with self._lock:
            if self._refuse_if_busy():
                return False
            self._turns.clear()
            self._replies.clear()
            self._notify("")
            self._render()
            return True

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running reply is finished; TimeoutError after ``timeout`` seconds."""
        join_worker(self._worker, timeout, "the reply is still running", ": call stop() or wait longer")

    def export(self) -> Transcript:
        """The conversation as Markdown and as JSON (model, device, system prompt, messages with their stats)."""
        with self._lock:
            turns = [t for t in self._turns if t.role != "error" and t is not self._pending]
            system = self.system_prompt.value.strip()
        engine = self.engine
        dtype = dtype_name(engine.dtype)
        record = {"model": engine.spec.name, "backend": engine.backend, "device": str(engine.device), "dtype": dtype,
                  "system": system or None,
                  "messages": [{"role": t.role, "content": t.content, **({"stats": t.stats} if t.stats else {})}
                               for t in turns]}
        lines = [f"# Chat with {engine.spec.name}", "", f"_{engine.backend} · {engine.device} · {dtype}_", ""]
        if system:
            lines += [f"**System:** {system}", ""]
        for turn in turns:
            lines += [f"**{self._title(turn.role)}:**", "", turn.content, ""]
            if turn.stats:
                lines += [f"_{format_stats(turn.stats)}_", ""]
        return Transcript("\n".join(lines), json.dumps(record, ensure_ascii=False, indent=2))

    def close(self) -> None:
        """Stop any reply and close every part of the widget, so that its engine can be freed."""
        self.stop()
        parts = list(self.children)
        while parts:
            part = parts.pop()
            parts.extend(getattr(part, "children", ()))
            part.close()
        super().close()

    # -- worker --------------------------------------------------------------------------------
    def _send_prompt(self) -> None:
        with self._lock:  # the worker may put a failed message back into the box: clear it first
            if self.ask(self.prompt.value):
                self.prompt.value = ""

    def _start_reply(self) -> None:
        """Start answering the current conversation (lock held)."""
        conversation = self._conversation()
        self._stop.clear()
        self._notify("")
        self._show_loop(None)
        self._pending = self._new_turn("assistant", "")
        self._turns.append(self._pending)
        self._render()
        self._set_running(True)
        self._worker = threading.Thread(target=self._reply, args=(self._pending, conversation,
                                                                   self.stream_toggle.value),
                                        name="ascend-nb-chat", daemon=True)
        self._worker.start()

    def _reply(self, turn: _Turn, conversation: list[dict[str, str]], stream: bool) -> None:
        turn.started = time.perf_counter()
        with output_parent(self._parent), on_wait(lambda waiting: self._show_waiting(turn, waiting)):
            try:
                set_thread_device(self.engine.device)  # torch_npu needs it in every thread
                params = self.generation_params()
                if stream:
                    result = self._stream_into(turn, conversation, params)
                else:
                    result = self.engine.chat(conversation, params, stop_event=self._stop)
            except GenerationError as exc:
                if exc.result.text:  # a reply that broke off (a cut stream): keep what came, marked partial
                    self._finish(turn, exc.result)
                    self._add_error(f"The reply above is partial: {exc}")
                else:
                    self._fail(turn, exc)
            except Exception as exc:  # noqa: BLE001 - every failure is shown in the chat, which keeps working
                if not isinstance(exc, AscendNbError):
                    traceback.print_exc()
                self._fail(turn, exc)
            else:
                self._finish(turn, result)

    def _stream_into(self, turn: _Turn, conversation: list[dict[str, str]], params: GenerationParams):
        stream = self.engine.chat(conversation, params, stream=True, stop_event=self._stop)
        text, first, drawn = "", None, 0.0
        for piece in stream:
            text += piece
            now = time.perf_counter()
            first = first or now
            if now - drawn >= REFRESH_S:
                live = f"TTFT ≈ {(first - turn.started) * 1000:.0f} ms · generating… {now - turn.started:.1f} s"
                turn.view.value = _bubble("assistant", self._title("assistant"), render_markdown(text), live, True)
                drawn = now
                if turn.loop is None and (unit := repeated_unit(text)) is not None:
                    turn.loop = unit
                    self._show_loop(turn, running=True)
        return stream.result

    def _show_waiting(self, turn: _Turn, waiting: bool) -> None:
        """Show that the reply is queued behind another caller of the engine, or that it has started."""
        turn.started = time.perf_counter()
        footer = WAITING if waiting else "generating…"
        turn.view.value = _bubble("assistant", self._title("assistant"), render_markdown(""), footer,
                                  typing=not waiting)
        self._notify(f"The reply is {WAITING}" if waiting else "")

    def _finish(self, turn: _Turn, result) -> None:
        stats = {**result.timings.as_dict(), "finish_reason": result.finish_reason}
        if getattr(result, "speculative", None) is not None:
            stats.update(tokens_per_step=result.speculative.tokens_per_step,
                         acceptance_rate=result.speculative.acceptance_rate)
        with self._lock:
            turn.content, turn.stats = result.text, stats
            turn.view.value = self._turn_html(turn)
            self._replies.append(stats)
            self._pending = None
            same_again = turn.repeats is not None and turn.repeats == result.text
            self._notify(GREEDY_NOTE if same_again else "")
            turn.loop = repeated_unit(result.text) if result.finish_reason in ("length", "cancelled") or turn.loop else None
            self._show_loop(turn if turn.loop is not None else None)
            if same_again:
                self.settings.selected_index = 0
            self._set_running(False)
            self._show_totals()

    def _fail(self, turn: _Turn, exc: Exception) -> None:
        """Show the error, take the unanswered user turn out of the history and put it back in the box."""
        message = str(exc) if isinstance(exc, AscendNbError) else f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._turns.remove(turn)
            if self._turns and self._turns[-1].role == "user":
                asked = self._turns.pop()
                draft = self.prompt.value.strip()
                if draft and draft != asked.content:  # typed while the reply was running: keep it below
                    self.prompt.value = f"{asked.content}\n\n{draft}"
                    message += " (your message is back in the input box, above the draft you were typing)"
                else:
                    self.prompt.value = asked.content
                    message += " (your message is back in the input box)"
            self._pending = None
            self._set_running(False)
        self._add_error(message)

    def _add_error(self, message: str) -> None:
        """An error line at the end of the conversation (not part of what the model is sent)."""
        with self._lock:
            self._turns.append(self._new_turn("error", message))
            self._render()

    # -- view ----------------------------------------------------------------------------------
    def _conversation(self) -> list[dict[str, str]]:
        system = self.system_prompt.value.strip()
        return ([{"role": "system", "content": system}] if system else []) + self.messages

    def _title(self, role: str) -> str:
        return {"user": "You", "assistant": self.engine.spec.name, "error": "Error"}[role]

    def _turn_html(self, turn: _Turn) -> str:
        if turn.role == "error":
            return _bubble("error", self._title("error"), f"<p>{html.escape(turn.content)}</p>")
        if turn.role == "assistant" and turn.stats is None:
            return _bubble("assistant", self._title("assistant"), render_markdown(""), "generating…",
                           typing=True)
        return _bubble(turn.role, self._title(turn.role), render_markdown(turn.content),
                       format_stats(turn.stats) if turn.stats else "")

    def _new_turn(self, role: str, content: str) -> _Turn:
        turn = _Turn(role, content, widgets.HTML(layout=widgets.Layout(width="100%")))
        turn.view.value = self._turn_html(turn)
        return turn

    def _render(self) -> None:
        views = [t.view for t in self._turns]
        if not views:
            views = [widgets.HTML('<div class="anb-chat-empty">No messages yet. Ask something below.</div>',
                                  layout=widgets.Layout(width="100%"))]
        for gone in set(self.history.children) - set(views):
            gone.close()
        self.history.children = views
        self._show_totals()

    def _show_totals(self) -> None:
        n = len(self._replies)
        if not n:
            self.totals.value = ""
            return
        decoded = [s["tpot_ms"] for s in self._replies if s["tokens"] > 1]
        tpot = f" · mean TPOT {sum(decoded) / len(decoded):.1f} ms" if decoded else ""
        text = (f"Session: {n} repl{'y' if n == 1 else 'ies'} · {sum(s['tokens'] for s in self._replies)} tokens · "
                f"{sum(s['e2e_ms'] for s in self._replies) / 1000:.1f} s · "
                f"mean TTFT {sum(s['ttft_ms'] for s in self._replies) / n:.1f} ms{tpot}")
        self.totals.value = html_line("anb-chat-totals", text)

    def _header_html(self) -> str:
        e = self.engine
        quantized = f" · {html.escape(e.quantize)}" if getattr(e, "quantize", None) else ""
        return (f'<div class="anb-chat-header"><b>{html.escape(e.spec.name)}</b> · {html.escape(e.backend)} · '
                f'{e.device} · {dtype_name(e.dtype)}{quantized} · max_seq_len {e.max_seq_len}</div>')

    def _show_loop(self, turn: _Turn | None, running: bool = False) -> None:
        """The loop bar: hidden (no loop), with Stop while the looping reply runs, with Drop once it ended."""
        if turn is None:
            self.loop_bar.layout.display = "none"
            return
        phrase = turn.loop if len(turn.loop) <= 60 else turn.loop[:57] + "…"
        what = "is repeating itself" if running else "repeated itself"
        advice = "" if running else ": drop it so it does not steer the next answer, and raise repetition_penalty or tick Sample"
        self.loop_notice.value = html_line("anb-chat-notice", f"The reply {what} (“{phrase}” again and again){advice}")
        self.loop_stop_button.layout.display = None if running else "none"
        self.drop_button.layout.display = "none" if running else None
        self.loop_bar.layout.display = None

    def _notify(self, text: str) -> None:
        self.notice.value = html_line("anb-chat-notice", text)

    def _refuse_if_busy(self) -> bool:
        if self._pending is None:
            return False
        self._notify("Still answering the last message: wait for it or press Stop, then send again.")
        return True

    def _set_running(self, running: bool) -> None:
        enable(self.stop_button, running, "warning")
        self.send_button.disabled = self.regenerate_button.disabled = self.clear_button.disabled = running

    def _show_sampling(self) -> None:
        for slider in (self.temperature, self.top_p, self.top_k):
            slider.disabled = not self.do_sample.value
