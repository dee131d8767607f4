"""Measuring: head-to-head backend benchmarks, latency sweeps, roofline, reference tables, op traces,
:func:`plan` (will it fit, and how fast can it decode, before loading) and served models under load.

Names are imported on first use (PEP 562), so ``import ascend_nb.bench`` stays light.
"""

from __future__ import annotations

from ascend_nb.lazy import lazy_exports

_EXPORTS = {
    "BenchConfig": "ascend_nb.bench.run",
    "run_bench": "ascend_nb.bench.run",
    "run_sweep": "ascend_nb.bench.run",
    "speedups": "ascend_nb.bench.run",
    "sweep": "ascend_nb.bench.latency_sweep",
    "plan_sweep": "ascend_nb.bench.latency_sweep",
    "grid_lengths": "ascend_nb.bench.latency_sweep",
    "roofline": "ascend_nb.bench.roofline_model",
    "roofline_table": "ascend_nb.bench.roofline_model",
    "with_roofline": "ascend_nb.bench.roofline_model",
    "measure_bandwidth": "ascend_nb.bench.roofline_model",
    "compare": "ascend_nb.bench.comparison",
    "summarize": "ascend_nb.bench.comparison",
    "headline": "ascend_nb.bench.comparison",
    "trace": "ascend_nb.bench.op_trace",
    "op_table": "ascend_nb.bench.op_trace",
    "plan": "ascend_nb.bench.planner",
    "serve_load": "ascend_nb.bench.serve_bench",
    "load_levels": "ascend_nb.bench.serve_bench",
    "percentile_table": "ascend_nb.bench.serve_metrics",
    "knee": "ascend_nb.bench.serve_metrics",
    "read_mindie_csv": "ascend_nb.bench.mindie_csv",
    "quantization_report": "ascend_nb.bench.quantization",
    "QuantizationReport": "ascend_nb.bench.quantization",
    "write_mindie_csv": "ascend_nb.bench.mindie_csv",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
