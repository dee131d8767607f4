"""``backend="openai"``: an engine that talks to an OpenAI-compatible server over HTTP, streaming.

vLLM / vllm-ascend, MindIE, ``transformers serve`` and llama.cpp's server all speak this API, so the
chat widget, the benchmark and the generate-protocol precision tools work against a served model.
TTFT / ITL / TPOT are measured client-side from the stream. Requests always stream, so a
non-streaming ``generate`` is timed the same way.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence

import httpx
import torch

from ascend_nb.engine.base import TextStream
from ascend_nb.engine.params import GenerationParams, GenerationResult, Timings
from ascend_nb.errors import AscendNbError
from ascend_nb.models.registry import GENERIC_LLAMA, MODELS, ModelSpec
from ascend_nb.models.templates import Message

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


SSE_DONE = object()  # what :func:`sse_chunk` returns for the closing ``data: [DONE]``


def sse_chunk(line: str) -> dict | object | None:
    """The JSON chunk of one server-sent-events line, :data:`SSE_DONE` at ``[DONE]``, None for other lines."""
    data = line.removeprefix("data:").strip() if line.startswith("data:") else ""
    if data == "[DONE]":
        return SSE_DONE
    return json.loads(data) if data else None


def chunk_delta(chunk: dict) -> tuple[str, str | None, dict]:
    """The new text, the finish reason (or None) and the usage (or {}) of one streamed chunk
    (``/completions`` or ``/chat/completions``)."""
    text, finish = "", None
    for choice in chunk.get("choices") or []:
        text += (choice.get("delta") or {}).get("content") or choice.get("text") or ""
        finish = choice.get("finish_reason") or finish
    return text, finish, chunk.get("usage") or {}


class OpenAIEngine:
    """Same interface as the local engines (generate / stream / chat / params), served remotely."""

    backend = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, spec: ModelSpec | None = None, max_seq_len: int | None = None):
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
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

    def _events(self, endpoint: str, payload: dict) -> Iterator[dict]:
        """The JSON chunks of one streamed response, with transport errors turned into clear messages."""
        url = f"{self.base_url}/{endpoint}"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            with httpx.stream("POST", url, json=payload, headers=headers, timeout=self.timeout) as response:
                if response.status_code != 200:
                    detail = response.read().decode(errors="replace").strip()[:300]
                    raise AscendNbError(f"server at {url} answered HTTP {response.status_code}: {detail}")
                for line in response.iter_lines():
                    chunk = sse_chunk(line)
                    if chunk is SSE_DONE:
                        return
                    if chunk is not None:
                        yield chunk
        except httpx.ConnectError as exc:
            raise AscendNbError(f"cannot reach an OpenAI-compatible server at {self.base_url}: is it running? "
                                "(e.g. `vllm serve DIR` or `transformers serve DIR`; set --base-url or OPENAI_BASE_URL)") from exc
        except httpx.TimeoutException as exc:
            raise AscendNbError(f"the server at {self.base_url} did not answer within {self.timeout:g} s: "
                                "raise the timeout or check the server's load") from exc

    def _stream_pieces(self, request: tuple[str, dict], params: GenerationParams,
                       stop_event: threading.Event | None, stream: TextStream) -> Iterator[str]:
        endpoint, body = request
        start = time.perf_counter()
        times: list[float] = []
        text, finish, usage = "", None, {}
        for chunk in self._events(endpoint, self._payload(body, params)):
            piece, finish_reason, chunk_usage = chunk_delta(chunk)
            usage, finish = chunk_usage or usage, finish_reason or finish
            if piece:
                times.append(time.perf_counter())
                text += piece
                yield piece
            if stop_event is not None and stop_event.is_set():
                finish = "cancelled"
                break
        tokens = usage.get("completion_tokens") or len(times)
        timings = Timings(ttft_ms=(times[0] - start) * 1000 if times else 0.0,
                          itl_ms=[(b - a) * 1000 for a, b in zip(times, times[1:])],
                          e2e_ms=(times[-1] - start) * 1000 if times else 0.0,
                          tokens=tokens, prompt_tokens=usage.get("prompt_tokens", 0))
        stream.result = GenerationResult(text=text, token_ids=[], finish_reason=finish or "length", timings=timings)
