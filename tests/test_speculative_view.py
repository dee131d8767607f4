"""The live view of speculative decoding (ascend_nb.ui.speculative_view) and the chat widget's speculative setting.

The marks first, on a toy vocabulary: accepted drafts kept in the text and marked green, rejected ones shown
struck through where they were proposed but never part of the text, the reply ending at EOS. Then the view on
a tiny random Llama in the accelerated backend with a drafter that is right for a varying number of places
(as in tests/test_speculative.py), so every step kind happens: what it displays (the marked text rebuilding
the plain greedy reply, the figure with its axis titles and one point per step, the speed line with a ratio)
and what it returns (the speed table, the explanation with the roofline's bytes and bandwidth).
"""

from __future__ import annotations

import re

import pytest

import ascend_nb
from ascend_nb import GenerationParams
from ascend_nb.engine import speculative as S
from ascend_nb.errors import AscendNbError
from ascend_nb.models.params import SpeculativeStats, SpeculativeStep
from ascend_nb.ui import speculative_view as V

VOCAB = {0: "<eos>", 1: "The", 2: " cat", 3: " sat", 4: " on", 5: " the", 6: " mat", 7: "<b>", 8: "\n"}
PROMPT = [1, 504, 3458, 282, 4649, 314, 77, 12, 90, 504, 3458, 282, 4649, 314, 77, 12, 90, 504, 3458]


def toy_decode(ids):
    return "".join(VOCAB[i] for i in ids if i != 0)


def test_marks_keep_accepted_drafts_and_show_rejected_ones_struck():
    marks = V.TokenMarks(toy_decode, eos_ids=[0])
    marks.first(1)
    marks.step(SpeculativeStep(accepted=[2, 3], rejected=[7, 8], token=4), 1)  # two kept, two rejected, then " on"
    marks.step(SpeculativeStep(accepted=[], rejected=[], token=5), 2)  # a plain step
    marks.step(SpeculativeStep(accepted=[6], rejected=[], token=0), 3)  # EOS: the reply ends, not in the text
    marks.step(SpeculativeStep(accepted=[2], rejected=[], token=3), 4)  # nothing after EOS
    assert [(m.piece, m.kind, m.step) for m in marks.marks] == [
        ("The", "target", 0), (" cat", "accepted", 1), (" sat", "accepted", 1), ("<b>", "rejected", 1),
        ("\n", "rejected", 1), (" on", "target", 1), (" the", "target", 2), (" mat", "accepted", 3)]
    assert marks.text == "The cat sat on the mat" and marks.ids == [1, 2, 3, 4, 5, 6] and marks.finished

    page = V.marks_html(marks.marks, "a summary", running=True)
    accepted = re.findall(r'<span class="anb-spec-accepted" style="([^"]+)"[^>]*>([^<]*)</span>', page)
    rejected = re.findall(r'<span class="anb-spec-rejected" style="([^"]+)"[^>]*>([^<]*)</span>', page)
    assert [text for _, text in accepted][1:] == [" cat", " sat", " mat"]  # the legend's swatch first
    assert [text for _, text in rejected][1:] == ["&lt;b&gt;", "↵"]  # escaped; a struck newline stays visible
    assert all("line-through" in style for style, _ in rejected) and all("#d3f9d8" in s for s, _ in accepted)
    assert 'title="step 1: drafted, rejected"' in page and "anb-spec-cursor" in page and "a summary" in page
    assert "anb-spec-cursor" not in V.marks_html(marks.marks)  # finished: no cursor


def test_summary_line_counts_steps_tokens_and_acceptance():
    stats = SpeculativeStats("prompt-lookup", steps=[SpeculativeStep([2, 3], [7], 4), SpeculativeStep([], [], 5)])
    assert V.summary_line(stats, 5) == "2 steps · 5 tokens · 2 of 3 drafted tokens accepted (67%) · 2.00 tokens per step"


