"""Token selection on device: repetition penalty, temperature, top-k, top-p, greedy or sampled."""

from __future__ import annotations

import torch

from ascend_nb.models.params import GenerationParams


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' rule: divide positive logits of seen tokens by ``penalty``, multiply negative ones."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k and outside the top-p nucleus to -inf (top-k first, as transformers)."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(dim=-1)
        remove_sorted = probs.cumsum(dim=-1) - probs > top_p  # keep the token that crosses top_p
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sampling_logits(logits: torch.Tensor, params: GenerationParams, seen: torch.Tensor | None) -> torch.Tensor:
    """The logits :func:`select_tokens` picks from: the repetition penalty, then (when sampling)
    temperature, top-k and top-p, with every token the sampler may not pick at -inf."""
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if not params.do_sample:
        return logits
    return filter_top_k_top_p(logits / params.temperature, params.top_k, params.top_p)


def kept_tokens(logits: torch.Tensor, params: GenerationParams, seen: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask ``[B, V]``: the tokens :func:`select_tokens` may pick under ``params`` (the argmax
    alone when greedy, else those with a nonzero probability in what it draws from); the rest are what
    the sampler drops."""
    shaped = sampling_logits(logits, params, seen)
    if not params.do_sample:
        return torch.zeros_like(shaped, dtype=torch.bool).scatter_(-1, shaped.argmax(dim=-1, keepdim=True), True)
    return shaped.softmax(dim=-1) > 0


def select_tokens(logits: torch.Tensor, params: GenerationParams, seen: torch.Tensor | None,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Next token per row from float logits ``[B, V]``; returns ``[B]`` int64 on the same device."""
    logits = sampling_logits(logits, params, seen)
    if not params.do_sample:
        return logits.argmax(dim=-1)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)
