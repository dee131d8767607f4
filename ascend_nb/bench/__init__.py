"""Measuring: head-to-head backend benchmarks, latency sweeps, roofline, reference tables, op traces,
and :func:`plan` (will it fit, and how fast can it decode, before loading)."""

from __future__ import annotations

from ascend_nb.lazy import lazy_exports

_EXPORTS = {"plan": "ascend_nb.bench.planner"}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
