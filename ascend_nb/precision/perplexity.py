"""Perplexity of an engine on a text: the token-level cost of a dtype or a quantization format.

:func:`perplexity` slides a window over the text's tokens (Hugging Face's "perplexity of fixed-length
models" recipe): each window is one ``engine.forward`` (float32 logits, no cache), and only the tokens
the previous window did not score are scored in it, each with at least ``window - stride`` tokens of
context (all before it, in the first window). The bundled held-out text is :data:`HELDOUT_TEXT`
(``data/heldout/``, public domain; its README says where it comes from).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ascend_nb.errors import AscendNbError
from ascend_nb.files import DATA_DIR
from ascend_nb.precision.accuracy import engine_label

HELDOUT_TEXT = DATA_DIR / "heldout" / "alice_chapters_1_2.txt"
DEFAULT_WINDOW = 1024  # tokens per forward unless the engine's max_seq_len is shorter: one window's float32 logits stay small


@dataclass(frozen=True)
class PerplexityResult:
    """``perplexity = exp(nll)``, ``nll`` the mean negative log-likelihood (nats) over ``tokens`` scored
    tokens (every token of the text but the first), from ``windows`` forwards of at most ``window``
    tokens, ``stride`` apart."""

    perplexity: float
    nll: float
    tokens: int
    windows: int
    window: int
    stride: int
    label: str = ""

    def describe(self) -> str:
        return (f"perplexity {self.perplexity:.4f} (NLL {self.nll:.4f} nats/token) over {self.tokens} tokens, "
                f"{self.windows} window{'s' if self.windows != 1 else ''} of up to {self.window} tokens, stride {self.stride}"
                + (f" · {self.label}" if self.label else ""))


def read_text(path: str | Path = HELDOUT_TEXT) -> str:
    """A UTF-8 text file (default: the bundled held-out text)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AscendNbError(f"text file {path} does not exist")
    return path.read_text(encoding="utf-8")


def text_ids(engine, text: str | Sequence[int], max_tokens: int | None = None) -> list[int]:
    """The token ids ``perplexity`` scores: ``engine.encode(text)`` (or the ids given), the first ``max_tokens``."""
    if getattr(engine, "tokenizer", None) is None:
        raise AscendNbError(f"the {engine.backend} backend exposes no tokenizer or logits: perplexity needs a local "
                            "engine (backend transformers or accelerated)")
    ids = engine.encode(text) if isinstance(text, str) else [int(t) for t in text]
    if max_tokens is not None:
        if max_tokens < 2:
            raise AscendNbError(f"max_tokens must be >= 2 (one token predicts the next), got {max_tokens}")
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise AscendNbError("perplexity needs a text of at least two tokens")
    return ids


@torch.inference_mode()
def perplexity(engine, text: str | Sequence[int], window: int | None = None, stride: int | None = None,
               max_tokens: int | None = None) -> PerplexityResult:
    """Perplexity of ``engine`` on ``text`` (a string, tokenized by the engine, or token ids).

    ``window``: tokens per forward (default: the engine's ``max_seq_len``, at most :data:`DEFAULT_WINDOW`);
    ``stride``: how far each window moves (default ``window // 2``), so every token after the first window
    is scored with at least ``window - stride`` tokens of context; ``max_tokens`` keeps the first tokens
    of the text only (a quick run). Token ``i`` is scored by the log-softmax of the logits at ``i - 1``,
    so the text's first token is never scored (nor, with ``stride == window``, each window's first). Two
    engines of the same model score the same tokens with the same contexts, so their perplexities compare
    directly.
    """
    ids = text_ids(engine, text, max_tokens)
    window = min(engine.max_seq_len, DEFAULT_WINDOW) if window is None else window
    if not 2 <= window <= engine.max_seq_len:
        raise AscendNbError(f"window must be in 2..{engine.max_seq_len} (the engine's max_seq_len), got {window}")
    stride = max(1, window // 2) if stride is None else stride
    if not 1 <= stride <= window:
        raise AscendNbError(f"stride must be in 1..{window} (the window), got {stride}")
    total, scored, windows, scored_to = 0.0, 0, 0, 1  # ids[:scored_to] need no score (the first has no context)
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        chunk = torch.tensor([ids[begin:end]], dtype=torch.long)
        logits = engine.forward(chunk.to(engine.device))[0][0]
        first = max(scored_to - begin, 1)  # the chunk's first position not scored yet (position 0 has no context here)
        targets = chunk[0, first:].to(logits.device)
        total += float(F.cross_entropy(logits[first - 1:-1].float(), targets, reduction="sum"))
        scored += len(targets)
        windows += 1
        scored_to = end
        if end == len(ids):
            break
    nll = total / scored
    return PerplexityResult(perplexity=math.exp(nll), nll=nll, tokens=scored, windows=windows, window=window,
                            stride=stride, label=engine_label(engine))
