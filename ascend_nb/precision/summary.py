"""A precision run's summary in a few lines: what a measuring notebook ends with."""

from __future__ import annotations

from collections.abc import Sequence

from ascend_nb.precision.accuracy import EvalResult, binomial_interval
from ascend_nb.precision.engine_compare import ComparisonReport


def headline(runs: Sequence[EvalResult], report: ComparisonReport | None = None) -> str:
    """One line per accuracy run (Avg acc over its scored questions with the 95% Wilson interval,
    protocol and shots: runs of different protocols are never averaged together), then the layer
    comparison's verdict, and on a line of its own the logits' Cosine with the thresholds (one line of
    both wrapped inside a number at a notebook's width)."""
    lines = []
    for run in runs:
        correct = int(run.scored["correct"].sum())
        low, high = binomial_interval(correct, run.n)
        lines.append(f"{run.label or run.protocol}: Avg acc {run.avg_acc:.3f} ({correct}/{run.n} questions, "
                     f"95% interval {low:.3f}-{high:.3f}), {run.protocol} protocol, {run.shots}-shot, {run.split} split")
    if report is not None:
        verdict = "reached" if report.reached else f"NOT reached (first: {report.failing[0]})"
        logits = report.table.iloc[-1]
        lines.append(f"{report.candidate} vs {report.reference}: {verdict}")
        lines.append(f"  logits Cosine {logits['Cosine']:.6f} ({report.thresholds.describe()})")
    return "\n".join(lines)
