"""The next-token distribution at every step of a real generation, and what the sampler keeps of it.

:func:`next_token_steps` generates through the engine's own loop (``engine.stream``) and yields, as
each token is picked, the logits the sampler saw and the token it chose. :func:`step_candidates`
turns one step into the top candidates with their probabilities and whether the sampler could pick
them under any :class:`~ascend_nb.models.params.GenerationParams`: the mask comes from
:func:`ascend_nb.engine.sampling.kept_tokens`, the very code :func:`~ascend_nb.engine.sampling.select_tokens`
runs, so a shaded bar is exactly a token the sampler drops.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from ascend_nb.models.params import GenerationParams
from ascend_nb.engine.sampling import kept_tokens, sampling_logits
from ascend_nb.errors import AscendNbError
from ascend_nb.inspect.engines import prompt_ids, require_local, token_texts

COLUMNS = ["step", "rank", "token_id", "token", "prob", "sampler_prob", "kept", "chosen", "kept_count", "entropy_bits"]


@dataclass(frozen=True)
class Step:
    """One generation step: the logits ``[V]`` (float32, CPU) the sampler saw, the token it picked, and
    the ids seen before it (prompt + earlier tokens, what the repetition penalty looks at)."""

    step: int
    logits: torch.Tensor
    token_id: int
    seen: tuple[int, ...]

    def seen_mask(self) -> torch.Tensor:
        """``[1, V]`` True at every id seen so far (the engine's own ``seen`` tensor)."""
        mask = torch.zeros(1, self.logits.shape[-1], dtype=torch.bool)
        mask[0, list(self.seen)] = True
        return mask


def next_token_steps(engine, prompt: str | Sequence[int], params: GenerationParams | None = None,
                     **overrides) -> Iterator[Step]:
    """Generate a reply to ``prompt`` (text or ids) and yield each :class:`Step` as it happens."""
    require_local(engine)
    params = engine.params(params, **overrides)
    ids = prompt_ids(engine, prompt)
    if engine.step_observer is not None:
        raise AscendNbError("this engine's steps are already being watched: finish that generation first")
    pending: list[tuple[torch.Tensor, int]] = []

    def observe(logits: torch.Tensor, tokens: torch.Tensor) -> None:
        pending.append((logits[0].float().cpu(), int(tokens[0])))

    seen, step = list(ids), 0
    engine.step_observer = observe
    try:
        pieces = iter(engine.stream(ids, params))
        running = True
        while running:
            try:
                next(pieces)
            except StopIteration:
                running = False
            while pending:
                logits, token = pending.pop(0)
                yield Step(step=step, logits=logits, token_id=token, seen=tuple(seen))
                seen.append(token)
                step += 1
    finally:
        engine.step_observer = None


def entropy_bits(logits: torch.Tensor) -> float:
    """Entropy (bits) of the model's next-token distribution ``softmax(logits)``."""
    probs = logits.float().softmax(-1)
    return float(-(probs * probs.clamp_min(1e-45).log2()).sum())  # 0 log 0 = 0


def step_candidates(step: Step, params: GenerationParams, tokenizer, top_k: int = 20) -> pd.DataFrame:
    """The ``top_k`` most likely next tokens of one step (plus the chosen one if it is not among them):
    the model's probability, the probability the sampler gives it under ``params`` (0 when dropped),
    whether it is kept, how many tokens of the vocabulary are kept, and the entropy of the step."""
    logits = step.logits[None]
    seen = step.seen_mask() if params.repetition_penalty != 1.0 else None
    probs = logits.softmax(-1)[0]
    kept = kept_tokens(logits, params, seen)[0]
    if params.do_sample:
        sampler = sampling_logits(logits, params, seen).softmax(-1)[0]
    else:
        sampler = kept.float()
    entropy = entropy_bits(step.logits)
    order = torch.topk(probs, min(top_k, probs.numel())).indices.tolist()
    if step.token_id not in order:
        order.append(step.token_id)
    texts = token_texts(tokenizer, order)
    kept_count = int(kept.sum())
    rows = [{"step": step.step, "rank": rank, "token_id": token, "token": text, "prob": float(probs[token]),
             "sampler_prob": float(sampler[token]), "kept": bool(kept[token]), "chosen": token == step.token_id,
             "kept_count": kept_count, "entropy_bits": entropy}
            for rank, (token, text) in enumerate(zip(order, texts))]
    return pd.DataFrame(rows, columns=COLUMNS)


def next_token_probs(engine, prompt: str | Sequence[int], params: GenerationParams | None = None,
                     top_k: int = 20) -> pd.DataFrame:
    """One row per step x candidate of a real generation (see :func:`step_candidates` for the columns)."""
    params = engine.params(params)
    steps = next_token_steps(engine, prompt, params)
    frames = [step_candidates(step, params, engine.tokenizer, top_k) for step in steps]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
