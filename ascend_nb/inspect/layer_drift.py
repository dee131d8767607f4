"""Where two engines (dtypes, backends, devices) part ways on one prompt: per layer and position.

Uses the msprobe metrics and per-dtype thresholds of :mod:`ascend_nb.precision.metrics`; ``a`` is the
reference. Hidden state 0 is the embeddings, ``L`` the input of layer ``L``, the last one the final
normed output (as transformers returns them), then the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from ascend_nb.models.params import GenerationParams
from ascend_nb.errors import AscendNbError
from ascend_nb.inspect.engines import prompt_ids, require_local
from ascend_nb.precision.metrics import COSINE, MAX_ABS_ERR, compare_tensors, thresholds_for

COLUMNS = ["layer", "position", "tensor", "cosine", "max_abs_err", "reached"]


def _same_ids(engine_a, engine_b, prompt) -> list[int]:
    ids = prompt_ids(engine_a, prompt)
    if isinstance(prompt, str) and prompt_ids(engine_b, prompt) != ids:
        raise AscendNbError("the two engines tokenize the prompt differently: compare engines of the same model")
    return ids


@torch.inference_mode()
def drift(engine_a, engine_b, prompt: str | Sequence[int]) -> pd.DataFrame:
    """Cosine and MaxAbsErr of ``engine_b`` against ``engine_a`` for every hidden state and the logits
    at every position, with ``reached`` under the thresholds of the less precise dtype."""
    for engine in (engine_a, engine_b):
        require_local(engine)
    ids = _same_ids(engine_a, engine_b, prompt)
    input_ids = torch.tensor([ids])
    logits_a, hidden_a = engine_a.forward(input_ids.to(engine_a.device), output_hidden_states=True)
    logits_b, hidden_b = engine_b.forward(input_ids.to(engine_b.device), output_hidden_states=True)
    if len(hidden_a) != len(hidden_b):
        raise AscendNbError(f"the engines return {len(hidden_a)} and {len(hidden_b)} hidden states: "
                            "compare engines of the same model")
    thresholds = thresholds_for(engine_a.dtype, engine_b.dtype)
    names = ["embeddings", *(f"layer {i}" for i in range(1, len(hidden_a))), "logits"]
    rows = []
    for layer, (name, ref, cand) in enumerate(zip(names, [*hidden_a, logits_a], [*hidden_b, logits_b])):
        for position in range(len(ids)):
            metrics = compare_tensors(ref[0, position], cand[0, position])
            rows.append({"layer": layer, "position": position, "tensor": name, "cosine": metrics[COSINE],
                         "max_abs_err": metrics[MAX_ABS_ERR], "reached": thresholds.reached(metrics)})
    return pd.DataFrame(rows, columns=COLUMNS)


def first_departure(frame: pd.DataFrame) -> int | None:
    """The first layer of a :func:`drift` frame where some position leaves the thresholds (None: none does)."""
    failing = frame.loc[~frame["reached"], "layer"]
    return None if failing.empty else int(failing.min())


def parting_token(engine_a, engine_b, prompt: str | Sequence[int], max_new_tokens: int = 32) -> pd.DataFrame:
    """Greedy replies of both engines side by side, one row per step: ``step, token_a, token_b, text_a,
    text_b, same`` (a missing token is -1 once a reply has ended); the first row with ``same`` False is
    where they part ways."""
    ids = _same_ids(engine_a, engine_b, prompt)
    params = GenerationParams(max_new_tokens=max_new_tokens)
    replies = [engine.generate(ids, params).token_ids for engine in (engine_a, engine_b)]
    steps = max(len(r) for r in replies)
    padded = [r + [-1] * (steps - len(r)) for r in replies]
    texts = [[engine_a.decode([t]) if t >= 0 else "" for t in r] for r in padded]
    return pd.DataFrame({"step": range(steps), "token_a": padded[0], "token_b": padded[1], "text_a": texts[0],
                         "text_b": texts[1], "same": [a == b for a, b in zip(*padded)]})
