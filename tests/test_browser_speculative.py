"""A real browser: JupyterLab in headless Chromium runs the live speculative-decoding view (the calls of section 7
of ``06_inside_the_model``, in a notebook of their own so the test waits for nothing else) and shows what a person
sees: the reply growing while the cell runs, drafted tokens marked (accepted green, rejected red and struck through,
as many of each as the summary line counts), the figure drawn with its axis titles and bars, and the speed against
plain decoding as a number."""

from __future__ import annotations

import re

import pytest

from tests.browser import ARTIFACTS, lab_page, run_all_cells, sample_until, write_notebook

pytestmark = [pytest.mark.slow, pytest.mark.browser]

TOKENS = 48
CELLS = [
    "import ascend_nb\nfrom ascend_nb.ui.speculative_view import SpeculativeView, builtin_prompt\n"
    "engine = ascend_nb.load('smollm2-135m-instruct', device='cpu', dtype='auto', backend='accelerated',"
    " max_seq_len=512)",
    f"ids = engine.encode_chat([{{'role': 'user', 'content': builtin_prompt('g01-lighthouse-summarise')}}], {TOKENS})\n"
    f"report = SpeculativeView(engine).run(ids, max_new_tokens={TOKENS}, speculative='prompt-lookup', repeat=1)\n"
    "print('done', len(report.stats.steps))",
]
MARKS_JS = """() => {
  const text = document.querySelector('.anb-spec-text');
  const spans = kind => [...document.querySelectorAll('.anb-spec-text .anb-spec-' + kind)];
  const style = el => { const s = getComputedStyle(el); return [s.backgroundColor, s.color, s.textDecorationLine]; };
  return {tokens: text ? text.querySelectorAll('span:not(.anb-spec-cursor)').length : 0,
          accepted: spans('accepted').map(style), rejected: spans('rejected').map(style),
          legend: [...document.querySelectorAll('.anb-spec-legend span')].map(el => [el.className, ...style(el)]),
          summary: (document.querySelector('.anb-spec-summary') || {}).textContent || ''};
}"""
FIGURE_JS = """() => {
  const plot = [...document.querySelectorAll('.js-plotly-plot')].find(p => p.textContent.includes('decode step'));
  if (!plot) return null;
  const box = plot.querySelector('svg.main-svg').getBoundingClientRect();
  return {titles: [...plot.querySelectorAll('text')].filter(t => /^[xy]\\d*title$/.test(t.getAttribute('class') || ''))
                     .map(t => t.textContent),
          bars: plot.querySelectorAll('.barlayer .point path').length,
          points: plot.querySelectorAll('.scatterlayer .point').length,
          width: box.width, height: box.height,
          title: (plot.querySelector('.gtitle') || {}).textContent || ''};
}"""
GREEN, RED = "rgb(211, 249, 216)", "rgb(255, 227, 227)"  # the accepted and rejected backgrounds


@pytest.mark.timeout(400)
def test_live_speculative_view_marks_tokens_draws_the_figure_and_shows_the_speedup(tmp_path, embedded_model_dir):
    with lab_page(tmp_path, "browser_speculative_failure.png") as (page, base, token):
        write_notebook(CELLS, tmp_path / "notebooks" / "live_speculative.ipynb")
        run_all_cells(page, base, token, "live_speculative.ipynb", wait=False)
        page.locator(".anb-spec-text").first.wait_for(timeout=180_000)
        done = page.locator(".jp-OutputArea-output", has_text=re.compile(r"^\s*done \d+\s*$"))
        # the page while the reply is being generated and timed
        seen = set(sample_until(done, lambda: page.evaluate(MARKS_JS)["tokens"], 0.05))
        marks = page.evaluate(MARKS_JS)
        assert len({n for n in seen if 0 < n < marks["tokens"]}) >= 1, f"the text did not grow on screen: {sorted(seen)}"

        # every drafted token carries its mark, as many as the summary line counts
        counted = re.search(r"(\d+) of (\d+) drafted tokens accepted", marks["summary"])
        assert counted, marks["summary"]
        accepted, drafted = int(counted[1]), int(counted[2])
        assert accepted > 0 and len(marks["accepted"]) == accepted and len(marks["rejected"]) == drafted - accepted
        assert all(background == GREEN for background, _, _ in marks["accepted"])
        assert all(background == RED and "line-through" in line for background, _, line in marks["rejected"])
        legend = {cls: (background, line) for cls, background, _, line in marks["legend"]}
        assert legend["anb-spec-accepted"][0] == GREEN and "line-through" in legend["anb-spec-rejected"][1]

        # the figure: drawn at a real size, its axes labelled, one bar per step and kind
        page.wait_for_function(FIGURE_JS, timeout=30_000)  # the finished figure replaces the live one
        figure = page.evaluate(FIGURE_JS)
        assert figure and figure["width"] > 400 and figure["height"] > 300, figure
        for title in ("decode step", "tokens", "acceptance (%)", "ms per step", "positions checked in one pass (k + 1)"):
            assert title in figure["titles"], figure["titles"]
        steps = int(done.first.text_content().split()[-1])
        assert figure["bars"] >= steps and figure["points"] >= steps, figure
        assert re.search(r"step \d+ · \d+\.\d\d tokens per step · \d+ % accepted", figure["title"]), figure["title"]

        # the speed against plain decoding, as a number
        ratio = page.locator(".anb-spec-ratio").first.text_content(timeout=30_000)
        assert re.fullmatch(r"\d+\.\d\d× plain decoding", ratio), ratio
        assert float(ratio.split("×")[0]) > 0
        speed = page.locator(".anb-spec-speed").first.text_content()
        assert re.search(r"\d+\.\d vs \d+\.\d decode tokens/s", speed) and "the same text token for token" in speed
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator(".jp-CodeCell").nth(1).screenshot(path=str(ARTIFACTS / "browser_speculative.png"))
