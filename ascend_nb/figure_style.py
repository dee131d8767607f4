"""How every figure looks and how it leaves the kernel: one house style and one static output.

:func:`house_style` makes a figure fit the page it lands on: no fixed width (it follows the notebook
column, the file browser open or not), the legend in a row below the plot where nothing cuts it,
titles and colour-bar titles kept inside the figure. :func:`static_bundle` is what a finished figure
is saved as: plotly JSON for JupyterLab, HTML for exports and a text line. The HTML carries
plotly.js itself the first time a kernel shows a figure (about 4.7 MB, once per notebook run) and
refers to it afterwards, so an exported notebook draws every figure with no network: Ascend servers
are often offline, and a CDN script there leaves white space. Imported in a Jupyter kernel, this
module makes that bundle plotly's default renderer, so ``fig.show()`` and a figure left as a cell's
value are saved the same way.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import plotly.graph_objects as go
import plotly.io as pio
from plotly.basedatatypes import BaseFigure

from ascend_nb.progress import in_jupyter_kernel

PLOTLY_MIME = "application/vnd.plotly.v1+json"
RENDERER = "ascend_nb"
FONT = {"family": "Noto Sans, Noto Sans CJK SC, Arial, sans-serif", "size": 13}
HIDE_AMD = ("<script>if (typeof define === 'function' && define.amd) { window.__anbDefine = define; "
            "window.define = undefined; }</script>")
RESTORE_AMD = "<script>if (window.__anbDefine) { window.define = window.__anbDefine; delete window.__anbDefine; }</script>"
# a notebook without plotly.js says so instead of leaving white space
MISSING_PLOTLYJS = ("<script>if (typeof Plotly === 'undefined') {{ document.getElementById('{div}').innerText = "
                    "'plotly.js is not in this page: run the notebook from its first cell, then export it again'; }}"
                    "</script>")


def house_style(figure: BaseFigure, legend: bool = True) -> BaseFigure:
    """The house style, in place: responsive width, legend in a row below the plot (``legend=False``:
    none), titles and colour-bar titles that fit. Returns ``figure``."""
    figure.update_layout(width=None, autosize=True, font=FONT, title={"x": 0.01, "xanchor": "left"},
                         margin={"l": 60, "r": 30, "t": 80, "b": 60})
    if legend:  # at the foot of the whole figure, under the x-axis titles
        figure.update_layout(showlegend=True, margin={"b": 110},
                             legend={"orientation": "h", "x": 0, "xanchor": "left", "yref": "container", "y": 0.01,
                                     "yanchor": "bottom", "title": {"text": ""}})
    else:
        figure.update_layout(showlegend=False)
    figure.update_xaxes(automargin=True)
    figure.update_yaxes(automargin=True)
    for trace in figure.data:
        colorbar = getattr(trace, "colorbar", None)
        if colorbar is not None and colorbar.title.text:
            colorbar.title.side = "right"  # a long title runs along the bar instead of being cut at its top
    return figure


@dataclass
class _PlotlyJs:
    """Whether this kernel has already put plotly.js into a saved output."""

    sent: bool = False

    def claim(self) -> bool:
        """True for the first caller only: that output carries plotly.js."""
        first, self.sent = not self.sent, True
        return first


PLOTLYJS = _PlotlyJs()


def static_bundle(figure: BaseFigure | dict, with_plotlyjs: bool | None = None) -> dict[str, object]:
    """The output bundle of a finished figure: plotly JSON, HTML that draws offline, and a text line.

    ``with_plotlyjs``: whether the HTML carries plotly.js (None: if no output of this kernel has yet)."""
    figure = figure if isinstance(figure, BaseFigure) else go.Figure(figure)
    carry = PLOTLYJS.claim() if with_plotlyjs is None else with_plotlyjs
    spec = json.loads(pio.to_json(figure, validate=False))
    div = f"anb-{uuid.uuid4().hex[:12]}"
    html = pio.to_html(figure, include_plotlyjs=carry, full_html=False, div_id=div, default_width="100%",
                       config={"responsive": True, "displaylogo": False})
    if carry:  # a page with require.js (nbconvert's) would take plotly.js as an AMD module, not window.Plotly
        html = HIDE_AMD + html + RESTORE_AMD
    title = figure.layout.title.text or "plotly figure"
    return {PLOTLY_MIME: {"data": spec.get("data", []), "layout": spec.get("layout", {})},
            "text/html": html + MISSING_PLOTLYJS.format(div=div),
            "text/plain": f"<figure: {title}>"}


class _StaticRenderer(pio.base_renderers.MimetypeRenderer):
    """plotly's renderer interface around :func:`static_bundle`."""

    def to_mimebundle(self, fig_dict: dict) -> dict[str, object]:
        return static_bundle(fig_dict)


pio.renderers[RENDERER] = _StaticRenderer()
if in_jupyter_kernel():
    pio.renderers.default = RENDERER
