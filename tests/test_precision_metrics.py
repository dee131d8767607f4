"""msprobe-style comparison metrics on hand-made tensors, and the per-dtype verdict."""

from __future__ import annotations

import math

import pytest
import torch

from ascend_nb.precision.metrics import (
    COSINE, FIVE_THOUSANDTHS, KL_DIVERGENCE, MAX_ABS_ERR, MAX_RELATIVE_ERR, MEAN_ABS_ERR, ONE_THOUSANDTH,
    REFERENCE_ABS_MAX, THRESHOLDS, TOP1_AGREEMENT, TensorComparison, compare_tensors, thresholds_for,
)

REFERENCE = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0], dtype=torch.float64)
CANDIDATE = torch.tensor([1.0, 2.001, 3.0, 4.04, 10.03], dtype=torch.float64)  # relative errors 0, 5e-4, 0, 1e-2, 3e-3


def test_identical_tensors_agree_perfectly():
    metrics = compare_tensors(REFERENCE, REFERENCE.clone())
    assert metrics[COSINE] == pytest.approx(1.0)
    assert metrics[MAX_ABS_ERR] == metrics[MAX_RELATIVE_ERR] == metrics[MEAN_ABS_ERR] == 0.0
    assert metrics[ONE_THOUSANDTH] == metrics[FIVE_THOUSANDTHS] == 1.0
    assert math.isnan(metrics[KL_DIVERGENCE]) and math.isnan(metrics[TOP1_AGREEMENT])


def test_errors_of_a_known_perturbation():
    metrics = compare_tensors(REFERENCE, CANDIDATE)
    dot = sum(a * b for a, b in zip(REFERENCE.tolist(), CANDIDATE.tolist()))
    norms = math.sqrt(sum(a * a for a in REFERENCE.tolist())) * math.sqrt(sum(b * b for b in CANDIDATE.tolist()))
    assert metrics[COSINE] == pytest.approx(dot / norms)
    assert metrics[MAX_ABS_ERR] == pytest.approx(0.04)
    assert metrics[MAX_RELATIVE_ERR] == pytest.approx(0.01)
    assert metrics[MEAN_ABS_ERR] == pytest.approx((0.001 + 0.04 + 0.03) / 5)
    assert metrics[ONE_THOUSANDTH] == pytest.approx(3 / 5)  # below 0.001: 0, 5e-4, 0
    assert metrics[FIVE_THOUSANDTHS] == pytest.approx(4 / 5)  # and 3e-3
    assert metrics[REFERENCE_ABS_MAX] == 10.0


def test_cosine_of_orthogonal_opposite_and_zero_tensors():
    x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    assert compare_tensors(x, y)[COSINE] == pytest.approx(0.0)
    assert compare_tensors(x, -2 * x)[COSINE] == pytest.approx(-1.0)
    assert compare_tensors(torch.zeros(3), torch.zeros(3))[COSINE] == 1.0
    assert compare_tensors(torch.zeros(3), torch.ones(3))[COSINE] == 0.0


def test_relative_error_against_a_zero_reference_is_infinite_unless_both_are_zero():
    metrics = compare_tensors(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.5, 1.0]))
    assert metrics[MAX_RELATIVE_ERR] == math.inf
    assert metrics[ONE_THOUSANDTH] == pytest.approx(2 / 3)


def test_kl_divergence_and_top1_agreement_of_logits():
    reference = torch.log(torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.9, 0.1]]))
    candidate = torch.log(torch.tensor([[0.3, 0.7], [0.5, 0.5], [0.8, 0.2]]))
    metrics = compare_tensors(reference, candidate, logits=True)
    rows = [0.6 * math.log(0.6 / 0.3) + 0.4 * math.log(0.4 / 0.7), 0.0,
            0.9 * math.log(0.9 / 0.8) + 0.1 * math.log(0.1 / 0.2)]
    assert metrics[KL_DIVERGENCE] == pytest.approx(sum(rows) / 3, rel=1e-6)
    assert metrics[TOP1_AGREEMENT] == pytest.approx(2 / 3)


def test_accumulating_chunks_equals_one_comparison_of_the_whole():
    torch.manual_seed(0)
    reference = torch.randn(6, 32)
    candidate = reference + 0.01 * torch.randn(6, 32)
    whole = compare_tensors(reference, candidate, logits=True)
    chunks = TensorComparison(logits=True)
    for rows in (slice(0, 1), slice(1, 4), slice(4, 6)):
        chunks.update(reference[rows], candidate[rows])
    assert chunks.result() == pytest.approx(whole)


def test_shapes_must_match():
    with pytest.raises(ValueError, match="shapes differ"):
        compare_tensors(torch.zeros(2, 3), torch.zeros(3, 2))


def test_thresholds_follow_the_least_precise_dtype():
    assert thresholds_for(torch.float32, torch.float32) is THRESHOLDS["float32"]
    assert thresholds_for(torch.float32, torch.float16) is THRESHOLDS["float16"]
    assert thresholds_for("float16", "bfloat16") is THRESHOLDS["bfloat16"]
    assert thresholds_for(torch.float32, torch.int8) is THRESHOLDS["bfloat16"]
    assert "Cosine >= 0.99" in THRESHOLDS["float32"].describe() and "0.001" in THRESHOLDS["float32"].describe()


def test_verdict_scales_the_absolute_bound_with_the_reference_magnitude():
    fp32 = THRESHOLDS["float32"]
    unit = {COSINE: 0.999, MAX_ABS_ERR: 0.0009, REFERENCE_ABS_MAX: 0.5}
    assert fp32.reached(unit)
    assert not fp32.reached({**unit, MAX_ABS_ERR: 0.002})
    assert fp32.reached({**unit, MAX_ABS_ERR: 0.09, REFERENCE_ABS_MAX: 100.0})
    assert not fp32.reached({**unit, COSINE: 0.98})
    assert THRESHOLDS["bfloat16"].reached({**unit, MAX_ABS_ERR: 0.04})
