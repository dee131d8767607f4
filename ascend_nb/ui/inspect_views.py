"""Plotly views of :mod:`ascend_nb.inspect`: tokens, the live next-token chart, attention, logit lens,
the anatomy of a decode step and layer drift.

:class:`NextTokenView` is live: its bars follow a reply as it is generated, and its sliders
(temperature, top-k, top-p, repetition penalty) grey out exactly the tokens the sampler would drop
under those settings (:func:`ascend_nb.engine.sampling.kept_tokens`, the sampler's own code). In a
Jupyter kernel it is a plotly ``FigureWidget``; without a widget frontend (``widget=False``) a plain
figure re-rendered through ``display(..., display_id=True)``. The other views are plain figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ascend_nb.figure_style import house_style
from ascend_nb.models.params import GenerationParams
from ascend_nb.inspect.anatomy import OP_CLASSES
from ascend_nb.inspect.token_split import byte_notation
from ascend_nb.inspect.layer_drift import first_departure
from ascend_nb.inspect.lens import answer_layers
from ascend_nb.inspect.next_token import Step, entropy_bits, next_token_steps, step_candidates
from ascend_nb.ui.figures import widget_frontend_likely

KEPT_COLOR = "#1c7ed6"
DROPPED_COLOR = "#ced4da"
CHOSEN_COLOR = "#d6336c"
CLASS_COLORS = dict(zip(OP_CLASSES, ("#1c7ed6", "#f76707", "#37b24d", "#ae3ec9", "#f59f00", "#868e96")))


def label(text: str) -> str:
    """A token as it can be read on an axis: spaces and newlines made visible."""
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅"


# -- tokens --------------------------------------------------------------------------------------
def tokens_figure(frame: pd.DataFrame, title: str = "Tokens") -> go.Figure:
    """One row per tokenizer, one cell per token (its text, or its piece when it is only part of a
    character); byte pieces in orange."""
    names = list(dict.fromkeys(frame["tokenizer"]))
    width = int(frame.groupby("tokenizer").size().max())
    z, text, hover = [], [], []
    for name in names:
        rows = frame[frame["tokenizer"] == name]
        pad = width - len(rows)
        z.append([int(b) for b in rows["byte_fallback"]] + [None] * pad)
        text.append([label(t) if t else (byte_notation(p) or p) for t, p in zip(rows["text"], rows["piece"])] + [""] * pad)
        hover.append([f"id {i} · piece {p!r}" for i, p in zip(rows["token_id"], rows["piece"])] + [""] * pad)
    figure = go.Figure(go.Heatmap(z=z, text=text, customdata=hover, texttemplate="%{text}", y=names, zmin=0, zmax=1,
                                  colorscale=[[0, "#d0ebff"], [1, "#ffc078"]], showscale=False, xgap=2, ygap=4,
                                  hovertemplate="%{y} #%{x}: %{customdata}<extra></extra>"))
    figure.update_layout(title=title, height=160 + 60 * len(names), xaxis={"title": "token index"},
                         yaxis={"autorange": "reversed"})
    return house_style(figure, legend=False)


def token_stats_figure(stats: pd.DataFrame, title: str = "Tokens per character") -> go.Figure:
    """Grouped bars of :func:`ascend_nb.inspect.token_stats`: tokens per character per text and tokenizer."""
    figure = go.Figure()
    for name, group in stats.groupby("tokenizer", sort=False):
        figure.add_bar(x=group["text"], y=group["tokens_per_char"], name=str(name), text=group["tokens"],
                       texttemplate="%{y:.2f} (%{text} tokens)", textposition="outside")
    figure.update_layout(title=title, barmode="group", height=380, yaxis={"title": "tokens per character"})
    return house_style(figure)


# -- next token, live ------------------------------------------------------------------------------
def _slider(kind, description: str, value, low, high, step):
    return kind(value=value, min=low, max=high, step=step, description=description, continuous_update=False,
                style={"description_width": "initial"}, layout=widgets.Layout(width="260px"))


class NextTokenView:
    """The top-``top_k`` next-token probabilities of a reply, live, with the entropy of every step.

    ``run(prompt)`` generates under ``params`` and moves the bars at every token. The sliders set the
    sampler settings the shading shows (temperature 0 means greedy: only the argmax is kept); the
    step slider picks which step to look at. Bars are the model's probabilities; diamonds are what the
    sampler gives each token under the slider settings (0 when dropped); the chosen token is outlined.
    """

    def __init__(self, engine, params: GenerationParams | None = None, top_k: int = 20, widget: bool | None = None):
        self.engine = engine
        self.params = engine.params(params)
        self.top_k = top_k
        self.widget = widget_frontend_likely() if widget is None else widget
        self.steps: list[Step] = []
        self.entropy: list[float] = []
        figure = make_subplots(rows=1, cols=2, column_widths=[0.72, 0.28], horizontal_spacing=0.08,
                               subplot_titles=("next-token probabilities", "entropy per step (bits)"))
        figure.add_trace(go.Bar(x=[], y=[], name="model probability", marker={"color": [], "line": {"width": []}},
                                hovertemplate="%{customdata}: %{y:.4f}<extra></extra>"), row=1, col=1)
        figure.add_trace(go.Scatter(x=[], y=[], mode="markers", name="sampler probability",
                                    marker={"symbol": "diamond", "color": "#212529", "size": 8},
                                    hovertemplate="sampler: %{y:.4f}<extra></extra>"), row=1, col=1)
        figure.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name="entropy", showlegend=False,
                                    line={"color": "#495057"}), row=1, col=2)
        figure.add_trace(go.Scatter(x=[], y=[], mode="markers", name="this step", showlegend=False,
                                    marker={"color": CHOSEN_COLOR, "size": 11}), row=1, col=2)
        figure.update_layout(height=440, title="next token")
        house_style(figure)
        figure.update_yaxes(title_text="probability", range=[0, 1], row=1, col=1)
        figure.update_xaxes(title_text="step", row=1, col=2)
        self.figure = go.FigureWidget(figure) if self.widget else figure
        sampling = self.params.do_sample
        self.temperature = _slider(widgets.FloatSlider, "temperature", self.params.temperature if sampling else 0.0,
                                   0.0, 2.0, 0.05)
        self.top_k_slider = _slider(widgets.IntSlider, "top-k (0: off)", self.params.top_k, 0, 100, 1)
        self.top_p = _slider(widgets.FloatSlider, "top-p", self.params.top_p, 0.05, 1.0, 0.01)
        self.repetition = _slider(widgets.FloatSlider, "repetition penalty", self.params.repetition_penalty,
                                  1.0, 2.0, 0.01)
        self.step_slider = _slider(widgets.IntSlider, "step", 0, 0, 0, 1)
        self.status = widgets.HTML()
        for control in (self.temperature, self.top_k_slider, self.top_p, self.repetition, self.step_slider):
            control.observe(lambda _change: self.redraw(), names="value")
        self._handle = None

    def sampler_params(self) -> GenerationParams:
        """The sampler settings of the sliders (temperature 0: greedy)."""
        temperature = float(self.temperature.value)
        return self.params.replace(do_sample=temperature > 0, temperature=temperature if temperature > 0 else 1.0,
                                   top_k=int(self.top_k_slider.value), top_p=float(self.top_p.value),
                                   repetition_penalty=float(self.repetition.value))

    def set_sampler(self, temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                    repetition_penalty: float | None = None) -> None:
        """Move the sliders from code (what a user does by dragging them)."""
        for control, value in ((self.temperature, temperature), (self.top_k_slider, top_k), (self.top_p, top_p),
                               (self.repetition, repetition_penalty)):
            if value is not None:
                control.value = value

    def show(self) -> NextTokenView:
        """Display the sliders and the figure (once, before :meth:`run`)."""
        from IPython.display import display

        controls = widgets.VBox([widgets.HBox([self.temperature, self.top_k_slider]),
                                 widgets.HBox([self.top_p, self.repetition]),
                                 widgets.HBox([self.step_slider, self.status])])
        if self.widget:
            display(widgets.VBox([controls, self.figure]).add_class("anb-next-token"))
        else:
            display(controls)
            self._handle = display(self.figure, display_id=True)
        return self

    def run(self, prompt: str | Sequence[int], params: GenerationParams | None = None, **overrides) -> pd.DataFrame:
        """Generate a reply to ``prompt`` (text or ids), following it step by step; return :meth:`frame`."""
        self.steps, self.entropy = [], []
        for step in next_token_steps(self.engine, prompt, self.engine.params(params or self.params, **overrides)):
            self.steps.append(step)
            self.entropy.append(entropy_bits(step.logits))
            self.step_slider.max = step.step
            self.step_slider.value = step.step  # redraws (or redraw below when the value did not change)
            if step.step == 0:
                self.redraw()
        return self.frame()

    def candidates(self, index: int | None = None) -> pd.DataFrame:
        """:func:`~ascend_nb.inspect.step_candidates` of one step (default: the one shown) under the sliders."""
        step = self.steps[self.step_slider.value if index is None else index]
        return step_candidates(step, self.sampler_params(), self.engine.tokenizer, self.top_k)

    def frame(self) -> pd.DataFrame:
        """Every step's candidates under the slider settings."""
        frames = [self.candidates(i) for i in range(len(self.steps))]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def redraw(self) -> None:
        """Draw the step of the step slider under the sampler settings of the other sliders."""
        if not self.steps:
            return
        table = self.candidates()
        index = self.step_slider.value
        chosen = table.loc[table["chosen"], "token"].iloc[0]
        kept = int(table["kept_count"].iloc[0])
        ranks, labels = list(range(len(table))), table["token"].map(label).tolist()
        bars, sampler, line, dot = self.figure.data
        with self.figure.batch_update():
            bars.update(x=ranks, y=table["prob"].tolist(), customdata=labels,
                        marker={"color": [KEPT_COLOR if k else DROPPED_COLOR for k in table["kept"]],
                                "line": {"width": [3 if c else 0 for c in table["chosen"]], "color": CHOSEN_COLOR}})
            sampler.update(x=ranks, y=table["sampler_prob"].tolist())
            line.update(x=list(range(len(self.entropy))), y=self.entropy)
            dot.update(x=[index], y=[self.entropy[index]])
            self.figure.layout.xaxis.update(tickvals=ranks, ticktext=labels, tickangle=-45)
            self.figure.layout.title.text = (f"step {index}: picked {label(chosen)!r} · the sampler keeps {kept} "
                                             f"of {self.steps[index].logits.numel()} tokens")
        self.status.value = f"<code>{len(self.steps)} steps</code>"
        if self._handle is not None:
            self._handle.update(self.figure)


