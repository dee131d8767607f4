"""The engine interface every backend shares: generate, stream, chat, batches, timings, stop event.

:class:`GenerationEngine` names what every backend offers, local or served; :class:`Engine` is the
local one. A local backend implements three hooks on top of a loaded model:
``_prefill(input_ids, attention_mask)`` -> last-position logits ``[B, V]`` (starting a new KV cache),
``_decode(tokens)`` -> logits ``[B, V]`` for one new token per row, and ``forward(input_ids)`` ->
full logits (and hidden states) for precision tools. Everything else lives here, once.

Requests are served one at a time (:class:`~ascend_nb.engine.request_queue.RequestQueue`): the
hooks share one cache, so two callers of one engine (two chat widgets, a widget and a cell) take
turns instead of corrupting each other's answers.
"""

from __future__ import annotations

import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from ascend_nb import device as devices
from ascend_nb.dtypes import dtype_name
from ascend_nb.models.params import GenerationParams, GenerationResult, SpeculativeStats, Timings
from ascend_nb.engine.request_queue import RequestQueue
from ascend_nb.engine.sampling import select_tokens
from ascend_nb.errors import AscendNbError
from ascend_nb.models.registry import ModelSpec
from ascend_nb.models.templates import Message, encode_chat

Prompt = str | Sequence[int]


@dataclass
class _Row:
    """Progress of one prompt of a batch."""

    prompt_len: int
    token_ids: list[int] = field(default_factory=list)
    token_times: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    text: str = ""
    start: float = 0.0  # clock at the start of the request's prefill
    peak_memory_mb: float | None = None
    speculative: SpeculativeStats | None = None  # filled by ascend_nb.engine.speculative


class TextStream:
    """Iterator over the text pieces of one streamed reply; ``result`` is set once it is exhausted.

    A local engine is reserved for the stream from its first piece until it is exhausted, closed
    (``close()``, or leaving a ``with`` block) or dropped; a stream created but never read holds nothing.
    """

    def __init__(self, engine, prompt, params: GenerationParams, stop_event: threading.Event | None):
        # the backend holds the stream weakly, so dropping the stream closes the generation and frees the engine
        self._pieces = engine._stream_pieces(prompt, params, stop_event, weakref.proxy(self))
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop generating here and free the engine for other requests (``result`` stays None if unfinished)."""
        self._pieces.close()

    def finish(self) -> GenerationResult:
        """Consume the rest of the stream and return its result."""
        for _ in self._pieces:
            pass
        return self.result


@runtime_checkable
class GenerationEngine(Protocol):
    """What every backend offers, local or served (:func:`ascend_nb.load` returns one)."""

    backend: str
    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype | None  # None: the server decides
    max_seq_len: int
    tokenizer: Any  # a Hugging Face tokenizer; None: the server tokenizes

    def params(self, params: GenerationParams | None = None, **overrides) -> GenerationParams: ...

    def generate(self, prompt: Prompt | Sequence[Prompt], params: GenerationParams | None = None,
                 stop_event: threading.Event | None = None, **overrides
                 ) -> GenerationResult | list[GenerationResult]: ...

    def stream(self, prompt: Prompt, params: GenerationParams | None = None,
               stop_event: threading.Event | None = None, **overrides) -> TextStream: ...

    def chat(self, messages: Sequence[Message], params: GenerationParams | None = None, stream: bool = False,
             stop_event: threading.Event | None = None, **overrides) -> GenerationResult | TextStream: ...

    def forward(self, input_ids: torch.Tensor, output_hidden_states: bool = False
                ) -> tuple[torch.Tensor, list[torch.Tensor] | None]: ...


class EngineCommon:
    """What every backend does alike before generating: parameters from the model's defaults, the batch test."""

    spec: ModelSpec

    supports_speculative = False  # GenerationParams.speculative runs only where a backend says so

    def params(self, params: GenerationParams | None = None, **overrides) -> GenerationParams:
        """The model's default parameters (or ``params``) with ``overrides`` applied."""
        params = (params or self.spec.defaults).replace(**overrides)
        if params.speculative is not None and not self.supports_speculative:
            raise AscendNbError(f"speculative decoding runs in the accelerated backend, not {self.backend!r}: load the model "
                                "with backend='accelerated' or generate without speculative")
        return params

    @staticmethod
    def _is_batch(prompt) -> bool:
        """A list of prompts (texts or id lists) rather than one prompt."""
        return not isinstance(prompt, str) and len(prompt) > 0 and not isinstance(prompt[0], int)


