"""Speculative decoding, shown live: the reply as it grows with every drafted token marked, the acceptance and
tokens per pass of the weights over the steps, the speed against plain decoding on the same prompt, and why a
pass that checks k drafted tokens costs about one plain step at batch 1.

:class:`SpeculativeView` follows :func:`ascend_nb.engine.speculative.watch` step by step. The text panel marks
drafted tokens the target accepted (green) and rejected (red, struck through, shown where they were proposed,
before the target's own token that replaced them); the target's own tokens are plain. The figure
(:class:`SpeculativePlot`, a :class:`~ascend_nb.ui.perf_plots.LiveFigure`: live while it runs, a static plotly
output once finished, so executed and exported notebooks draw it offline) has three panels: tokens per step
(accepted + rejected drafts stacked on the target's one token, with the running mean), the acceptance rate
(running and per step), and the time of each step against the positions it checked, beside the memory floor
of one pass (weights + KV cache over the measured bandwidth, :func:`ascend_nb.bench.roofline_model.roofline`).

The live run is not what the speed comparison times: drawing happens between steps of the generator, on the
clock. The comparison runs the same prompt plain and speculative with the same parameters (greedy by default,
so both decode the same tokens) in alternating rounds without drawing, and reports median decode tokens/s
(:class:`SpeculativeReport`).
"""

from __future__ import annotations

import html
import statistics
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ascend_nb.bench.roofline_model import Roofline, roofline
from ascend_nb.errors import AscendNbError
from ascend_nb.figure_style import house_style
from ascend_nb.models.params import GenerationParams, GenerationResult, SpeculativeStats, SpeculativeStep
from ascend_nb.ui.perf_plots import LiveFigure

ACCEPTED_COLOR, REJECTED_COLOR, TARGET_COLOR = "#2f9e44", "#e03131", "#868e96"
STYLES = {  # inline, so the marks survive JupyterLab's sanitizer, nbconvert and nbviewer alike
    "accepted": "background:#d3f9d8;color:#2b8a3e;border-radius:3px",
    "rejected": "background:#ffe3e3;color:#c92a2a;text-decoration:line-through;border-radius:3px",
    "target": "",
}
KIND_TITLES = {"accepted": "drafted, accepted", "rejected": "drafted, rejected", "target": "the model's own token"}
WARMUP_TOKENS = 16  # the untimed run before the live one
REFRESH_S = 0.05  # the text panel redraws at most this often while the reply grows
FIGURE_REFRESH_S = {True: 0.1, False: 1.0}  # widget: a small update; static: the whole figure is sent again


def builtin_prompt(name: str) -> str:
    """The prompt text of a built-in prompt (an ``id`` of ``data/grounded_prompts/grounded.jsonl`` or
    ``open.jsonl``, e.g. ``g03-bakery-edit``); any other text is returned as the prompt itself."""
    from ascend_nb.bench.run import SPECULATIVE_DATASETS, speculative_prompts

    for dataset in SPECULATIVE_DATASETS:
        for prompt in speculative_prompts(dataset):
            if prompt["id"] == name:
                return prompt["prompt"]
    if name.strip() and any(c.isspace() for c in name.strip()):
        return name
    ids = [p["id"] for d in SPECULATIVE_DATASETS for p in speculative_prompts(d)]
    raise AscendNbError(f"no built-in prompt {name!r}: use one of {', '.join(ids)} or write the prompt itself")


# -- the marked text ---------------------------------------------------------------------------------------
@dataclass
class Mark:
    """One token as the text panel shows it: its text, ``kind`` (accepted / rejected / target) and its step."""

    piece: str
    kind: str
    step: int