# -- attention, logit lens -------------------------------------------------------------------------
def attention_figure(frame: pd.DataFrame, layer: int | None = None, title: str | None = None) -> go.Figure:
    """Query x key heatmap of one layer of :func:`ascend_nb.inspect.attention`, with a head picker
    (the buttons above the map); ``layer`` defaults to the first in the frame."""
    layer = int(frame["layer"].min()) if layer is None else layer
    rows = frame[frame["layer"] == layer]
    heads = sorted(rows["head"].unique())
    t = int(rows["query"].max()) + 1
    tokens = rows.drop_duplicates("key").sort_values("key")["key_token"].map(label).tolist()  # one per position
    axis = [f"{i}:{tok}" for i, tok in enumerate(tokens)]
    maps = [rows[rows["head"] == h].sort_values(["query", "key"])["weight"].to_numpy().reshape(t, t) for h in heads]
    figure = go.Figure(go.Heatmap(z=maps[0], x=axis, y=axis, colorscale="Blues", zmin=0, zmax=1,
                                  colorbar={"title": {"text": "weight"}},
                                  hovertemplate="query %{y} → key %{x}: %{z:.3f}<extra></extra>"))
    buttons = [{"label": f"head {h}", "method": "restyle", "args": [{"z": [m]}]} for h, m in zip(heads, maps)]
    figure.update_layout(title=title or f"attention, layer {layer} (pick a head above the map)",
                         height=max(480, 26 * t + 260),
                         updatemenus=[{"buttons": buttons, "type": "dropdown", "x": 1.0, "xanchor": "right", "y": 1.12}],
                         xaxis={"title": "key (attended to)", "tickangle": -45, "type": "category"},
                         yaxis={"title": "query", "autorange": "reversed", "type": "category"})
    return house_style(figure, legend=False)