class Engine(EngineCommon, ABC):
    """A loaded model ready to generate. Create one with :func:`ascend_nb.load`."""

    backend: str = ""
    graphs: str | None = None  # the graph mode decode steps replay (accelerated backend), None: eager

    @property
    def kernels(self) -> str:
        """The kernel path generation runs on: the backend's name, or the accelerated backend's path."""
        return self.backend

    def __init__(self, model_dir: Path, spec: ModelSpec, tokenizer, config, device: torch.device,
                 dtype: torch.dtype, max_seq_len: int):
        self.model_dir = Path(model_dir)
        self.spec = spec
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self.dtype = dtype
        self.max_seq_len = max_seq_len
        self.eos_token_ids = self._eos_ids()
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_token_ids[0]
        # called with (logits [B, V], tokens [B]) after each step's selection (ascend_nb.inspect watches here)
        self.step_observer: Callable[[torch.Tensor, torch.Tensor], None] | None = None
        self.requests = RequestQueue()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={self.spec.name!r}, backend={self.backend!r}, device={str(self.device)!r}, "
                f"dtype={dtype_name(self.dtype)!r}, max_seq_len={self.max_seq_len})")

    # -- backend hooks ---------------------------------------------------------------------------
    @abstractmethod
    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the prompt (left-padded ``[B, T]``), start a fresh KV cache, return last logits ``[B, V]``."""

    @abstractmethod
    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row (``[B]``) to the cache and return the next logits ``[B, V]``."""

    @abstractmethod
    def forward(self, input_ids: torch.Tensor, output_hidden_states: bool = False
                ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Full-sequence float32 logits ``[B, T, V]`` and, if asked, per-layer hidden states (no cache)."""

    # -- public API ------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of a raw prompt (the tokenizer's own special-token rules)."""
        return self.tokenizer.encode(text)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def encode_chat(self, messages: Sequence[Message], max_new_tokens: int) -> list[int]:
        """Prompt ids for a conversation under this model's template and truncation rules."""
        budget = self.max_seq_len - max_new_tokens
        if budget <= 0:
            raise AscendNbError(f"max_new_tokens ({max_new_tokens}) leaves no room for the prompt in "
                                f"max_seq_len {self.max_seq_len}: lower max_new_tokens")
        return encode_chat(self.spec.template, self.tokenizer, messages, budget)

    def generate(self, prompt: Prompt | Sequence[Prompt], params: GenerationParams | None = None,
                 stop_event: threading.Event | None = None, **overrides) -> GenerationResult | list[GenerationResult]:
        """Generate for one prompt (text or ids) or a batch (a list of them, left-padded together)."""
        params = self.params(params, **overrides)
        batch = self._is_batch(prompt)
        prompts = [self._prompt_ids(p) for p in (prompt if batch else [prompt])]
        rows = None
        for rows in self._run(prompts, params, stop_event):
            pass
        results = [self._result(row) for row in rows]
        return results if batch else results[0]

    def stream(self, prompt: Prompt, params: GenerationParams | None = None,
               stop_event: threading.Event | None = None, **overrides) -> TextStream:
        """Stream the reply to one prompt as text pieces; the stream's ``result`` has ids and timings."""
        return TextStream(self, self._prompt_ids(prompt), self.params(params, **overrides), stop_event)

    def chat(self, messages: Sequence[Message], params: GenerationParams | None = None, stream: bool = False,
             stop_event: threading.Event | None = None, **overrides) -> GenerationResult | TextStream:
        """Answer the last user message of ``messages`` (``[{"role", "content"}, ...]``)."""
        params = self.params(params, **overrides)
        ids = self.encode_chat(messages, params.max_new_tokens)
        return self.stream(ids, params, stop_event) if stream else self.generate(ids, params, stop_event)

    # -- generation loop -------------------------------------------------------------------------
    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        ids = self.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise AscendNbError("the prompt is empty: give some text or token ids")
        return ids

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        for source in (getattr(self.spec, "eos_token_ids", ()), self._generation_config_eos(),
                       [self.tokenizer.eos_token_id]):
            ids.extend(i for i in source if i is not None and i not in ids)
        return ids

    def _generation_config_eos(self) -> list[int]:
        path = self.model_dir / "generation_config.json"
        if not path.exists():
            return [self.config.eos_token_id] if isinstance(self.config.eos_token_id, int) else []
        import json

        eos = json.loads(path.read_text()).get("eos_token_id")
        return [eos] if isinstance(eos, int) else list(eos or [])

    def _check_fits(self, prompts: list[list[int]], params: GenerationParams) -> None:
        longest = max(len(p) for p in prompts)
        if longest + params.max_new_tokens > self.max_seq_len:
            raise AscendNbError(
                f"prompt ({longest} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds max_seq_len "
                f"{self.max_seq_len}: shorten the prompt, lower max_new_tokens or load with a larger max_seq_len")

    def _clock(self) -> float:
        devices.synchronize(self.device)
        return time.perf_counter()

    def _run(self, prompts: list[list[int]], params: GenerationParams, stop_event: threading.Event | None,
             live_text: bool = False) -> Iterator[list[_Row]]:
        """Generate for a batch, yielding the rows after every step (the caller may stop consuming).

        The request waits for its turn on this engine first and holds it until the generator ends
        (exhausted, closed or dropped); a ``stop_event`` set while it waits cancels it with no tokens.
        """
        self._check_fits(prompts, params)
        if params.speculative is not None and len(prompts) > 1:
            raise AscendNbError(f"speculative decoding runs one prompt at a time for now, not a batch of {len(prompts)}: "
                                "generate the prompts one by one or without speculative")
        if not self.requests.acquire(stop_event):
            yield [_Row(prompt_len=len(p), finish_reason="cancelled") for p in prompts]
            return
        try:
            if params.speculative is None:
                yield from self._steps(prompts, params, stop_event, live_text)
            else:
                yield from self._speculative_steps(prompts, params, stop_event, live_text)
        finally:
            self.requests.release()

    def _speculative_steps(self, prompts: list[list[int]], params: GenerationParams,
                           stop_event: threading.Event | None, live_text: bool) -> Iterator[list[_Row]]:
        """The generation loop with ``params.speculative`` (backends with ``supports_speculative``)."""
        raise NotImplementedError

    @torch.inference_mode()
    def _steps(self, prompts: list[list[int]], params: GenerationParams, stop_event: threading.Event | None,
               live_text: bool) -> Iterator[list[_Row]]:
        """The generation loop of one request (the caller holds the engine).

        Rows' text is decoded after every token only when streaming (``live_text``) or when stop strings
        must be watched; otherwise once at the end, so timings carry no per-token decoding.
        """
        live_text = live_text or bool(params.stop)
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_token_id] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        seen = None
        if params.repetition_penalty != 1.0:
            seen = torch.zeros(len(prompts), self.config.vocab_size, dtype=torch.bool, device=self.device)
            seen.scatter_(1, input_ids, attention_mask.bool())
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        devices.reset_peak_memory(self.device)
        start = self._clock()
        rows = [_Row(prompt_len=len(p), start=start) for p in prompts]
        logits = self._prefill(input_ids, attention_mask)
        for step in range(params.max_new_tokens):
            tokens = select_tokens(logits.float(), params, seen, generator)
            if self.step_observer is not None:
                self.step_observer(logits, tokens)
            token_list = tokens.tolist()
            now = self._clock()
            for row, token in zip(rows, token_list):
                if row.finish_reason is None:
                    self._append(row, token, now, params, live_text)
            yield rows
            if all(row.finish_reason for row in rows):
                break
            if stop_event is not None and stop_event.is_set():
                for row in rows:
                    row.finish_reason = row.finish_reason or "cancelled"
                yield rows
                break
            if step + 1 == params.max_new_tokens:
                break
            if seen is not None:
                seen.scatter_(1, tokens[:, None], True)
            logits = self._decode(tokens)
        peak_mb = devices.memory_stats(self.device)["peak_mb"]
        for row in rows:
            row.finish_reason = row.finish_reason or "length"
            row.peak_memory_mb = peak_mb
            if not live_text:
                row.text = self.decode(row.token_ids)

    def _append(self, row: _Row, token: int, now: float, params: GenerationParams, live_text: bool) -> None:
        row.token_times.append(now)
        if token in self.eos_token_ids and not params.ignore_eos:
            row.finish_reason = "stop"
            return
        row.token_ids.append(token)
        if not live_text:
            return
        row.text = self.decode(row.token_ids)
        cut = min((i for i in (row.text.find(s) for s in params.stop) if i >= 0), default=-1)
        if cut >= 0:
            row.text = row.text[:cut]
            row.finish_reason = "stop"

    def _result(self, row: _Row) -> GenerationResult:
        timings = Timings.from_token_times(row.start, row.token_times, prompt_tokens=row.prompt_len,
                                           peak_memory_mb=row.peak_memory_mb)
        return GenerationResult(text=row.text, token_ids=row.token_ids, finish_reason=row.finish_reason,
                                timings=timings, speculative=row.speculative)

    def _stream_pieces(self, prompt_ids: list[int], params: GenerationParams,
                       stop_event: threading.Event | None, stream: TextStream) -> Iterator[str]:
        emitted = 0
        with closing(self._run([prompt_ids], params, stop_event, live_text=True)) as steps:
            for (row,) in steps:
                safe = (len(row.text) if row.finish_reason == "stop"  # cut short: drop a half character, no stop to watch
                        else _safe_prefix_len(row.text, () if row.finish_reason else params.stop))
                if safe > emitted:
                    yield row.text[emitted:safe]
                    emitted = safe
        stream.result = self._result(row)


def _safe_prefix_len(text: str, stops: Sequence[str]) -> int:
    """How much of a partial reply can be shown: hold back an incomplete UTF-8 character and any
    tail that could be the start of a stop string."""
    safe = len(text.rstrip("\ufffd"))
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                safe = min(safe, len(text) - k)
                break
    return safe
