"""Inside the model while it runs: tokens, next-token probabilities, attention, logit lens, the anatomy
of one decode step and layer-by-layer drift between two engines. Every function returns a pandas
DataFrame; :mod:`ascend_nb.ui.inspect_views` draws them.

Names are imported on first use (PEP 562), so ``import ascend_nb.inspect`` stays light.
"""

from __future__ import annotations

from ascend_nb.lazy import lazy_exports

_EXPORTS = {
    "tokens": "ascend_nb.inspect.token_split",
    "token_stats": "ascend_nb.inspect.token_split",
    "next_token_probs": "ascend_nb.inspect.next_token",
    "next_token_steps": "ascend_nb.inspect.next_token",
    "step_candidates": "ascend_nb.inspect.next_token",
    "attention": "ascend_nb.inspect.attention_maps",
    "logit_lens": "ascend_nb.inspect.lens",
    "answer_layers": "ascend_nb.inspect.lens",
    "step_anatomy": "ascend_nb.inspect.anatomy",
    "linear_kernels": "ascend_nb.inspect.anatomy",
    "decode_memory": "ascend_nb.inspect.anatomy",
    "drift": "ascend_nb.inspect.layer_drift",
    "first_departure": "ascend_nb.inspect.layer_drift",
    "parting_token": "ascend_nb.inspect.layer_drift",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
