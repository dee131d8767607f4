"""Layer-by-layer agreement of two engines on the same prompts (backends, dtypes or devices).

``compare_models(a, b, prompts)`` runs each prompt through both engines' ``forward`` (float32 logits
and per-layer hidden states), accumulates the msprobe metrics per tensor over all prompts, and judges
each tensor against the thresholds of the less precise of the two dtypes. ``a`` is the reference.

Compare backends in the same dtype, float32 where possible: its verdict is the tightest (a rope base
off by 5% fails there, while bfloat16's rounding-sized bounds let it pass). Compare dtypes to see
what rounding costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ascend_nb.errors import AscendNbError
from ascend_nb.precision.accuracy import engine_label
from ascend_nb.precision.metrics import (DISPLAY_FORMATS, MAX_ABS_ERR, MAX_RELATIVE_ERR, METRICS, TensorComparison,
                                        Thresholds, thresholds_for)
from ascend_nb.tables import Table

DEFAULT_PROMPTS = (
    "The capital of France is",
    "以下是中国关于计算机网络考试的单项选择题，请选出其中的正确答案。\nHTTP 协议默认使用的端口号是____。",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
)


@dataclass
class ComparisonReport:
    """One row per tensor (``embeddings``, ``layer 1`` .. ``layer N``, ``logits``) with the metrics and
    ``reached``; transformers' last hidden state is taken after the final norm."""

    table: pd.DataFrame
    thresholds: Thresholds
    reference: str
    candidate: str
    prompts: int
    tokens: int

    @property
    def reached(self) -> bool:
        return bool(self.table["reached"].all())

    @property
    def failing(self) -> list[str]:
        return self.table.loc[~self.table["reached"], "tensor"].tolist()

    def as_table(self) -> Table:
        """The rows as a report table: each metric in its display format, and a note when a relative
        error is infinite (a reference value of exactly 0, where no relative error exists)."""
        infinite = bool(np.isinf(self.table[MAX_RELATIVE_ERR].to_numpy(dtype=float)).any())
        note = (f"{MAX_RELATIVE_ERR} ∞: the reference holds exact zeros there, where no relative error exists; "
                f"{MAX_ABS_ERR} bounds the error instead") if infinite else ""
        return Table(self.table, decimals=DISPLAY_FORMATS, note=note)

    def summary(self) -> str:
        """The verdict with the thresholds it used, in a few lines."""
        verdict = "reached" if self.reached else f"NOT reached ({', '.join(self.failing)})"
        logits = self.table.iloc[-1]
        return "\n".join([
            f"reference {self.reference} vs candidate {self.candidate}: {self.prompts} prompts, {self.tokens} tokens, "
            f"{len(self.table) - 1} hidden states + logits",
            f"thresholds ({self.thresholds.describe()})",
            f"logits: Cosine {logits['Cosine']:.6f}, MaxAbsErr {logits['MaxAbsErr']:.4g}, "
            f"KL divergence {logits['KL divergence']:.3g}, Top-1 Agreement {logits['Top-1 Agreement']:.3f}",
            f"verdict: {verdict} ({int(self.table['reached'].sum())}/{len(self.table)} tensors)",
        ])

    def to_dict(self) -> dict:
        """JSON-ready: the verdict, thresholds and every row (NaN as null)."""
        rows = self.table.astype(object).where(self.table.notna(), None).to_dict(orient="records")
        return {"reference": self.reference, "candidate": self.candidate, "prompts": self.prompts,
                "tokens": self.tokens, "reached": self.reached,
                "thresholds": {"dtype": self.thresholds.dtype, "cosine": self.thresholds.cosine,
                               "max_abs_err": self.thresholds.max_abs_err,
                               "rule": self.thresholds.describe()},
                "tensors": rows}


def _tensor_names(count: int) -> list[str]:
    return ["embeddings", *(f"layer {i}" for i in range(1, count))]


