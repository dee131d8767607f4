"""Notebook UI: the chat widget, live figures and styled tables.

Names are imported on first use (PEP 562), so ``import ascend_nb.ui`` stays light; add new public
names to ``_EXPORTS`` as ``name: module``.
"""

from __future__ import annotations

from ascend_nb.lazy import lazy_exports

_EXPORTS = {
    "ChatApp": "ascend_nb.ui.chat_app",
    "ChatWidget": "ascend_nb.ui.chat",
    "CompareChat": "ascend_nb.ui.side_by_side",
    "compare_chat": "ascend_nb.ui.side_by_side",
    "AccuracyPlot": "ascend_nb.ui.precision_plots",
    "accuracy_comparison_figure": "ascend_nb.ui.precision_plots",
    "layer_comparison_figure": "ascend_nb.ui.precision_plots",
    "quantization_figure": "ascend_nb.ui.precision_plots",
    "ExplainBox": "ascend_nb.ui.explain_box",
    "fits_heatmap": "ascend_nb.ui.plan_plots",
    "LiveLoadPlot": "ascend_nb.ui.serve_plots",
    "NextTokenView": "ascend_nb.ui.inspect_views",
    "SpeculativePlot": "ascend_nb.ui.speculative_view",
    "SpeculativeView": "ascend_nb.ui.speculative_view",
    "anatomy_figure": "ascend_nb.ui.inspect_views",
    "attention_figure": "ascend_nb.ui.inspect_views",
    "drift_figure": "ascend_nb.ui.inspect_views",
    "logit_lens_figure": "ascend_nb.ui.inspect_views",
    "token_stats_figure": "ascend_nb.ui.inspect_views",
    "tokens_figure": "ascend_nb.ui.inspect_views",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
