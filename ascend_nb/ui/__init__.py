"""Notebook UI: the chat widget, live figures and styled tables.

Names are imported on first use (PEP 562), so ``import ascend_nb.ui`` stays light; add new public
names to ``_EXPORTS`` as ``name: module``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ChatApp": "ascend_nb.ui.chat",
    "ChatWidget": "ascend_nb.ui.chat",
    "CompareChat": "ascend_nb.ui.chat",
    "compare_chat": "ascend_nb.ui.chat",
    "AccuracyPlot": "ascend_nb.ui.precision_plots",
    "accuracy_comparison_figure": "ascend_nb.ui.precision_plots",
    "layer_comparison_figure": "ascend_nb.ui.precision_plots",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ascend_nb.ui' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
