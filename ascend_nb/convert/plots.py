"""The verification figure: per-position Cosine and MaxAbsErr of original vs converted logits."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ascend_nb.figure_style import house_style
from ascend_nb.convert.verify import VerifyReport


def verification_figure(report: VerifyReport, title: str | None = None) -> go.Figure:
    """Two panels over token positions: Cosine (with its threshold) and MaxAbsErr (log scale, with its
    threshold); positions where the greedy token differs are marked with an x."""
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                           subplot_titles=("Cosine of the logits", "MaxAbsErr of the logits"))
    for prompt, rows in report.table.groupby("prompt"):
        hover = [f"token {t} · top-1 {a} vs {b}" for t, a, b in zip(rows.token_id, rows.reference_top1, rows.converted_top1)]
        symbols = ["circle" if agree else "x" for agree in rows.agree]
        for row, column in ((1, "cosine"), (2, "max_abs_err")):
            figure.add_trace(go.Scatter(x=rows.position, y=rows[column], mode="lines+markers", name=f"prompt {prompt}",
                                        legendgroup=str(prompt), showlegend=row == 1, text=hover,
                                        marker={"symbol": symbols, "size": 8}), row=row, col=1)
    figure.add_hline(y=report.tolerance.min_cosine, line_dash="dot", line_color="red", row=1, col=1,
                     annotation_text=f"min {report.tolerance.min_cosine}")
    figure.add_hline(y=report.tolerance.max_abs_err, line_dash="dot", line_color="red", row=2, col=1,
                     annotation_text=f"max {report.tolerance.max_abs_err}")
    figure.update_yaxes(type="log", row=2, col=1)
    figure.update_xaxes(title_text="token position", row=2, col=1)
    figure.update_layout(height=540, title=title or report.summary().split(" [")[0])
    return house_style(figure)
