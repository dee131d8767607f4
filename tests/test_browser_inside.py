"""A real browser: JupyterLab in headless Chromium renders the live next-token view (the calls of
section 2 of ``06_inside_the_model``, in a notebook of their own so the test waits for nothing else)
while a reply streams: the bars and the step in the title move while the cell is still running, and
setting the temperature slider to 0 greys out every bar but one."""

from __future__ import annotations

import re

import pytest

from tests.browser import lab_page, run_all_cells, sample_until, write_notebook

pytestmark = [pytest.mark.slow, pytest.mark.browser]

TOKENS = 64
CELLS = [
    "import ascend_nb\nfrom ascend_nb.ui.inspect_views import NextTokenView\n"
    "engine = ascend_nb.load('smollm2-135m-instruct', device='cpu', dtype='float32')",
    f"params = engine.params(max_new_tokens={TOKENS}, do_sample=True, temperature=0.7, top_k=20, top_p=0.9, seed=0,"
    " ignore_eos=True)\n"
    "ids = engine.encode_chat([{'role': 'user', 'content': 'Tell me about the sea.'}], params.max_new_tokens)\n"
    "view = NextTokenView(engine, params, top_k=20).show()\n"
    "steps = view.run(ids)\n"
    "print('done', len(view.steps))",
]


def _bars(page) -> tuple[str, list[str]]:
    """The figure's title and the path of every bar of the probabilities panel, as drawn now."""
    plot = page.locator(".anb-next-token .js-plotly-plot").first
    title = plot.locator(".gtitle").first.text_content(timeout=1000) or ""
    paths = plot.locator(".barlayer .point path").evaluate_all("nodes => nodes.map(n => n.getAttribute('d'))")
    return title, paths


@pytest.mark.timeout(400)
def test_live_next_token_view_moves_while_the_reply_streams(tmp_path, embedded_model_dir):
    from playwright.sync_api import expect

    with lab_page(tmp_path, "browser_inside_failure.png") as (page, base, token):
        write_notebook(CELLS, tmp_path / "notebooks" / "live_next_token.ipynb")
        run_all_cells(page, base, token, "live_next_token.ipynb", wait=False)
        page.locator(".anb-next-token .js-plotly-plot .barlayer .point").first.wait_for(timeout=180_000)
        seen_steps, seen_bars = set(), set()
        done = page.locator(".jp-OutputArea-output", has_text=f"done {TOKENS}")
        for title, paths in sample_until(done, lambda: _bars(page), 0.1):  # while the reply is being generated
            match = re.match(r"step (\d+):", title)
            if match and paths:
                seen_steps.add(int(match[1]))
                seen_bars.add(tuple(paths))
        assert len(seen_steps) >= 3, f"the title moved through only {sorted(seen_steps)} while streaming"
        assert len(seen_bars) >= 3, "the bars did not move while the reply streamed"
        title, _ = _bars(page)
        assert title.startswith(f"step {TOKENS - 1}:")
        # greedy (temperature 0): only one bar stays blue, the rest turn grey
        slider = page.locator(".anb-next-token .widget-slider", has_text="temperature").locator(".widget-readout")
        slider.fill("0")
        slider.press("Enter")
        expect(page.locator(".anb-next-token .gtitle")).to_contain_text("keeps 1 of 49152 tokens", timeout=30_000)
