"""The OpenAI-compatible streaming API, once for every client: the sync engine and the async load benchmark.

Where a server is and how a request is bounded (:class:`Server`), what a request sends
(:func:`request_payload`, :func:`auth_headers`) and how its streamed reply is read: :class:`SSEDecoder`
parses the server-sent events, :func:`read_chunk` reads one chunk and :class:`ReplyReader`, fed the
body's lines by whoever reads the wire, keeps the text, when each piece arrived, the usage and the
finish reason, and gives the client-side :class:`~ascend_nb.models.params.Timings`.

Nothing a server does wrong passes as an answer: a chunk that is not a JSON object, a body that is
not server-sent events, a stream that ends before a ``finish_reason`` or ``data: [DONE]`` each
raise :class:`StreamBroken`, naming what the server did.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field

import httpx

from ascend_nb.errors import AscendNbError
from ascend_nb.models.params import GenerationParams, Timings

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


@dataclass(frozen=True)
class Server:
    """Where an OpenAI-compatible server listens, its API key and the deadline of a whole request (seconds)."""

    base_url: str
    api_key: str | None
    timeout: float

    @classmethod
    def resolve(cls, base_url: str | None = None, api_key: str | None = None, timeout: float = 60.0) -> Server:
        """The checked settings; the URL and key default to ``$OPENAI_BASE_URL`` (then
        :data:`DEFAULT_BASE_URL`) and ``$OPENAI_API_KEY``."""
        url = check_base_url(base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise AscendNbError(f"timeout must be a positive number of seconds (the deadline of a whole request), got {timeout}")
        return cls(url, api_key or os.environ.get("OPENAI_API_KEY"), float(timeout))


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


# -- the request -------------------------------------------------------------------------------------
def request_payload(model: str, body: dict, params: GenerationParams) -> dict:
    """The JSON of a streamed request for ``model``: ``body`` (``prompt`` or ``messages``) with ``params``."""
    payload = {"model": model, "stream": True, "stream_options": {"include_usage": True},
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


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The bearer-token header for ``api_key`` (none without a key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


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


# -- one reply ---------------------------------------------------------------------------------------
class ReplyReader:
    """One streamed reply from ``source``, fed the body's lines as they arrive (sync or async readers alike).

    It keeps the ``text`` so far, the arrival time of each text piece (``times``, the clock of
    ``time.perf_counter``, from ``start``: when the request was sent), the ``usage`` and the
    ``finish_reason``; every fault of the stream raises :class:`StreamBroken`.
    """

    def __init__(self, source: str):
        self.source = source
        self.start = time.perf_counter()
        self.text = ""
        self.times: list[float] = []
        self.usage: dict = {}
        self.finish_reason: str | None = None
        self._decoder = SSEDecoder(source)

    def feed(self, line: str) -> str:
        """Read one line of the body (without its newline); the text it adds ("" for none)."""
        chunk = self._decoder.feed(line)
        if chunk is None:
            return ""
        delta = read_chunk(chunk, self.source)
        self.usage = delta.usage or self.usage
        self.finish_reason = delta.finish_reason or self.finish_reason
        if delta.text:
            self.times.append(time.perf_counter())
            self.text += delta.text
        return delta.text

    def finish(self) -> None:
        """The body has ended: raise :class:`StreamBroken` if the reply did not finish."""
        self._decoder.finish()

    def timings(self) -> Timings:
        """The reply's client-side timings; tokens from the server's ``usage``, else one per text piece."""
        return Timings.from_token_times(self.start, self.times, tokens=self.usage.get("completion_tokens") or None,
                                        prompt_tokens=self.usage.get("prompt_tokens", 0))
