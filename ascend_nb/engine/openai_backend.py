"""``backend="openai"``: an engine that talks to an OpenAI-compatible server over HTTP, streaming.

vLLM / vllm-ascend, MindIE, ``transformers serve`` and llama.cpp's server all speak this API, so the
chat widget, the benchmark and the generate-protocol precision tools work against a served model.
TTFT / ITL / TPOT are measured client-side from the stream. Requests always stream, so a
non-streaming ``generate`` is timed the same way.

Nothing a server does wrong passes as an answer: :class:`SSEDecoder` (the parser, usable on its
own, e.g. by a load generator) refuses a chunk that is not a JSON object, a body that is not
server-sent events and a stream that ends before a ``finish_reason`` or ``data: [DONE]``; the
engine turns those, a connection cut mid-stream and a passed deadline into
:class:`GenerationError` (the partial reply, ``finish_reason "error"``). ``timeout`` bounds the
whole request, keep-alive lines included.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import httpx
import torch

from ascend_nb.engine.base import TextStream
from ascend_nb.models.params import GenerationError, GenerationParams, GenerationResult, Timings
from ascend_nb.errors import AscendNbError
from ascend_nb.models.registry import GENERIC_LLAMA, MODELS, ModelSpec
from ascend_nb.models.templates import Message

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


class OpenAIEngine:
    """Same interface as the local engines (generate / stream / chat / params), served remotely."""

    backend = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, spec: ModelSpec | None = None, max_seq_len: int | None = None):
        self.model = model
        self.base_url = check_base_url(base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise AscendNbError(f"timeout must be a positive number of seconds (the deadline of a whole request), got {timeout}")
        self.timeout = float(timeout)
        self.spec = spec or MODELS.get(model, GENERIC_LLAMA)
        self.device = torch.device("cpu")  # the client side; the model runs wherever the server runs
        self.dtype = None
        self.max_seq_len = max_seq_len or 4096  # sizes UI budgets only; the server enforces its own limit
        self.tokenizer = None

    def __repr__(self) -> str:
        return f"OpenAIEngine(model={self.model!r}, base_url={self.base_url!r})"

    def params(self, params: GenerationParams | None = None, **overrides) -> GenerationParams:
        """The model's default parameters (or ``params``) with ``overrides`` applied."""
        return (params or self.spec.defaults).replace(**overrides)

    def generate(self, prompt: str | Sequence, params: GenerationParams | None = None,
                 stop_event: threading.Event | None = None, **overrides) -> GenerationResult | list[GenerationResult]:
        """Complete a raw prompt (text, or token ids where the server accepts them); a list runs one by one."""
        params = self.params(params, **overrides)
        if not isinstance(prompt, str) and prompt and not isinstance(prompt[0], int):
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
    def _payload(self, body: dict, params: GenerationParams) -> dict:
        payload = {"model": self.model, "stream": True, "stream_options": {"include_usage": True},
                   "max_tokens": params.max_new_tokens,
                   "temperature": params.temperature if params.do_sample else 0.0, **body}
        if params.do_sample and params.top_p < 1.0:
            payload["top_p"] = params.top_p
        if params.do_sample and params.top_k > 0:
            payload["top_k"] = params.top_k  # vLLM / llama.cpp extension
        if params.repetition_penalty != 1.0:
            payload["repetition_penalty"] = params.repetition_penalty  # vLLM / llama.cpp extension
        if params.ignore_eos:
            payload["ignore_eos"] = True  # vLLM extension: exact output length for benchmarks
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.seed is not None:
            payload["seed"] = params.seed
        return payload

    def _stream_pieces(self, request: tuple[str, dict], params: GenerationParams,
                       stop_event: threading.Event | None, stream: TextStream) -> Iterator[str]:
        endpoint, body = request
        url = f"{self.base_url}/{endpoint}"
        start = time.perf_counter()
        times: list[float] = []
        text, finish, usage = "", None, {}

        def result(finish_reason: str, error: str | None = None) -> GenerationResult:
            tokens = usage.get("completion_tokens") or len(times)
            timings = Timings(ttft_ms=(times[0] - start) * 1000 if times else 0.0,
                              itl_ms=[(b - a) * 1000 for a, b in zip(times, times[1:])],
                              e2e_ms=(times[-1] - start) * 1000 if times else 0.0,
                              tokens=tokens, prompt_tokens=usage.get("prompt_tokens", 0))
            return GenerationResult(text=text, token_ids=[], finish_reason=finish_reason, timings=timings, error=error)

        decoder = SSEDecoder(url)
        lines = _response_lines(url, self._payload(body, params), self._headers(), self.timeout)
        try:
            for line in lines:
                chunk = decoder.feed(line)
                if chunk is None:
                    continue
                delta = read_chunk(chunk, url)
                usage = delta.usage or usage
                finish = delta.finish_reason or finish
                if delta.text:
                    times.append(time.perf_counter())
                    text += delta.text
                    yield delta.text
                if stop_event is not None and stop_event.is_set():
                    finish = "cancelled"
                    break
            else:
                decoder.finish()
        except StreamBroken as exc:
            stream.result = result("error", str(exc))
            raise GenerationError(str(exc), stream.result) from exc
        finally:
            lines.close()
        stream.result = result(finish or "length")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def check_base_url(url: str) -> str:
    """``url`` without its trailing slash, or a one-line error when it is not an http(s) URL with a host."""
    url = url.strip()
    try:
        parsed = httpx.URL(url)
        valid = (parsed.scheme in ("http", "https") and bool(parsed.host) and (parsed.port or 0) < 65536
                 and not any(c.isspace() for c in url))
    except httpx.InvalidURL:
        valid = False
    if not valid:
        raise AscendNbError(f"base URL {url!r} is not an http:// or https:// URL with a host: "
                            f"give e.g. --base-url {DEFAULT_BASE_URL} (or set OPENAI_BASE_URL)")
    return url.rstrip("/")


