"""Per-request timings of a load level and the level's row in ``vllm bench serve``'s vocabulary.

A row holds ``completed``, ``failed``, ``duration_s``, ``total_input_tokens``, ``total_output_tokens``,
``request_throughput`` (completed / duration), ``output_throughput`` and ``total_token_throughput``
(tokens / duration), ``request_goodput`` (completed requests meeting every SLO / duration) and, for
``ttft``, ``tpot``, ``itl`` and ``e2el``, ``mean_``, ``median_``, ``p90_`` and ``p99_`` + ``{metric}_ms``
(percentiles interpolated linearly, as ``numpy.percentile`` and vLLM). As in vLLM: TPOT is
(E2EL - TTFT) / (output tokens - 1) over requests with more than one output token (0 for the others
when checking the TPOT SLO); ITL gathers every gap between streamed chunks of every completed request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ascend_nb.errors import AscendNbError

METRICS = ("ttft", "tpot", "itl", "e2el")
STATISTICS = ("mean", "median", "p90", "p99")
SLO_KEYS = ("ttft_ms", "tpot_ms", "e2el_ms")
LATENCY_FIELDS = tuple(f"{stat}_{metric}_ms" for metric in METRICS for stat in STATISTICS)
LEVEL_FIELDS = ("completed", "failed", "duration_s", "total_input_tokens", "total_output_tokens",
                "request_throughput", "output_throughput", "total_token_throughput", "request_goodput",
                *LATENCY_FIELDS)


@dataclass
class RequestRecord:
    """One request of a load level, timed client-side from its stream (milliseconds from its send)."""

    index: int
    prompt_len: int
    sent_s: float = 0.0  # seconds after the level started
    ttft_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    e2el_ms: float | None = None
    output_len: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.ttft_ms is not None

    @property
    def tpot_ms(self) -> float | None:
        """(E2EL - TTFT) / (output tokens - 1); None for a failed request or a single output token."""
        if not self.ok or self.output_len < 2:
            return None
        return (self.e2el_ms - self.ttft_ms) / (self.output_len - 1)


def parse_slo(text: str | Mapping[str, float] | None) -> dict[str, float]:
    """``"ttft_ms=500,tpot_ms=50"`` (or a dict) -> ``{"ttft_ms": 500.0, "tpot_ms": 50.0}``."""
    if not text:
        return {}
    pairs = text.items() if isinstance(text, Mapping) else (part.partition("=")[::2] for part in text.split(",")
                                                              if part.strip())
    slo = {}
    for key, value in pairs:
        key = str(key).strip()
        if key not in SLO_KEYS:
            raise AscendNbError(f"unknown SLO {key!r}: use {', '.join(SLO_KEYS)}, e.g. ttft_ms=500,tpot_ms=50")
        try:
            slo[key] = float(value)
        except (TypeError, ValueError):
            raise AscendNbError(f"SLO {key} needs a number of milliseconds, e.g. {key}=500") from None
        if slo[key] <= 0:
            raise AscendNbError(f"SLO {key} must be > 0 ms, got {slo[key]:g}")
    return slo


def format_slo(slo: Mapping[str, float]) -> str:
    """The inverse of :func:`parse_slo` (keys in a fixed order), for CSV rows."""
    return ",".join(f"{key}={slo[key]:g}" for key in SLO_KEYS if key in slo)


def meets_slo(record: RequestRecord, slo: Mapping[str, float]) -> bool:
    """A completed request within every SLO (vLLM's goodput rule)."""
    if not record.ok:
        return False
    values = {"ttft_ms": record.ttft_ms, "tpot_ms": record.tpot_ms or 0.0, "e2el_ms": record.e2el_ms}
    return all(values[key] <= limit for key, limit in slo.items())


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(STATISTICS)
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "median": float(np.median(array)),
            "p90": float(np.percentile(array, 90)), "p99": float(np.percentile(array, 99))}


def level_row(records: Sequence[RequestRecord], duration_s: float, slo: Mapping[str, float] | None = None) -> dict:
    """The row of one load level (:data:`LEVEL_FIELDS`) from its request records."""
    slo = dict(slo or {})
    done = [r for r in records if r.ok]
    input_tokens = sum(r.prompt_len for r in done)
    output_tokens = sum(r.output_len for r in done)
    per_second = (lambda n: n / duration_s) if duration_s > 0 else (lambda n: 0.0)
    row = {"completed": len(done), "failed": len(records) - len(done), "duration_s": duration_s,
           "total_input_tokens": input_tokens, "total_output_tokens": output_tokens,
           "request_throughput": per_second(len(done)), "output_throughput": per_second(output_tokens),
           "total_token_throughput": per_second(input_tokens + output_tokens),
           "request_goodput": per_second(sum(meets_slo(r, slo) for r in done))}
    values = {"ttft": [r.ttft_ms for r in done], "tpot": [r.tpot_ms for r in done if r.tpot_ms is not None],
              "itl": [gap for r in done for gap in r.itl_ms], "e2el": [r.e2el_ms for r in done]}
    for metric in METRICS:
        for stat, value in _stats(values[metric]).items():
            row[f"{stat}_{metric}_ms"] = value
    return row


def level_meets_slo(row: Mapping, slo: Mapping[str, float]) -> bool:
    """Every request completed and each SLO held at p99 (``p99_ttft_ms <= ttft_ms``, ...)."""
    if row.get("failed") or not row.get("completed"):
        return False
    for key, limit in slo.items():
        value = row.get(f"p99_{key}")
        if value is None or pd.isna(value) or value > limit:
            return False
    return True


def knee(rows: Sequence[Mapping] | pd.DataFrame, slo: Mapping[str, float]) -> dict | None:
    """The highest load meeting the SLOs: among the levels that pass :func:`level_meets_slo`, the one
    with the highest request throughput (None if none passes)."""
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    passing = [dict(r) for r in records if level_meets_slo(r, slo)]
    return max(passing, key=lambda r: r["request_throughput"], default=None)


def level_label(row: Mapping) -> str:
    """``"c=4"``, ``"rate=2/s"`` or ``"c=4, rate=2/s"``: how a level is named in tables and figures."""
    parts = []
    concurrency, rate = row.get("concurrency"), row.get("request_rate")
    if concurrency is not None and not pd.isna(concurrency):
        parts.append(f"c={int(concurrency)}")
    if rate is not None and not pd.isna(rate) and rate != float("inf"):
        parts.append(f"rate={float(rate):g}/s")
    return ", ".join(parts) or "rate=inf"


def percentile_table(rows: Sequence[Mapping] | pd.DataFrame) -> pd.DataFrame:
    """Mean / median / p90 / p99 of TTFT, TPOT, ITL and E2EL (ms), one block of rows per load level."""
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    table = [{"level": level_label(row), "metric": f"{metric.upper()} (ms)",
              **{stat: row.get(f"{stat}_{metric}_ms") for stat in STATISTICS}}
             for row in records for metric in METRICS]
    return pd.DataFrame(table, columns=["level", "metric", *STATISTICS]).set_index(["level", "metric"])