class TokenMarks:
    """The reply's tokens with their marks, built step by step; each piece is the text a token adds to the
    decoded reply (so a character split over byte tokens lands on the token that completes it)."""

    def __init__(self, decode, eos_ids: Sequence[int] = (), ignore_eos: bool = False):
        self._decode, self._eos, self._ignore_eos = decode, set(eos_ids), ignore_eos
        self.ids: list[int] = []
        self.text = ""
        self.marks: list[Mark] = []
        self.finished = False

    def _text(self, ids: list[int]) -> str:
        return self._decode(ids).rstrip("\ufffd")

    @staticmethod
    def _added(before: str, after: str) -> str:
        if after.startswith(before):
            return after[len(before):]
        common = 0
        for a, b in zip(before, after):
            if a != b:
                break
            common += 1
        return after[common:]

    def _keep(self, token: int, kind: str, step: int) -> None:
        if self.finished:
            return
        if token in self._eos and not self._ignore_eos:  # the reply ends here, EOS is not part of its text
            self.finished = True
            return
        self.ids.append(token)
        text = self._text(self.ids)
        self.marks.append(Mark(self._added(self.text, text), kind, step))
        self.text = text

    def first(self, token: int) -> None:
        """The first token (from the prompt's pass)."""
        self._keep(token, "target", 0)

    def step(self, step: SpeculativeStep, index: int) -> None:
        """One decode step: accepted drafts, rejected drafts (shown, not kept), then the target's own token."""
        for token in step.accepted:
            self._keep(token, "accepted", index)
        if step.rejected and not self.finished:
            before = self.text
            ids = list(self.ids)
            for token in step.rejected:
                ids.append(token)
                text = self._text(ids)
                self.marks.append(Mark(self._added(before, text), "rejected", index))
                before = text
        self._keep(step.token, "target", index)


def _span(mark: Mark) -> str:
    piece = mark.piece.replace("\n", "↵") if mark.kind == "rejected" else mark.piece  # a struck newline stays visible
    style = f' style="{STYLES[mark.kind]}"' if STYLES[mark.kind] else ""
    return (f'<span class="anb-spec-{mark.kind}"{style} title="step {mark.step}: {KIND_TITLES[mark.kind]}">'
            f"{html.escape(piece)}</span>")


def legend_html() -> str:
    return ('<div class="anb-spec-legend" style="font-size:12px;color:#555;margin-bottom:4px">'
            + " · ".join(_span(Mark(title, kind, 0)).replace(' title="step 0: ', ' title="')
                         for kind, title in (("accepted", "drafted, accepted"), ("rejected", "drafted, rejected"),
                                             ("target", "the model's own token")))
            + "</div>")


def summary_line(stats: SpeculativeStats, tokens: int) -> str:
    """``12 steps · 30 tokens · 18 of 25 drafted tokens accepted (72 %) · 2.50 tokens per step``."""
    return (f"{len(stats.steps)} steps · {tokens} tokens · {stats.accepted} of {stats.drafted} drafted tokens accepted "
            f"({stats.acceptance_rate:.0%}) · {stats.tokens_per_step:.2f} tokens per step")


def marks_html(marks: Sequence[Mark], summary: str = "", running: bool = False) -> str:
    """The text panel: a legend, the reply with every token marked, and a summary line."""
    cursor = '<span class="anb-spec-cursor" style="color:#adb5bd">▌</span>' if running else ""
    body = "".join(_span(m) for m in marks)
    return (f'<div class="anb-spec">{legend_html()}'
            '<div class="anb-spec-text" style="white-space:pre-wrap;line-height:1.6;font-family:var(--jp-code-font-family,'
            'monospace);font-size:13px;border:1px solid #dee2e6;border-radius:4px;padding:8px;max-height:420px;'
            f'overflow:auto">{body}{cursor}</div>'
            f'<div class="anb-spec-summary" style="font-size:12px;color:#555;margin-top:4px">{html.escape(summary)}</div>'
            "</div>")


