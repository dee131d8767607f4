"""A real browser: JupyterLab in headless Debian Chromium runs ``03_chat.ipynb``; a question typed into
the chat widget and sent with the Send button gets its answer and a TTFT/TPOT line on the page. While
a reply runs Send is disabled and Stop live; idle, Stop is grey. A Load of a path that does not exist
shows a red error under the picker and keeps the conversation."""

from __future__ import annotations

import re

import pytest

from tests.browser import lab_page, run_all_cells

pytestmark = [pytest.mark.slow, pytest.mark.browser]

QUESTION = "What is the capital of France?"
LONG_QUESTION = "Write a long story about a lighthouse keeper, with many details."


@pytest.mark.timeout(400)
def test_chat_notebook_answers_in_a_real_browser(tmp_path, embedded_model_dir):
    from playwright.sync_api import expect

    with lab_page(tmp_path, "browser_chat_failure.png") as (page, base, token):
        run_all_cells(page, base, token, "03_chat.ipynb")
        page.get_by_text("Settings: system prompt, sampling").click()
        sample = page.get_by_role("checkbox", name="Sample (off: greedy)")
        expect(sample).to_be_checked()  # a small model's chat samples by default (greedy makes it loop)
        sample.uncheck()  # greedy, as a user unticks it, for the same answer every run
        page.locator("textarea.anb-chat-prompt").fill(QUESTION)
        page.get_by_role("button", name="Send").click()
        answer = page.locator(".anb-chat-row.assistant").last
        expect(answer.locator(".anb-chat-stats")).to_contain_text(
            re.compile(r"TTFT \d+\.\d ms · TPOT \d+\.\d ms · [\d.]+ tokens/s · \d+ tokens"), timeout=180_000)
        expect(answer.locator(".anb-chat-md")).to_contain_text("Paris")
        expect(page.locator(".anb-chat-row.user").last).to_contain_text(QUESTION)
        expect(page.locator(".anb-chat-totals")).to_contain_text("Session: 1 reply")

        send, stop = page.get_by_role("button", name="Send"), page.get_by_role("button", name="Stop")
        expect(stop).to_be_disabled()
        expect(stop).not_to_have_class(re.compile("mod-warning"))  # grey when it cannot be pressed
        page.locator("textarea.anb-chat-prompt").fill(LONG_QUESTION)
        send.click()
        expect(send).to_be_disabled()  # busy: no second message while the reply runs
        expect(stop).to_be_enabled()
        expect(stop).to_have_class(re.compile("mod-warning"))
        stop.click()
        expect(send).to_be_enabled(timeout=30_000)
        expect(stop).to_be_disabled()

        page.get_by_placeholder("registry name or local directory").fill("/nonexistent/dir")
        page.locator("button[title='Load this model and start a new chat']").click()
        error = page.locator(".anb-chat-error")
        expect(error).to_contain_text("Could not load /nonexistent/dir")
        expect(error).to_contain_text("the current chat is kept")
        assert error.evaluate("e => getComputedStyle(e).color") == "rgb(211, 47, 47)"  # styled, not plain black
        expect(page.locator(".anb-chat-row.user").first).to_contain_text(QUESTION)  # the chat survived
