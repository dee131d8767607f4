"""A model picker above a chat: :class:`ChatApp` (load, swap models, keep the system prompt)."""

from __future__ import annotations

import gc
import threading
import traceback
from pathlib import Path

import ipywidgets as widgets

from ascend_nb.device import available_device_types
from ascend_nb.engine.loading import DEFAULT_MODEL
from ascend_nb.dtypes import CHOICES as DTYPE_CHOICES
from ascend_nb.errors import AscendNbError
from ascend_nb.quant_formats import QUANT_FORMATS
from ascend_nb.ui.chat import CSS, ChatWidget
from ascend_nb.ui.controls import button, current_parent, html_line, join_worker, output_parent


class ChatApp(widgets.VBox):
    """A model picker (registry name or local directory, backend, device, dtype, quantize) above a :class:`ChatWidget`.

    The first model is loaded right away (errors raise, as in any cell); Load swaps in another
    model in a worker thread, keeping the system prompt. ``load_options`` go to :func:`ascend_nb.load`.
    """

    def __init__(self, model: str | Path = DEFAULT_MODEL, backend: str = "transformers",
                 device: str = "auto", dtype: str = "auto", system_prompt: str | None = None,
                 quantize: str | None = None, **load_options):
        from ascend_nb.engine.loading import BACKENDS
        from ascend_nb.models.registry import MODELS

        self._load_options = load_options
        self._system_prompt = system_prompt
        self._lock = threading.Lock()
        self._loading = False
        self._worker: threading.Thread | None = None
        self._parent = current_parent()
        narrow = widgets.Layout(width="220px")
        self.model = widgets.Combobox(value=str(model), options=list(MODELS), ensure_option=False, description="Model",
                                      placeholder="registry name or local directory",
                                      layout=widgets.Layout(width="420px"))
        self.backend = widgets.Dropdown(options=sorted(BACKENDS), value=backend, description="Backend", layout=narrow)
        self.device = widgets.Dropdown(options=list(dict.fromkeys(["auto", *available_device_types(), device])),
                                       value=device, description="Device", layout=narrow)
        self.dtype = widgets.Dropdown(options=list(dict.fromkeys([*DTYPE_CHOICES, dtype])),
                                      value=dtype, description="dtype", layout=narrow)
        formats = "; ".join(f"{fmt.name}: {fmt.summary}" for fmt in QUANT_FORMATS.values())
        self.quantize = widgets.Dropdown(options=[("none", None), *((name, name) for name in QUANT_FORMATS)], value=quantize,
                                         description="quantize", layout=narrow,
                                         tooltip=f"accelerated backend only. {formats}")
        self.load_button = button("Load", "download", tooltip="Load this model and start a new chat")
        self.status = widgets.HTML()
        self.load_button.on_click(lambda _: self.reload())
        self.chat: ChatWidget | None = ChatWidget(self._load(), system_prompt)
        picker = widgets.VBox([widgets.HTML(f"<style>{CSS}</style>", layout=widgets.Layout(display="none")),
                               widgets.HBox([self.model, self.load_button]),
                               widgets.HBox([self.backend, self.device, self.dtype, self.quantize]), self.status])
        super().__init__([picker, self.chat], layout=widgets.Layout(width="100%"))
        self.add_class("anb-chat")

    def reload(self) -> bool:
        """Free the current model, then load the picked one in a worker thread with a fresh chat.

        The old model goes first because two 7B models rarely fit on one device, so the choice is
        checked first (:func:`~ascend_nb.engine.loading.check_loadable`: path, config, placement):
        a bad one shows an error and keeps the current chat. False while a reply or a load is running,
        or when the check fails."""
        from ascend_nb.engine.loading import check_loadable

        with self._lock:
            if self._loading or (self.chat is not None and self.chat.busy):
                self.status.value = html_line("anb-chat-notice", "Busy: wait for the reply or the load to finish.")
                return False
            try:
                check_loadable(self.model.value.strip(), self.device.value, self.dtype.value, self.backend.value,
                               quantize=self.quantize.value)
            except AscendNbError as exc:
                kept = " (the current chat is kept)" if self.chat is not None else ""
                self.status.value = html_line("anb-chat-error", f"Could not load {self.model.value.strip()}: {exc}{kept}")
                return False
            self._loading = self.load_button.disabled = True
            self.status.value = html_line("anb-chat-header", f"Loading {self.model.value}…")
            old, self.chat = self.chat, None
            self._worker = threading.Thread(target=self._reload, args=(old,), name="ascend-nb-load", daemon=True)
            self._worker.start()
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Block until a load started by Load is finished; TimeoutError after ``timeout`` seconds."""
        join_worker(self._worker, timeout, "the model is still loading")

    def _load(self):
        from ascend_nb.engine.loading import load

        return load(self.model.value.strip(), device=self.device.value, dtype=self.dtype.value,
                    backend=self.backend.value, quantize=self.quantize.value, **self._load_options)

    def _reload(self, old: ChatWidget | None) -> None:
        with output_parent(self._parent):
            if old is not None:
                self._system_prompt = old.system_prompt.value
                self.children = self.children[:1]
                old.close()
                del old
                gc.collect()  # the old engine sits in reference cycles (widget callbacks)
            try:
                chat = ChatWidget(self._load(), self._system_prompt)
            except Exception as exc:  # noqa: BLE001 - shown under the picker; Load can be pressed again
                if not isinstance(exc, AscendNbError):
                    traceback.print_exc()
                self.status.value = html_line("anb-chat-error", f"Could not load: {exc}")
            else:
                self.chat = chat
                self.children = (self.children[0], chat)
                self.status.value = ""
            finally:
                with self._lock:
                    self._loading = self.load_button.disabled = False
