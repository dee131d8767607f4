"""Tensor comparison in the msprobe / msit vocabulary, with a reached / not-reached verdict per dtype.

``reference`` is the golden tensor (e.g. the transformers backend in float32), ``candidate`` the one
under test. Relative errors are ``|candidate - reference| / |reference|`` (0 where both are equal, inf
where only the reference is 0, as msprobe reports). "One Thousandth Err Ratio" and "Five Thousandths
Err Ratio" are the fractions of elements whose relative error is below 0.001 and 0.005 (higher is
better). KL divergence ``KL(softmax(reference) || softmax(candidate))`` over the last dimension (the
vocabulary) and "Top-1 Agreement" (same argmax) are computed for logits only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

COSINE = "Cosine"
MAX_ABS_ERR = "MaxAbsErr"
MAX_RELATIVE_ERR = "MaxRelativeErr"
MEAN_ABS_ERR = "MeanAbsErr"
ONE_THOUSANDTH = "One Thousandth Err Ratio"
FIVE_THOUSANDTHS = "Five Thousandths Err Ratio"
KL_DIVERGENCE = "KL divergence"
TOP1_AGREEMENT = "Top-1 Agreement"
REFERENCE_ABS_MAX = "RefAbsMax"
METRICS = (COSINE, MAX_ABS_ERR, MAX_RELATIVE_ERR, MEAN_ABS_ERR, ONE_THOUSANDTH, FIVE_THOUSANDTHS, KL_DIVERGENCE,
           TOP1_AGREEMENT, REFERENCE_ABS_MAX)
# How each metric reads in a table (ascend_nb.tables.Table decimals): Cosine to 6 places, errors and
# KL in scientific notation, ratios to 4 places: one format per column, the same in every table.
DISPLAY_FORMATS = {COSINE: 6, MAX_ABS_ERR: ".2e", MAX_RELATIVE_ERR: ".2e", MEAN_ABS_ERR: ".2e", ONE_THOUSANDTH: 4,
                   FIVE_THOUSANDTHS: 4, KL_DIVERGENCE: ".2e", TOP1_AGREEMENT: 4, REFERENCE_ABS_MAX: 4}


@dataclass(frozen=True)
class Thresholds:
    """When a tensor counts as "reached": ``Cosine >= cosine`` and
    ``MaxAbsErr <= max_abs_err * max(1, max|reference|)`` (msprobe's 0.001 for unit-scale tensors,
    scaled for large activations)."""

    dtype: str
    cosine: float
    max_abs_err: float

    def reached(self, metrics: dict[str, float]) -> bool:
        scale = max(1.0, metrics[REFERENCE_ABS_MAX])
        return metrics[COSINE] >= self.cosine and metrics[MAX_ABS_ERR] <= self.max_abs_err * scale

    def describe(self) -> str:
        return (f"{self.dtype}: Cosine >= {self.cosine} and MaxAbsErr <= {self.max_abs_err} x max(1, max|reference|)")


# float32 is msprobe's rule. The 16-bit bounds leave 3-4x headroom over the worst layer measured between
# float32 and float16 / bfloat16 runs of the embedded SmolLM2-135M (MaxAbsErr / max|reference| of 0.013
# and 0.051, Cosine >= 0.9998 everywhere): loose enough for rounding, far below what a wrong kernel gives.
THRESHOLDS = {
    "float32": Thresholds("float32", cosine=0.99, max_abs_err=0.001),
    "float16": Thresholds("float16", cosine=0.99, max_abs_err=0.05),
    "bfloat16": Thresholds("bfloat16", cosine=0.99, max_abs_err=0.15),
}


_BY_PRECISION = ("float32", "float16", "bfloat16")  # most precise first


def thresholds_for(*dtypes: torch.dtype | str) -> Thresholds:
    """The thresholds of the least precise of ``dtypes`` (anything else, e.g. int8, counts as bfloat16)."""
    names = [str(d).removeprefix("torch.") for d in dtypes]
    rank = max(_BY_PRECISION.index(n) if n in _BY_PRECISION else len(_BY_PRECISION) - 1 for n in names)
    return THRESHOLDS[_BY_PRECISION[rank]]


class TensorComparison:
    """Accumulates the metrics of many (reference, candidate) pairs as if they were one tensor.

    Feed it with :meth:`update` (e.g. one prompt at a time) and read :meth:`result`.
    """

    def __init__(self, logits: bool = False):
        self.logits = logits
        self._dot = self._ref_sq = self._cand_sq = self._abs_sum = 0.0
        self._max_abs = self._max_rel = self._ref_abs_max = 0.0
        self._within_1e3 = self._within_5e3 = self._count = 0
        self._kl_sum = 0.0
        self._top1 = self._rows = 0

    def update(self, reference: torch.Tensor, candidate: torch.Tensor) -> None:
        if reference.shape != candidate.shape:
            raise ValueError(f"shapes differ: reference {tuple(reference.shape)} vs candidate {tuple(candidate.shape)}")
        ref = reference.detach().to("cpu", torch.float64)
        cand = candidate.detach().to("cpu", torch.float64)
        diff = (cand - ref).abs()
        rel = torch.where(diff == 0, torch.zeros_like(diff), diff / ref.abs())
        self._dot += float((ref * cand).sum())
        self._ref_sq += float((ref * ref).sum())
        self._cand_sq += float((cand * cand).sum())
        self._abs_sum += float(diff.sum())
        self._count += diff.numel()
        if diff.numel():
            self._max_abs = max(self._max_abs, float(diff.max()))
            self._max_rel = max(self._max_rel, float(rel.max()))
            self._ref_abs_max = max(self._ref_abs_max, float(ref.abs().max()))
        self._within_1e3 += int((rel < 0.001).sum())
        self._within_5e3 += int((rel < 0.005).sum())
        if self.logits:
            log_p = torch.log_softmax(ref, dim=-1)
            log_q = torch.log_softmax(cand, dim=-1)
            self._kl_sum += float((log_p.exp() * (log_p - log_q)).sum())
            self._top1 += int((ref.argmax(-1) == cand.argmax(-1)).sum())
            self._rows += ref.numel() // ref.shape[-1]

    def result(self) -> dict[str, float]:
        """The metrics, keyed by the names in :data:`METRICS` (KL and Top-1 are NaN for non-logits)."""
        nan = float("nan")
        norms = math.sqrt(self._ref_sq) * math.sqrt(self._cand_sq)
        if norms == 0:
            cosine = 1.0 if self._ref_sq == self._cand_sq == 0 else 0.0
        else:
            cosine = self._dot / norms
        count = max(self._count, 1)
        return {
            COSINE: cosine,
            MAX_ABS_ERR: self._max_abs,
            MAX_RELATIVE_ERR: self._max_rel,
            MEAN_ABS_ERR: self._abs_sum / count,
            ONE_THOUSANDTH: self._within_1e3 / count,
            FIVE_THOUSANDTHS: self._within_5e3 / count,
            KL_DIVERGENCE: self._kl_sum / self._rows if self.logits and self._rows else nan,
            TOP1_AGREEMENT: self._top1 / self._rows if self.logits and self._rows else nan,
            REFERENCE_ABS_MAX: self._ref_abs_max,
        }


def compare_tensors(reference: torch.Tensor, candidate: torch.Tensor, logits: bool = False) -> dict[str, float]:
    """All metrics of one pair of tensors (``logits=True`` adds KL divergence and Top-1 Agreement)."""
    comparison = TensorComparison(logits=logits)
    comparison.update(reference, candidate)
    return comparison.result()
