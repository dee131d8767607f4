"""Where does a model fit: a heatmap of the planner's verdict over batch size x context length."""

from __future__ import annotations

import plotly.graph_objects as go

from ascend_nb.figure_style import house_style
from ascend_nb.bench.planner import fit_grid
from ascend_nb.models.footprint import VERDICTS

VERDICT_COLOURS = {"fits": "#66bb6a", "tight": "#ffa726", "does not fit": "#ef5350"}


def fits_heatmap(model, device, dtype: str = "auto", quantize: str | None = None,
                 batch_sizes=(1, 2, 4, 8, 16, 32), seq_lens=None, tp: int = 1) -> go.Figure:
    """Green fits / amber tight / red does not fit, for every (batch, max_seq_len) of the grid;
    hovering shows the GB needed against the device's GB (:func:`ascend_nb.bench.planner.fit_grid`)."""
    grid = fit_grid(model, device, dtype, quantize, batch_sizes, seq_lens, tp)
    seq = sorted(grid["max_seq_len"].unique())
    batches = sorted(grid["batch_size"].unique())
    cell = {(r.batch_size, r.max_seq_len): r for r in grid.itertuples(index=False)}
    code = {verdict: i for i, verdict in enumerate(reversed(VERDICTS))}  # 0 does not fit .. 2 fits
    z = [[code[cell[b, s].verdict] for s in seq] for b in batches]
    text = [[f"{cell[b, s].verdict}: {cell[b, s].total_bytes / 1e9:.1f} of {cell[b, s].device_bytes / 1e9:.1f} GB"
             for s in seq] for b in batches]
    scale = [(0.0, VERDICT_COLOURS["does not fit"]), (0.33, VERDICT_COLOURS["does not fit"]),
             (0.34, VERDICT_COLOURS["tight"]), (0.66, VERDICT_COLOURS["tight"]),
             (0.67, VERDICT_COLOURS["fits"]), (1.0, VERDICT_COLOURS["fits"])]
    figure = go.Figure(go.Heatmap(z=z, x=[str(s) for s in seq], y=[str(b) for b in batches], text=text,
                                  hovertemplate="batch %{y}, max_seq_len %{x}<br>%{text}<extra></extra>",
                                  colorscale=scale, zmin=0, zmax=2, showscale=False, xgap=2, ygap=2))
    name = model if isinstance(model, str) else "model"
    label = f"{name} on {device}" + (f" (tp {tp}, per rank)" if tp > 1 else "")
    figure.update_layout(title=f"Does it fit? {label}, {dtype}{' ' + quantize if quantize else ''} "
                               "(green fits, amber tight, red does not)",
                         xaxis_title="max_seq_len (prompt + new tokens)", yaxis_title="batch size",
                         xaxis_type="category", yaxis_type="category", height=360)
    return house_style(figure, legend=False)
