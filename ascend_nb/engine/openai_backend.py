"""``backend="openai"``: an engine that talks to an OpenAI-compatible server over HTTP, streaming, and its transport.

vLLM / vllm-ascend, MindIE, ``transformers serve`` and llama.cpp's server all speak this API, so the
chat widget, the benchmark and the generate-protocol precision tools work against a served model.
TTFT / ITL / TPOT are measured client-side from the stream. Requests always stream, so a
non-streaming ``generate`` is timed the same way.

What is sent and how the reply is read lives in :mod:`ascend_nb.engine.openai_protocol`; here the
body is read on a worker thread (:func:`_response_lines`) and the engine turns every fault the
reader names (:class:`StreamBroken`), a connection cut mid-stream and a passed deadline into
:class:`GenerationError` (the partial reply, ``finish_reason "error"``). ``timeout`` bounds the
whole request, keep-alive lines included.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence

import httpx
import torch

from ascend_nb.engine.base import EngineCommon, TextStream
from ascend_nb.engine.openai_protocol import ReplyReader, Server, StreamBroken, auth_headers, request_payload
from ascend_nb.errors import AscendNbError
from ascend_nb.models.params import GenerationError, GenerationParams, GenerationResult
from ascend_nb.models.registry import GENERIC_LLAMA, MODELS, ModelSpec
from ascend_nb.models.templates import Message


class OpenAIEngine(EngineCommon):
    """Same interface as the local engines (generate / stream / chat / params), served remotely."""

    backend = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, spec: ModelSpec | None = None, max_seq_len: int | None = None):
        self.model = model
        server = Server.resolve(base_url, api_key, timeout)
        self.base_url, self.api_key, self.timeout = server.base_url, server.api_key, server.timeout
        self.spec = spec or MODELS.get(model, GENERIC_LLAMA)
        self.device = torch.device("cpu")  # the client side; the model runs wherever the server runs
        self.dtype = None
        self.max_seq_len = max_seq_len or 4096  # sizes UI budgets only; the server enforces its own limit
        self.tokenizer = None

    def __repr__(self) -> str:
        return f"OpenAIEngine(model={self.model!r}, base_url={self.base_url!r})"

    def generate(self, prompt: str | Sequence, params: GenerationParams | None = None,
                 stop_event: threading.Event | None = None, **overrides) -> GenerationResult | list[GenerationResult]:
        """Complete a raw prompt (text, or token ids where the server accepts them); a list runs one by one."""
        params = self.params(params, **overrides)
        if self._is_batch(prompt):
            return [self.generate(p, params, stop_event) for p in prompt]
        return self.stream(prompt, params, stop_event).finish()

    def stream(self, prompt: str | Sequence[int], params: GenerationParams | None = None,
               stop_event: threading.Event | None = None, **overrides) -> TextStream:
        """Stream a raw completion (``/completions``)."""
        body = {"prompt": prompt if isinstance(prompt, str) else [int(t) for t in prompt]}
        return TextStream(self, ("completions", body), self.params(params, **overrides), stop_event)

    def chat(self, messages: Sequence[Message], params: GenerationParams | None = None, stream: bool = False,
             stop_event: threading.Event | None = None, **overrides) -> GenerationResult | TextStream:
        """Answer a conversation (``/chat/completions``; the server applies the chat template)."""
        reply = TextStream(self, ("chat/completions", {"messages": list(messages)}),
                           self.params(params, **overrides), stop_event)
        return reply if stream else reply.finish()

    def forward(self, input_ids, output_hidden_states: bool = False):
        raise AscendNbError("the openai backend exposes no logits or hidden states: use the generate protocol "
                            "(--protocol generate) or a local backend")

    # -- HTTP --------------------------------------------------------------------------------------
    def _stream_pieces(self, request: tuple[str, dict], params: GenerationParams,
                       stop_event: threading.Event | None, stream: TextStream) -> Iterator[str]:
        endpoint, body = request
        url = f"{self.base_url}/{endpoint}"
        reply = ReplyReader(url)
        cancelled = False

        def result(finish_reason: str, error: str | None = None) -> GenerationResult:
            return GenerationResult(text=reply.text, token_ids=[], finish_reason=finish_reason,
                                    timings=reply.timings(), error=error)

        lines = _response_lines(url, request_payload(self.model, body, params), auth_headers(self.api_key),
                                self.timeout)
        try:
            for line in lines:
                piece = reply.feed(line)
                if piece:
                    yield piece
                if stop_event is not None and stop_event.is_set():
                    cancelled = True
                    break
            else:
                reply.finish()
        except StreamBroken as exc:
            stream.result = result("error", str(exc))
            raise GenerationError(str(exc), stream.result) from exc
        finally:
            lines.close()
        stream.result = result("cancelled" if cancelled else reply.finish_reason or "length")


# -- transport ---------------------------------------------------------------------------------------
def _response_lines(url: str, payload: dict, headers: dict, timeout: float) -> Iterator[str]:
    """The lines of a streamed POST, read on a worker thread so that ``timeout`` is a deadline for the
    whole response, however the server trickles (keep-alive lines do not extend it).

    Failing to connect, an HTTP error status or no answer in time is an :class:`AscendNbError`; a
    reply that is not an event stream, a connection broken mid-body or the deadline passing
    mid-stream is :class:`StreamBroken`. Closing the generator lets the worker drop the connection.
    """
    deadline = time.monotonic() + timeout
    items: queue.Queue = queue.Queue()
    abandoned = threading.Event()

    def read() -> None:
        try:
            with httpx.stream("POST", url, json=payload, headers=headers, timeout=timeout) as response:
                if response.status_code != 200:
                    detail = " ".join(response.read().decode(errors="replace").split())[:300]
                    raise AscendNbError(f"server at {url} answered HTTP {response.status_code}: {detail}")
                kind = response.headers.get("content-type", "")
                if kind.startswith("application/json"):
                    detail = response.read().decode(errors="replace").strip()[:80]
                    raise StreamBroken(f"the server at {url} answered the streaming request with one plain JSON "
                                       f"reply ({kind}), not server-sent events: {detail!r}")
                items.put(("started", None))
                for line in response.iter_lines():
                    if abandoned.is_set():
                        return
                    items.put(("line", line))
            items.put(("end", None))
        except Exception as exc:  # noqa: BLE001 - handed to the consuming thread, which raises it
            items.put(("error", exc))

    threading.Thread(target=read, name="ascend-nb-openai-stream", daemon=True).start()
    started = False
    try:
        while True:
            try:
                kind, value = items.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise _late(url, timeout, started) from None
            if kind == "line":
                yield value
            elif kind == "started":
                started = True
            elif kind == "end":
                return
            else:
                raise _transport_error(value, url, timeout, started)
    finally:
        abandoned.set()


def _late(url: str, timeout: float, started: bool) -> AscendNbError:
    if started:
        return StreamBroken(f"the server at {url} did not finish its reply within {timeout:g} s (the timeout bounds "
                            "the whole request): raise the timeout or check the server's load")
    return AscendNbError(f"the server at {url} did not answer within {timeout:g} s: "
                         "raise the timeout or check the server's load")


def _transport_error(exc: BaseException, url: str, timeout: float, started: bool) -> BaseException:
    """The one-line error for what went wrong on the wire."""
    if isinstance(exc, AscendNbError):
        return exc
    if isinstance(exc, httpx.ConnectError):
        return AscendNbError(f"cannot reach an OpenAI-compatible server at {url}: is it running? "
                             "(e.g. `vllm serve DIR` or `transformers serve DIR`; set --base-url or OPENAI_BASE_URL)")
    if isinstance(exc, httpx.TimeoutException):
        return _late(url, timeout, started)
    if isinstance(exc, httpx.TransportError):
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if started:
            return StreamBroken(f"the server at {url} broke the connection mid-stream ({detail})")
        return AscendNbError(f"the server at {url} broke the connection before answering ({detail})")
    if isinstance(exc, (httpx.HTTPError, httpx.InvalidURL)):
        return AscendNbError(f"request to {url} failed: {type(exc).__name__}: {str(exc).strip()[:200]}")
    return exc