# -- the figure --------------------------------------------------------------------------------------------
class SpeculativePlot(LiveFigure):
    """Tokens per step and acceptance over the decode steps, and each step's time against the positions it
    checked next to the memory floor of one pass (``floor_ms``, with ``floor_note`` saying where it comes from).
    Rows: ``step``, ``accepted``, ``rejected``, ``step_ms`` (see :meth:`SpeculativeView.run`)."""

    def __init__(self, rows=(), widget: bool | None = None, title: str = "Speculative decoding",
                 floor_ms: float | None = None, floor_note: str = ""):
        self.title = title
        figure = make_subplots(rows=2, cols=2, column_widths=[0.62, 0.38], shared_xaxes="columns",
                               specs=[[{}, {"rowspan": 2}], [{}, None]], vertical_spacing=0.1, horizontal_spacing=0.1,
                               subplot_titles=("tokens per step (one pass of the weights)", "time of one step",
                                               "drafted tokens accepted"))
        bars = (("the model's own token", TARGET_COLOR), ("accepted drafts", ACCEPTED_COLOR),
                ("rejected drafts", REJECTED_COLOR))
        for name, color in bars:
            figure.add_trace(go.Bar(x=[], y=[], name=name, marker={"color": color},
                                    opacity=0.55 if color == REJECTED_COLOR else 1.0,
                                    hovertemplate="step %{x}: %{y} " + name + "<extra></extra>"), row=1, col=1)
        figure.add_trace(go.Scatter(x=[], y=[], mode="lines", name="tokens per step (running)",
                                    line={"color": "#212529", "width": 2},
                                    hovertemplate="after step %{x}: %{y:.2f} tokens per step<extra></extra>"),
                         row=1, col=1)
        figure.add_trace(go.Scatter(x=[], y=[], mode="lines", name="acceptance (running)", showlegend=False,
                                    line={"color": ACCEPTED_COLOR, "width": 2},
                                    hovertemplate="after step %{x}: %{y:.0f} % accepted<extra></extra>"), row=2, col=1)
        figure.add_trace(go.Scatter(x=[], y=[], mode="markers", name="acceptance of one step", showlegend=False,
                                    marker={"color": ACCEPTED_COLOR, "size": 6, "opacity": 0.5},
                                    hovertemplate="step %{x}: %{y:.0f} % of its drafts accepted<extra></extra>"),
                         row=2, col=1)
        figure.add_trace(go.Scatter(x=[], y=[], mode="markers", name="one step", marker={"color": "#1c7ed6", "size": 7,
                                                                                         "opacity": 0.55},
                                    customdata=[], hovertemplate="step %{customdata}: %{x} positions, %{y:.2f} ms"
                                    "<extra></extra>"), row=1, col=2)
        figure.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name="median by positions checked",
                                    line={"color": "#1c7ed6"}, marker={"symbol": "diamond", "size": 10}),
                         row=1, col=2)
        self.floor_ms = floor_ms
        if floor_ms:
            figure.add_hline(y=floor_ms, line_dash="dash", line_color="#495057", row=1, col=2,
                             annotation_text=f"memory floor of one pass: {floor_ms:.2f} ms",
                             annotation_position="top left", annotation_font_size=11)
        subtitle = "green: drafts the target kept · red: drafts it rejected · one step = one pass of the weights"
        if floor_note:
            subtitle += f" · floor: {floor_note}"
        figure.update_layout(title={"text": title, "subtitle": {"text": subtitle, "font": {"size": 11, "color": "#555"}}},
                             height=560, barmode="stack", bargap=0.15)
        house_style(figure)
        figure.update_layout(margin={"t": 110})
        figure.update_yaxes(title_text="tokens", rangemode="tozero", row=1, col=1)
        figure.update_xaxes(title_text="decode step", row=2, col=1)
        figure.update_yaxes(title_text="acceptance (%)", range=[-5, 105], row=2, col=1)
        figure.update_xaxes(title_text="positions checked in one pass (k + 1)", dtick=1, row=1, col=2)
        figure.update_yaxes(title_text="ms per step", rangemode="tozero", row=1, col=2)
        super().__init__(figure, rows, widget)

    def add(self, row, refresh: bool = True) -> None:
        """Add one step's row; redraw now only with ``refresh`` (else at the next refresh or :meth:`finish`)."""
        self.rows.append(dict(row))
        if refresh:
            self.redraw()

    def redraw(self) -> None:
        self._render()
        self._display.refresh()

    def finish(self) -> None:
        self._render()
        super().finish()

    def _render(self) -> None:
        rows = [r for r in self.rows if r.get("step", 0) > 0]  # decode steps (step 0: the prompt's pass)
        steps = [r["step"] for r in rows]
        accepted = [r["accepted"] for r in rows]
        rejected = [r["rejected"] for r in rows]
        running, tokens, rate, drafted, kept = [], 0, [], 0, 0
        for i, (a, r) in enumerate(zip(accepted, rejected), start=1):
            tokens += a + 1
            drafted, kept = drafted + a + r, kept + a
            running.append(tokens / i)
            rate.append(100 * kept / drafted if drafted else None)
        drafted_steps = [(s, 100 * a / (a + r)) for s, a, r in zip(steps, accepted, rejected) if a + r]
        positions = [a + r + 1 for a, r in zip(accepted, rejected)]
        times = [r.get("step_ms") for r in rows]
        by_rows: dict[int, list[float]] = {}
        for p, ms in zip(positions, times):
            if ms is not None:
                by_rows.setdefault(p, []).append(ms)
        medians = sorted((p, statistics.median(v)) for p, v in by_rows.items())
        data = self.figure.data
        with self.figure.batch_update():
            data[0].update(x=steps, y=[1] * len(steps))
            data[1].update(x=steps, y=accepted)
            data[2].update(x=steps, y=rejected)
            data[3].update(x=steps, y=running)
            data[4].update(x=steps, y=rate)
            data[5].update(x=[s for s, _ in drafted_steps], y=[v for _, v in drafted_steps])
            data[6].update(x=positions, y=times, customdata=steps)
            data[7].update(x=[p for p, _ in medians], y=[ms for _, ms in medians])
            if rows:
                self.figure.layout.title.text = (f"{self.title} · step {steps[-1]} · {running[-1]:.2f} tokens per step · "
                                                 f"{(rate[-1] or 0):.0f} % accepted")