def compare_models(a, b, prompts: Sequence[str | Sequence[int]] = DEFAULT_PROMPTS,
                   thresholds: Thresholds | None = None) -> ComparisonReport:
    """Compare engine ``b`` against the reference engine ``a`` on ``prompts`` (text or token ids).

    Both engines must tokenize alike (same model). ``thresholds`` defaults to those of the less
    precise of the two engines' dtypes (see :data:`ascend_nb.precision.metrics.THRESHOLDS`).
    """
    if not prompts:
        raise AscendNbError("compare_models needs at least one prompt")
    thresholds = thresholds or thresholds_for(a.dtype, b.dtype)
    comparisons: list[TensorComparison] | None = None
    tokens = 0
    for prompt in prompts:
        ids = a.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if isinstance(prompt, str) and b.encode(prompt) != ids:
            raise AscendNbError(f"the two engines tokenize {prompt[:30]!r} differently: compare engines of the same model")
        if not ids:
            raise AscendNbError("a prompt is empty: give some text or token ids")
        input_ids = torch.tensor([ids], dtype=torch.long)
        logits_a, hidden_a = a.forward(input_ids.to(a.device), output_hidden_states=True)
        logits_b, hidden_b = b.forward(input_ids.to(b.device), output_hidden_states=True)
        if hidden_a is None or hidden_b is None:
            raise AscendNbError("an engine returned no hidden states from forward(..., output_hidden_states=True)")
        if len(hidden_a) != len(hidden_b):
            raise AscendNbError(f"the engines return {len(hidden_a)} and {len(hidden_b)} hidden states: "
                                "compare engines of the same model")
        if comparisons is None:
            comparisons = [TensorComparison() for _ in hidden_a] + [TensorComparison(logits=True)]
        for comparison, ref, cand in zip(comparisons, [*hidden_a, logits_a], [*hidden_b, logits_b]):
            comparison.update(ref, cand)
        tokens += len(ids)
    names = [*_tensor_names(len(comparisons) - 1), "logits"]
    rows = []
    for layer, (name, comparison) in enumerate(zip(names, comparisons)):
        metrics = comparison.result()
        rows.append({"tensor": name, "layer": layer, **metrics, "reached": thresholds.reached(metrics)})
    table = pd.DataFrame(rows, columns=["tensor", "layer", *METRICS, "reached"])
    return ComparisonReport(table=table, thresholds=thresholds, reference=engine_label(a), candidate=engine_label(b),
                            prompts=len(prompts), tokens=tokens)


def topk_per_step(engine, prompt: Sequence[int], tokens: Sequence[int], k: int = 5) -> list[list[int]]:
    """The engine's top-``k`` next-token ids at each step of a generation (``len(tokens) + 1`` lists:
    step ``i`` given ``prompt + tokens[:i]``), from one teacher-forced ``forward``."""
    logits = engine.forward(torch.tensor([[*prompt, *tokens]]))[0][0]
    return logits[len(prompt) - 1:].topk(k, dim=-1).indices.tolist()


def tokens_close(tokens_a: Sequence[int], tokens_b: Sequence[int], top_a: Sequence[Sequence[int]],
                 top_b: Sequence[Sequence[int]]) -> str | None:
    """The closeness rule of vLLM's model tests (``check_logprobs_close``) for two greedy generations
    whose kernels differ (so bf16 near-ties may flip).

    The tokens must agree up to their first difference; there, each side's token must be among the
    other side's top-k at that step (``top_a[i]``: side a's top-k ids at step ``i``; a side that
    stopped counts with its top token there); comparison stops after it. None when close, else one
    line saying where and how the two part.
    """
    common = next((i for i, (x, y) in enumerate(zip(tokens_a, tokens_b)) if x != y), min(len(tokens_a), len(tokens_b)))
    if common == len(tokens_a) == len(tokens_b):
        return None
    x = tokens_a[common] if common < len(tokens_a) else top_a[common][0]
    y = tokens_b[common] if common < len(tokens_b) else top_b[common][0]
    if x in top_b[common] and y in top_a[common]:
        return None
    return (f"token {common} differs ({x} vs {y}) and is not in the other's top-{len(top_a[common])} "
            f"({list(top_a[common])} vs {list(top_b[common])})")


def greedy_divergence(a, b, prompt: Sequence[int], tokens_a: Sequence[int], tokens_b: Sequence[int],
                      k: int = 5) -> str | None:
    """:func:`tokens_close` for two engines' greedy tokens from the same prompt, with each engine's
    own top-``k`` per step (:func:`topk_per_step`)."""
    return tokens_close(tokens_a, tokens_b, topk_per_step(a, prompt, tokens_a, k), topk_per_step(b, prompt, tokens_b, k))