def test_builtin_prompts_by_id_and_own_text():
    assert V.builtin_prompt("g03-bakery-edit").startswith("Rewrite the following passage in the past tense")
    assert V.builtin_prompt("Quote this: a b c") == "Quote this: a b c"
    with pytest.raises(AscendNbError, match="g01-lighthouse-summarise"):
        V.builtin_prompt("g99")


class Oracle(S.Drafter):
    """Knows the plain greedy reply; drafts its next tokens right for 0 .. k + 1 places in turn, then wrong."""

    name = "oracle"

    def __init__(self, prompt, reply):
        self.prompt, self.reply, self.calls = prompt, reply, 0

    def propose(self, context, k, params=None, generator=None):
        done = len(context) - len(self.prompt)
        right = self.calls % (k + 2)
        self.calls += 1
        return [t if i < right else (t + 1) % 49152 for i, t in enumerate(self.reply[done:done + k])], None


class Recorder:
    """Stands in for IPython's display: every output and every update of it, in order."""

    def __init__(self):
        self.outputs: list[list] = []

    def display(self, *objs, display_id=None, raw=False, **_):
        self.outputs.append(list(objs))
        index = len(self.outputs) - 1
        recorder = self

        class Handle:
            def update(self, obj, raw=False, **_):
                recorder.outputs[index].append(obj)

        return Handle() if display_id else None

    def html(self, index: int) -> str:
        """The latest HTML of output ``index``."""
        last = self.outputs[index][-1]
        return last.data if hasattr(last, "data") else last["text/html"]


@pytest.fixture
def accelerated(tiny_llama_dir):
    return ascend_nb.load(tiny_llama_dir, device="cpu", dtype="float32", backend="accelerated", max_seq_len=96)


def test_view_marks_every_drafted_token_live_and_compares_with_plain_decoding(accelerated, monkeypatch):
    import IPython.display

    engine = accelerated
    params = GenerationParams(max_new_tokens=32, ignore_eos=True)
    plain = engine.generate(PROMPT, params)
    steps = iter(range(10**6))
    monkeypatch.setattr(S, "drafter_for", lambda engine, method: Oracle(PROMPT, plain.token_ids))
    monkeypatch.setattr(S.Controller, "choose", lambda self, limit: min(1 + next(steps) % S.MAX_DRAFT, limit))
    recorder = Recorder()
    monkeypatch.setattr(IPython.display, "display", recorder.display)
    monkeypatch.setattr(V, "REFRESH_S", 0.0)  # draw the text at every step

    view = V.SpeculativeView(engine, widget=False, bandwidth_gbs=20.0)
    report = view.run(PROMPT, params, speculative="prompt-lookup", repeat=2)

    # the text panel: drawn at every step while running, then finished; it rebuilds the plain greedy reply
    text_updates = recorder.outputs[0]
    assert len(text_updates) >= len(report.stats.steps)
    final = recorder.html(0)
    assert "anb-spec-cursor" in text_updates[-2].data and "anb-spec-cursor" not in final
    kept = "".join(m.piece for m in report.marks if m.kind != "rejected")
    assert kept == report.text == plain.text
    kinds = [m.kind for m in report.marks]
    assert kinds.count("accepted") == report.stats.accepted > 0
    assert kinds.count("rejected") == report.stats.drafted - report.stats.accepted > 0
    assert final.count('class="anb-spec-accepted"') == report.stats.accepted + 1  # + the legend's swatch
    assert V.summary_line(report.stats, len(plain.token_ids)) in final

    # the figure: one point per decode step, axis titles, the memory floor; finished as a static bundle
    figure = view.plot.figure
    n = len(report.stats.steps)
    assert [len(figure.data[i].x) for i in (0, 1, 2, 3, 6)] == [n] * 5
    assert list(figure.data[1].y) == [len(s.accepted) for s in report.stats.steps]
    assert list(figure.data[2].y) == [len(s.rejected) for s in report.stats.steps]
    assert figure.data[3].y[-1] == pytest.approx(report.stats.tokens_per_step)
    assert figure.layout.xaxis3.title.text == "decode step" and figure.layout.yaxis.title.text == "tokens"
    assert figure.layout.yaxis3.title.text == "acceptance (%)" and figure.layout.yaxis2.title.text == "ms per step"
    assert figure.layout.xaxis2.title.text.startswith("positions checked")
    assert "memory floor" in figure.layout.annotations[-1].text and f"step {n} ·" in figure.layout.title.text
    figure_output = recorder.outputs[1][-1]
    assert {"application/vnd.plotly.v1+json", "text/html"} <= set(figure_output)

    # the speed against plain decoding: the same tokens, both tokens/s, their ratio
    assert report.same_text and len(report.plain) == len(report.speculative) == 2
    speed = report.speed()
    assert list(speed.index) == ["plain", "speculative (prompt-lookup)"]
    assert speed["vs plain"].iloc[1] == pytest.approx(report.speedup)
    assert speed["tokens per step"].iloc[1] > 1 and speed["tokens"].tolist() == [32, 32]
    line = recorder.html(2)
    ratio = re.search(r'class="anb-spec-ratio"[^>]*>(\d+\.\d\d)× plain decoding<', line)
    assert ratio and float(ratio[1]) == pytest.approx(report.speedup, abs=0.005)
    assert f"{report.plain_tokens_per_s:.1f}" in line and "the same text token for token" in line

    # why checking k tokens costs about one: the roofline's bytes and bandwidth, measured passes by width
    assert report.ceiling.bandwidth_gbs == 20.0
    explained = report.explain()
    assert f"{report.ceiling.weight_bytes / 1e6:,.0f} MB" in explained and "20.0 GB/s" in explained
    assert f"{report.ceiling.tpot_ms:.2f} ms" in explained and "tokens per pass" in explained
    passes = report.pass_ms()
    assert 1 in passes.index and passes.index.max() > 1 and "positions" in explained
    assert engine.step_observer is None  # the view's observer is gone