# -- the comparison and its explanation ---------------------------------------------------------------------
@dataclass
class SpeculativeReport:
    """What :meth:`SpeculativeView.run` found: the live run (its marks, stats and per-step rows) and the timed
    rounds of plain and speculative decoding on the same prompt (``plain`` / ``speculative`` results)."""

    method: str
    text: str
    marks: list[Mark]
    stats: SpeculativeStats
    steps: pd.DataFrame
    plain: list[GenerationResult] = field(default_factory=list)
    speculative: list[GenerationResult] = field(default_factory=list)
    ceiling: Roofline | None = None
    sampled: bool = False

    @staticmethod
    def _median(results: list[GenerationResult], key) -> float:
        values = [key(r) for r in results]
        return float(statistics.median(values)) if values else float("nan")

    @property
    def plain_tokens_per_s(self) -> float:
        """Median decode tokens/s (1000 / TPOT) of the plain rounds."""
        return self._median(self.plain, lambda r: r.timings.tokens_per_s)

    @property
    def speculative_tokens_per_s(self) -> float:
        return self._median(self.speculative, lambda r: r.timings.tokens_per_s)

    @property
    def speedup(self) -> float:
        """Speculative decode tokens/s over plain decode tokens/s (medians over the rounds)."""
        plain = self.plain_tokens_per_s
        return self.speculative_tokens_per_s / plain if plain > 0 else float("nan")

    @property
    def same_text(self) -> bool | None:
        """Whether every speculative round decoded exactly the plain tokens (None without rounds)."""
        if not self.plain or not self.speculative:
            return None
        return all(s.token_ids == self.plain[0].token_ids for s in self.speculative)

    def speed(self) -> pd.DataFrame:
        """Plain against speculative: tokens, TTFT, TPOT, decode tokens/s (medians), tokens per step and acceptance
        of the speculative rounds, and the ratio to plain."""
        rows = {}
        for mode, results in (("plain", self.plain), (f"speculative ({self.method})", self.speculative)):
            if not results:
                continue
            spec = [r.speculative for r in results if r.speculative is not None]
            rows[mode] = {"tokens": results[0].timings.tokens,
                          "TTFT (ms)": self._median(results, lambda r: r.timings.ttft_ms),
                          "TPOT (ms)": self._median(results, lambda r: r.timings.tpot_ms),
                          "decode tokens/s": self._median(results, lambda r: r.timings.tokens_per_s),
                          "tokens per step": statistics.median(s.tokens_per_step for s in spec) if spec else 1.0,
                          "acceptance": statistics.median(s.acceptance_rate for s in spec) if spec else float("nan")}
        frame = pd.DataFrame.from_dict(rows, orient="index")
        if len(frame) == 2:
            frame["vs plain"] = frame["decode tokens/s"] / frame["decode tokens/s"].iloc[0]
        return frame.rename_axis("decoding")

    def _rounds_note(self) -> str:
        """``median of 3 rounds; the same text token for token``."""
        same = {True: "the same text token for token", False: "a different text", None: ""}[self.same_text]
        if self.sampled:
            same = "sampled: the texts may differ, the distribution is the same"
        rounds = len(self.plain)
        return f"median of {rounds} round{'s' if rounds > 1 else ''}; {same}"

    def speed_line(self) -> str:
        """``prompt-lookup: 1.62× plain decoding (143.0 vs 88.2 decode tokens/s, median of 3 rounds; the same text
        token for token)``."""
        if not self.plain or not self.speculative:
            return "no timed rounds: run with compare_plain=True to measure against plain decoding"
        return (f"{self.method}: {self.speedup:.2f}× plain decoding ({self.speculative_tokens_per_s:.1f} vs "
                f"{self.plain_tokens_per_s:.1f} decode tokens/s, {self._rounds_note()})")

    def pass_ms(self) -> pd.Series:
        """Median milliseconds of one decode step of the live run by positions checked (k + 1)."""
        steps = self.steps[self.steps["step"] > 0]
        if steps.empty:
            return pd.Series(dtype=float, name="ms")
        return steps.groupby("positions")["step_ms"].median().rename("ms")

    def explain(self) -> str:
        """Why checking k drafted tokens costs about one token at batch 1, with this run's numbers (Markdown)."""
        lines = []
        ceiling = self.ceiling
        if ceiling is not None:
            lines.append(
                f"A decode step at batch 1 multiplies **one** row of activations by every weight matrix, so it reads all "
                f"**{ceiling.weight_bytes / 1e6:,.0f} MB** of weights (plus {ceiling.kv_bytes / 1e6:,.1f} MB of KV cache) "
                f"for about two flops per weight: its time is set by memory, not arithmetic. At "
                f"{ceiling.bandwidth_gbs:.1f} GB/s ({ceiling.bandwidth_source}) that is at least "
                f"**{ceiling.tpot_ms:.2f} ms** a pass, the decode roofline of {ceiling.tokens_per_s:.0f} tokens/s.")
        passes = self.pass_ms()
        if self.plain:
            plain_tpot = self._median(self.plain, lambda r: r.timings.tpot_ms)
            floor = f" (the memory floor is {100 * ceiling.tpot_ms / plain_tpot:.0f} % of it)" if ceiling else ""
            lines.append(f"Plain decoding measured **{plain_tpot:.2f} ms** a token here{floor}.")
        lines.append(
            "A verify pass multiplies the last token and the k drafted tokens, k + 1 rows, by the same weights while "
            "each weight is in the cores (the kernels take up to 8 rows per read), so it reads the same bytes once and "
            "only adds arithmetic the memory-bound step left idle, plus k more positions of attention.")
        wide = passes[passes.index > 1]
        if 1 in passes.index and not wide.empty:
            rows = int(wide.index[-1])
            grew = wide.iloc[-1] / passes[1]
            lines.append(f"In the live run a step checking 1 position took **{passes[1]:.2f} ms** and one checking "
                         f"{rows} positions **{wide.iloc[-1]:.2f} ms** ({grew:.2f}× the time for {rows}× the positions).")
            if grew >= 0.75 * rows:
                lines.append("Here the pass grew almost in step with the positions: on this kernel path the rows went "
                             "through the linears one at a time (float32 does, to keep each row's bits those of a plain "
                             "step), so speculation cannot pay; the native GEMV paths (bf16, int8) take them in one pass.")
        elif wide.empty:
            lines.append("In the live run nothing was drafted (every step was a plain one): the drafter found no "
                         "match, or the controller judged speculation not worth it on this text.")
        drafts = (f"{self.stats.accepted} of {self.stats.drafted} drafted tokens accepted, "
                  f"{self.stats.acceptance_rate:.0%}" if self.stats.drafted else "nothing drafted")
        lines.append(
            f"Each pass keeps the accepted drafts plus the target's own next token: **{self.stats.tokens_per_step:.2f} "
            f"tokens per pass** on this prompt ({drafts}). A rejected draft still costs its share of a pass, which is why "
            "the controller drafts less, or not at all, where drafts miss (open-ended text).")
        if self.plain and self.speculative:
            lines.append(f"Measured without drawing: **{self.speed_line()}**.")
        return "\n\n".join(lines)