def logit_lens_figure(lens: pd.DataFrame, title: str = "Logit lens: the top token after each layer") -> go.Figure:
    """Layer x position heatmap of the lens probability with the top token written in each cell; a
    ring marks, per position, the layer where the final answer first appears and stays."""
    layers = sorted(lens["layer"].unique())
    positions = sorted(lens["position"].unique())
    grid = lens.pivot(index="layer", columns="position", values="prob").reindex(index=layers, columns=positions)
    text = lens.pivot(index="layer", columns="position", values="token").reindex(index=layers, columns=positions)
    inputs = lens[lens["layer"] == layers[0]].sort_values("position")["input_token"].map(label).tolist()
    x = [f"{p}:{tok}" for p, tok in zip(positions, inputs)]
    figure = go.Figure(go.Heatmap(z=grid.to_numpy(), x=x, y=layers, text=text.map(label).to_numpy(),
                                  texttemplate="%{text}", textfont={"size": 12}, colorscale="Viridis", zmin=0, zmax=1,
                                  colorbar={"title": {"text": "probability"}}, xgap=1, ygap=1,
                                  hovertemplate="layer %{y}, after %{x}: %{text} (%{z:.3f})<extra></extra>"))
    answers = answer_layers(lens)
    figure.add_trace(go.Scatter(x=[x[positions.index(p)] for p in answers["position"]], y=answers["first_layer"],
                                mode="markers", name="answer appears",
                                marker={"symbol": "circle-open", "size": 16, "color": CHOSEN_COLOR,
                                        "line": {"width": 2}}))
    figure.update_layout(title=title, height=max(480, 24 * len(layers) + 200),
                         xaxis={"title": "position (input token)", "tickangle": -45}, yaxis={"title": "layer"})
    return house_style(figure)