def test_view_without_drafts_or_comparison_says_so(accelerated, monkeypatch):
    import IPython.display

    recorder = Recorder()
    monkeypatch.setattr(IPython.display, "display", recorder.display)
    monkeypatch.setattr(S.Controller, "choose", lambda self, limit: 0)  # speculation always off
    report = V.SpeculativeView(accelerated, widget=False, bandwidth_gbs=20.0).run(
        PROMPT, max_new_tokens=8, ignore_eos=True, compare_plain=False)
    assert report.stats.drafted == 0 and all(m.kind == "target" for m in report.marks)
    assert "nothing was drafted" in report.explain() and "no timed rounds" in recorder.html(2)
    assert report.speed().empty


def test_view_refuses_an_engine_that_cannot_speculate(tiny_engine):
    with pytest.raises(AscendNbError, match="accelerated"):
        V.SpeculativeView(tiny_engine)


def test_chat_widget_offers_speculative_decoding_only_where_it_runs(accelerated, tiny_engine):
    from ascend_nb.ui.chat import ChatWidget, format_stats

    assert ChatWidget(tiny_engine).speculative is None  # transformers: no setting
    chat = ChatWidget(accelerated, params=GenerationParams(max_new_tokens=12, ignore_eos=True))
    assert [value for _, value in chat.speculative.options] == ["off", "prompt-lookup"]
    assert chat.generation_params().speculative is None and "speculative" in chat.settings.get_title(0)
    chat.speculative.value = "prompt-lookup"
    assert chat.generation_params().speculative == "prompt-lookup"
    assert chat.ask("The cat sat on the mat. The cat sat on the")
    chat.wait(120)
    stats = chat.last_stats
    assert stats["tokens"] == 12 and stats["tokens_per_step"] >= 1.0 and 0 <= stats["acceptance_rate"] <= 1
    assert "tokens per step" in format_stats(stats) and "tokens per step" in chat.history.children[-1].value
    assert ChatWidget(accelerated, params=GenerationParams(speculative="draft:self@int8")).speculative.value == \
        "draft:self@int8"
