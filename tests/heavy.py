"""The heavy tier (pyproject's ``heavy`` marker): what ``make test`` leaves to ``make test-all``."""

from __future__ import annotations

from collections.abc import Iterable

import pytest


def heavy_after_first(values: Iterable) -> list:
    """Parameters of which the first (this machine's default kernel path, say) runs in ``make test`` and the
    rest only in ``make test-all``."""
    return [pytest.param(value, marks=() if i == 0 else pytest.mark.heavy) for i, value in enumerate(values)]