# -- one decode step -------------------------------------------------------------------------------
def anatomy_figure(anatomy: pd.DataFrame, memory: pd.DataFrame | None = None,
                   title: str = "Inside one prefill and one decode step") -> go.Figure:
    """Stacked operator time per class for prefill vs one decode step; beside it (with ``memory``, from
    :func:`ascend_nb.inspect.decode_memory`) the memory floor of a decode step against the measured one."""
    panels = 2 if memory is not None else 1
    titles = ("operator time by class (ms)", "one decode step: bytes over bandwidth vs measured")[:panels]
    figure = make_subplots(rows=1, cols=panels, subplot_titles=titles, horizontal_spacing=0.12)
    for op_class in OP_CLASSES:
        rows = anatomy[anatomy["op_class"] == op_class]
        figure.add_bar(x=rows["phase"], y=rows["ms"], name=op_class, marker_color=CLASS_COLORS[op_class],
                       customdata=rows["share"],
                       hovertemplate=op_class + ": %{y:.3f} ms (%{customdata:.0%})<extra></extra>",
                       row=1, col=1)
    if memory is not None:
        items = memory.set_index("item")["ms"]
        weights, kv, tpot = items.iloc[0], items.iloc[1], items.iloc[3]
        bandwidth = memory["bandwidth_gbs"].iloc[0]
        x = ["floor at bandwidth", "measured"]
        for name, y, color in (("read weights", [weights, 0], "#495057"), ("read KV cache", [kv, 0], "#adb5bd"),
                               ("decode step (TPOT)", [0, tpot], CHOSEN_COLOR)):
            figure.add_bar(x=x, y=y, name=name, marker_color=color, row=1, col=2)
        figure.update_yaxes(title_text=f"ms per token ({bandwidth:.0f} GB/s)", row=1, col=2)
    figure.update_layout(title=title, barmode="stack", height=430)
    figure.update_yaxes(title_text="ms", row=1, col=1)
    return house_style(figure)


# -- drift -----------------------------------------------------------------------------------------
def drift_figure(frame: pd.DataFrame, title: str = "Drift between two engines") -> go.Figure:
    """Layer x position heatmaps of Cosine and MaxAbsErr (:func:`ascend_nb.inspect.drift`); a dashed
    line marks the first layer that leaves the msprobe thresholds."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Cosine", "MaxAbsErr"), horizontal_spacing=0.2)
    names = frame.drop_duplicates("layer").sort_values("layer")["tensor"].tolist()
    for col, column, scale in ((1, "cosine", "RdBu"), (2, "max_abs_err", "Reds")):
        grid = frame.pivot(index="layer", columns="position", values=column)
        figure.add_trace(go.Heatmap(z=grid.to_numpy(), x=list(grid.columns), y=names, colorscale=scale,
                                    colorbar={"x": 0.41 if col == 1 else 1.0, "len": 0.9},
                                    hovertemplate="%{y}, position %{x}: %{z:.6g}<extra>" + column + "</extra>"),
                         row=1, col=col)
    departure = first_departure(frame)
    note = ("every tensor within the thresholds" if departure is None
            else f"first outside the thresholds: {names[departure]}")
    if departure is not None:
        for col in (1, 2):
            figure.add_hline(y=names[departure], line_dash="dash", line_color=CHOSEN_COLOR, row=1, col=col)
    figure.update_layout(title=f"{title} · {note}", height=max(420, 16 * len(names) + 160))
    figure.update_xaxes(title_text="position")
    return house_style(figure, legend=False)
