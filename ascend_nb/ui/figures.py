"""Figures that are live while a kernel runs and stay visible in an executed or exported notebook.

A :class:`FigureDisplay` shows a plotly ``FigureWidget`` (updated in place) when a widget frontend
is likely, else a static figure re-rendered through ``display(..., display_id=True)``. Either way
:meth:`FigureDisplay.finish` replaces the output with a static plotly bundle
(:func:`ascend_nb.figure_style.static_bundle`: plotly JSON for JupyterLab, HTML that draws offline for
nbconvert / nbviewer exports), so the saved notebook holds the finished figure instead of a widget
that only a live kernel can draw.
"""

from __future__ import annotations

import plotly.graph_objects as go

from ascend_nb.figure_style import PLOTLYJS, static_bundle
from ascend_nb.progress import in_jupyter_kernel



def widget_frontend_likely() -> bool:
    """True inside a Jupyter kernel with anywidget installed (what plotly's FigureWidget needs)."""
    try:
        import anywidget  # noqa: F401
    except ImportError:
        return False
    return in_jupyter_kernel()


def show_static(figure: go.Figure) -> None:
    """Display a figure that is already finished as a static bundle (see :func:`static_bundle`)."""
    from IPython.display import display

    display(static_bundle(figure), raw=True)


class FigureDisplay:
    """One notebook output for a figure that changes: live while it grows, static once finished."""

    def __init__(self, figure: go.Figure, widget: bool | None = None):
        self.widget = widget_frontend_likely() if widget is None else widget
        self.figure = go.FigureWidget(figure) if self.widget else figure
        self._handle = None
        self._plotlyjs = False  # whether this output is the one carrying plotly.js (it keeps it on every update)

    def show(self) -> None:
        """Display the figure (once, before it starts to change)."""
        from IPython.display import display

        if self.widget:
            self._handle = display(self.figure, display_id=True)
        else:
            self._handle = display(self._bundle(), raw=True, display_id=True)

    def refresh(self) -> None:
        """Redraw after a change: a widget redraws itself; a static figure is displayed again in place."""
        if self._handle is not None and not self.widget:
            self._handle.update(self._bundle(), raw=True)

    def finish(self) -> None:
        """Replace the live output with the static figure, so executed and exported notebooks keep it."""
        if self._handle is not None:
            self._handle.update(self._bundle(), raw=True)

    def _bundle(self) -> dict[str, object]:
        self._plotlyjs = self._plotlyjs or PLOTLYJS.claim()
        return static_bundle(self.figure, with_plotlyjs=self._plotlyjs)
