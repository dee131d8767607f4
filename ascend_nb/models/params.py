"""Generation parameters and results, shared by every backend."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

from ascend_nb.errors import AscendNbError


@dataclass(frozen=True)
class GenerationParams:
    """How to generate: the knobs of transformers' GenerationConfig that the guides use.

    ``do_sample=False`` is greedy decoding; ``ignore_eos=True`` makes the output length exact
    (benchmarks). ``seed`` makes sampling reproducible.
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    do_sample: bool = False
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    speculative: str | None = None  # "prompt-lookup" | "draft:MODEL[@QUANT]" (accelerated backend, batch 1)

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "top_k", "temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            whole = name in ("max_new_tokens", "top_k")
            if isinstance(value, bool) or not isinstance(value, numbers.Integral if whole else numbers.Real) \
                    or not math.isfinite(value):
                raise AscendNbError(f"{name} must be a finite {'whole number' if whole else 'number'}, got {value!r}")
        if self.max_new_tokens <= 0:
            raise AscendNbError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.temperature <= 0 and self.do_sample:
            raise AscendNbError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise AscendNbError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise AscendNbError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise AscendNbError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "speculative", check_speculative(self.speculative))

    def replace(self, **changes) -> GenerationParams:
        """A copy with some fields changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


SPECULATIVE_METHODS = ("prompt-lookup", "draft:MODEL[@QUANT]")


def check_speculative(value: str | None) -> str | None:
    """A valid ``speculative`` setting (None and "off" turn it off), or one line saying what is accepted."""
    if value is None or value in ("", "off", "none"):
        return None
    if isinstance(value, str):
        value = value.strip()
        if value == "prompt-lookup" or (value.startswith("draft:") and value[len("draft:"):].split("@")[0]):
            return value
    raise AscendNbError(f"unknown speculative method {value!r}: use one of {', '.join(SPECULATIVE_METHODS)} or off")


@dataclass
class SpeculativeStep:
    """One decode step under speculation: the drafted tokens the target accepted, those it rejected, and
    the token it chose itself (the correction after a rejection, or the bonus token after all were accepted)."""

    accepted: list[int]
    rejected: list[int]
    token: int


@dataclass
class SpeculativeStats:
    """What speculation did over one reply: ``steps`` holds every decode step (plain steps have no drafts),
    so a view can mark each token drafted-and-accepted, drafted-and-rejected or the target's own."""

    method: str
    steps: list[SpeculativeStep] = field(default_factory=list)
    draft_ms: float = 0.0  # time spent proposing drafts
    verify_ms: float = 0.0  # time spent in target passes (verify and plain steps)

    @property
    def drafted(self) -> int:
        return sum(len(s.accepted) + len(s.rejected) for s in self.steps)

    @property
    def accepted(self) -> int:
        return sum(len(s.accepted) for s in self.steps)

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafted tokens / drafted tokens (0 when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_step(self) -> float:
        """Decoded tokens per pass of the target's weights (1.0: no gain)."""
        return (self.accepted + len(self.steps)) / len(self.steps) if self.steps else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"acceptance_rate": self.acceptance_rate, "tokens_per_step": self.tokens_per_step,
                "draft_ms": self.draft_ms, "verify_ms": self.verify_ms, "drafted": self.drafted,
                "accepted": self.accepted, "steps": len(self.steps)}


@dataclass
class Timings:
    """Latency of one request in the vLLM/llmperf vocabulary (milliseconds)."""

    ttft_ms: float = 0.0
    itl_ms: list[float] = field(default_factory=list)
    e2e_ms: float = 0.0
    tokens: int = 0
    prompt_tokens: int = 0
    peak_memory_mb: float | None = None

    @classmethod
    def from_token_times(cls, start: float, token_times: Sequence[float], tokens: int | None = None,
                         prompt_tokens: int = 0, peak_memory_mb: float | None = None) -> Timings:
        """The timings of a request sent at ``start`` whose tokens (or streamed text pieces) arrived at
        ``token_times`` (one clock, in seconds); ``tokens`` defaults to how many arrived."""
        times = list(token_times)
        return cls(ttft_ms=(times[0] - start) * 1000 if times else 0.0,
                   itl_ms=[(b - a) * 1000 for a, b in zip(times, times[1:])],
                   e2e_ms=(times[-1] - start) * 1000 if times else 0.0,
                   tokens=len(times) if tokens is None else tokens, prompt_tokens=prompt_tokens,
                   peak_memory_mb=peak_memory_mb)

    @property
    def tpot_ms(self) -> float:
        """(E2E - TTFT) / (output tokens - 1): the guides' forward_next_token_time."""
        return (self.e2e_ms - self.ttft_ms) / (self.tokens - 1) if self.tokens > 1 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Decode throughput of this request: 1000 / TPOT."""
        return 1000.0 / self.tpot_ms if self.tpot_ms > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "e2e_ms": self.e2e_ms,
                "tokens": self.tokens, "prompt_tokens": self.prompt_tokens,
                "tokens_per_s": self.tokens_per_s, "peak_memory_mb": self.peak_memory_mb}


CUT_REASONS = ("length", "cancelled", "error")  # the reply ended before the model finished it


@dataclass
class GenerationResult:
    """What one prompt produced. ``finish_reason`` is "stop" (EOS or stop string), "length", "cancelled"
    or "error" (a served model's stream broke: ``text`` is the partial reply, ``error`` says why).

    A reply cut short never ends in half a character: the decoder's U+FFFD for an incomplete
    multi-byte character at the end is dropped from ``text`` (``token_ids`` keep every token).
    """

    text: str
    token_ids: list[int]
    finish_reason: str
    timings: Timings
    error: str | None = None
    speculative: SpeculativeStats | None = None  # set when generated with GenerationParams.speculative

    def __post_init__(self) -> None:
        if self.finish_reason in CUT_REASONS:
            self.text = self.text.rstrip("\ufffd")


class GenerationError(AscendNbError):
    """A reply that broke off: the one-line reason, with ``result`` holding the partial reply
    (``finish_reason == "error"``, ``result.error`` the reason)."""

    def __init__(self, reason: str, result: GenerationResult):
        kept = (f"the reply is partial ({len(result.text)} characters kept)" if result.text
                else "no reply text arrived")
        super().__init__(f"{reason}; {kept}")
        self.result = result