class SpeculativeView:
    """Speculative decoding of one prompt, live: :meth:`run` displays, in the running cell, a marked text panel,
    the :class:`SpeculativePlot` figure and, once the reply is done, the speed against plain decoding, and
    returns a :class:`SpeculativeReport`.

    ``engine``: an accelerated engine (``supports_speculative``); ``title``: the figure's (default: the model's
    name). ``widget``: the figure as a FigureWidget
    (None: when a widget frontend is likely). ``bandwidth_gbs``: the roofline's bandwidth (None: this machine's
    measured figure, as every notebook's roofline)."""

    def __init__(self, engine, widget: bool | None = None, title: str | None = None,
                 bandwidth_gbs: float | None = None):
        if not getattr(engine, "supports_speculative", False):
            raise AscendNbError(f"speculative decoding runs in the accelerated backend, not {engine.backend!r}: load the "
                                "model with backend='accelerated' to watch it")
        self.engine = engine
        self.widget = widget
        self.title = title or engine.spec.name
        self.bandwidth_gbs = bandwidth_gbs
        self.plot: SpeculativePlot | None = None
        self._text_handle = self._speed_handle = None

    def _display(self, obj_html: str, handle):
        from IPython.display import HTML, display

        if handle is None:
            return display(HTML(obj_html), display_id=True)
        handle.update(HTML(obj_html))
        return handle

    def run(self, prompt: str | Sequence[int], params: GenerationParams | None = None, compare_plain: bool = True,
            repeat: int = 1, warmup: bool = True, **overrides) -> SpeculativeReport:
        """Generate ``prompt`` (text or ids) with speculation (``params`` or ``speculative=...``, default
        prompt-lookup; without ``params``, the model's defaults decoded greedily), drawing every step; then, with
        ``compare_plain``, ``repeat`` rounds of plain and speculative decoding on the same prompt and parameters,
        timed without drawing. ``warmup``: first a short untimed speculative run of the prompt."""
        from ascend_nb.engine.speculative import watch

        engine = self.engine
        params = engine.params(params or engine.spec.defaults.replace(do_sample=False), **overrides)  # greedy by default
        if params.speculative is None:
            params = params.replace(speculative="prompt-lookup")
        ids = engine._prompt_ids(prompt)
        if engine.step_observer is not None:
            raise AscendNbError("this engine's steps are already being watched: finish that generation first")
        if warmup:  # first passes of each width cost extra (allocations, a draft model's load): not on the live clock
            engine.generate(ids, params.replace(max_new_tokens=min(WARMUP_TOKENS, params.max_new_tokens)))
        context = len(ids) + params.max_new_tokens / 2
        ceiling = roofline(engine, seq_len=context, bandwidth_gbs=self.bandwidth_gbs)
        note = f"{ceiling.bytes_per_step / 1e6:,.0f} MB / {ceiling.bandwidth_gbs:.1f} GB/s"
        self.plot = SpeculativePlot(widget=self.widget, title=f"{self.title} · {params.speculative}",
                                    floor_ms=ceiling.tpot_ms, floor_note=note)
        marks = TokenMarks(engine.decode, engine.eos_token_ids, params.ignore_eos)
        self._text_handle = self._display(marks_html([], "waiting for the first token…", True), None)
        self.plot.show()
        self._speed_handle = self._display('<div class="anb-spec-speed"></div>', None)
        rows: list[dict] = []
        stats = SpeculativeStats(method=params.speculative)
        drawn = figure_drawn = 0.0
        figure_every = FIGURE_REFRESH_S[self.plot.widget]
        emitted: list[int] = []  # every token the engine chose, in order (the first one is not in the stats)
        engine.step_observer = lambda _logits, tokens: emitted.append(int(tokens.reshape(-1)[0]))
        try:
            with closing(watch(engine, ids, params)) as steps:
                resumed = time.perf_counter()
                for live in steps:
                    step_ms = (time.perf_counter() - resumed) * 1000  # the generator's own work: draft, pass, text
                    stats = live.stats
                    if live.step is None:
                        if rows or not emitted:  # a cancelled request's last report: nothing new
                            continue
                        marks.first(emitted[0])
                        row = {"step": 0, "accepted": 0, "rejected": 0, "positions": len(ids)}
                    else:
                        marks.step(live.step, len(rows))
                        row = {"step": len(rows), "accepted": len(live.step.accepted),
                               "rejected": len(live.step.rejected),
                               "positions": len(live.step.accepted) + len(live.step.rejected) + 1}
                    rows.append({**row, "step_ms": step_ms, "elapsed_ms": live.elapsed_ms})
                    now = time.perf_counter()
                    redraw = now - figure_drawn >= figure_every
                    self.plot.add(rows[-1], refresh=redraw)
                    figure_drawn = now if redraw else figure_drawn
                    if now - drawn >= REFRESH_S:
                        self._display(marks_html(marks.marks, summary_line(stats, len(marks.ids)), True),
                                      self._text_handle)
                        drawn = now
                    resumed = time.perf_counter()
        finally:
            engine.step_observer = None
            self.plot.finish()
            self._display(marks_html(marks.marks, summary_line(stats, len(marks.ids))), self._text_handle)
        report = SpeculativeReport(method=params.speculative, text=marks.text, marks=marks.marks, stats=stats,
                                   steps=pd.DataFrame(rows), ceiling=ceiling, sampled=params.do_sample)
        if compare_plain:
            self._display('<div class="anb-spec-speed" style="margin:6px 0">timing plain and speculative decoding on '
                          'the same prompt…</div>', self._speed_handle)
            plain = params.replace(speculative="off")
            for _ in range(max(1, repeat)):
                report.plain.append(engine.generate(ids, plain))
                report.speculative.append(engine.generate(ids, params))
        self._display(speed_html(report), self._speed_handle)
        return report


def speed_html(report: SpeculativeReport) -> str:
    """The speed line under the figure: the ratio in large type, both decode tokens/s beside it."""
    if not report.plain or not report.speculative:
        return f'<div class="anb-spec-speed" style="margin:6px 0">{html.escape(report.speed_line())}</div>'
    color = ACCEPTED_COLOR if report.speedup >= 1 else REJECTED_COLOR
    detail = (f"{report.method}: {report.speculative_tokens_per_s:.1f} vs {report.plain_tokens_per_s:.1f} decode "
              f"tokens/s, speculative vs plain on the same prompt and engine ({report._rounds_note()})")
    return (f'<div class="anb-spec-speed" style="margin:6px 0;font-size:14px"><b class="anb-spec-ratio" '
            f'style="font-size:20px;color:{color}">{report.speedup:.2f}× plain decoding</b> · {html.escape(detail)}</div>')