# -- the stream format -----------------------------------------------------------------------------
class StreamBroken(AscendNbError):
    """A streamed response that broke off or breaks the OpenAI streaming format (one line naming what the server did)."""


SSE_FIELDS = ("data", "event", "id", "retry")


class SSEDecoder:
    """Parse an OpenAI-style server-sent-event stream line by line (sync or async callers alike).

    ``feed(line)`` takes one line of the body (without its newline) and returns the JSON object of
    the event it completes, or None (a blank line of an event that was not data, a comment such as a
    keep-alive ``: ping``, an ``id:`` / ``retry:`` field, the ``data: [DONE]`` sentinel). Once the
    body has ended, ``finish()`` checks that the reply was complete: ``[DONE]`` arrived, or at least
    a chunk with a ``finish_reason`` (``transformers serve`` sends no ``[DONE]``). Each deviation
    raises :class:`StreamBroken` naming it: a line that is not server-sent events (e.g. a plain JSON
    reply), data that is not JSON or not a JSON object, an ``error`` event or object, a chunk after
    ``[DONE]``, a body that ends mid-event or before the reply finished.
    """

    def __init__(self, source: str):
        self.source = source
        self.done = False  # data: [DONE] arrived
        self.finished = False  # a choice's finish_reason arrived
        self.chunks = 0
        self._data: list[str] = []
        self._event = ""

    def feed(self, line: str) -> dict | None:
        if line.startswith(":"):
            return None  # a comment: keep-alive
        if not line:
            return self._dispatch()
        name, _, value = line.partition(":")
        if name not in SSE_FIELDS:
            raise StreamBroken(f"the server at {self.source} sent {line[:80]!r}, which is not a server-sent event line "
                               "(an OpenAI-compatible stream has `data: {...}` lines)")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def finish(self) -> None:
        """The body has ended: raise if it ended mid-event or before the reply finished."""
        if self._data == ["[DONE]"]:  # the sentinel without its blank line
            self._dispatch()
        if self._data:
            raise StreamBroken(f"the server at {self.source} closed the stream in the middle of a chunk "
                               f"({chr(10).join(self._data)[:80]!r} is cut off)")
        if not (self.done or self.finished):
            raise StreamBroken(f"the server at {self.source} closed the stream after {self.chunks} chunk(s), "
                               "before a finish_reason or `data: [DONE]`")

    def _dispatch(self) -> dict | None:
        data, event = "\n".join(self._data), self._event
        self._data, self._event = [], ""
        if not data:
            return None
        if self.done:
            raise StreamBroken(f"the server at {self.source} sent data after `data: [DONE]`: {data[:80]!r}")
        if data == "[DONE]":
            self.done = True
            return None
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError as exc:
            raise StreamBroken(f"the server at {self.source} sent a chunk that is not JSON ({exc.msg} at character "
                               f"{exc.pos}): {data[:80]!r}") from exc
        if not isinstance(chunk, dict):
            raise StreamBroken(f"the server at {self.source} sent a chunk that is not a JSON object: {data[:80]!r}")
        if event == "error" or chunk.get("error") or chunk.get("object") == "error":
            detail = chunk.get("error") or chunk
            message = detail.get("message", detail) if isinstance(detail, dict) else detail
            raise StreamBroken(f"the server at {self.source} reported an error mid-stream: "
                               f"{' '.join(str(message).split())[:200]}")
        self.chunks += 1
        choices = chunk.get("choices")
        self.finished = self.finished or (isinstance(choices, list) and any(
            isinstance(choice, dict) and choice.get("finish_reason") for choice in choices))
        return chunk


def sse_chunks(lines: Iterable[str], source: str) -> Iterator[dict]:
    """The JSON chunks of a complete streamed body (its lines), checked by :class:`SSEDecoder`."""
    decoder = SSEDecoder(source)
    for line in lines:
        chunk = decoder.feed(line)
        if chunk is not None:
            yield chunk
    decoder.finish()


@dataclass
class ChunkDelta:
    """What one chunk adds: generated text, a finish reason, token usage (all possibly empty)."""

    text: str = ""
    finish_reason: str | None = None
    usage: dict = field(default_factory=dict)


def read_chunk(chunk: dict, source: str) -> ChunkDelta:
    """The text (``choices[].delta.content`` for chat, ``choices[].text`` for completions), finish reason
    and usage of one chunk; a chunk whose fields have the wrong types raises :class:`StreamBroken`."""
    choices, usage = chunk.get("choices") or [], chunk.get("usage") or {}
    if not isinstance(choices, list) or not isinstance(usage, dict):
        raise StreamBroken(f"the server at {source} sent a chunk whose choices or usage are malformed: "
                           f"{json.dumps(chunk)[:80]}")
    delta = ChunkDelta(usage=usage)
    for choice in choices:
        message = (choice.get("delta") or {}) if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise StreamBroken(f"the server at {source} sent a chunk whose choice is malformed: {json.dumps(chunk)[:80]}")
        piece = message.get("content") if message.get("content") is not None else choice.get("text")
        reason = choice.get("finish_reason")
        if not isinstance(piece, (str, type(None))) or not isinstance(reason, (str, type(None))):
            raise StreamBroken(f"the server at {source} sent a chunk whose choice is malformed: {json.dumps(chunk)[:80]}")
        delta.text += piece or ""
        delta.finish_reason = reason or delta.finish_reason
    return delta


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
