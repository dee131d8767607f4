"""A real browser: JupyterLab in headless Debian Chromium runs ``03_chat.ipynb``; a question typed into
the chat widget and sent with the Send button gets its answer and a TTFT/TPOT line on the page. While
a reply runs Send is disabled and Stop live; idle, Stop is grey. A Load of a path that does not exist
shows a red error under the picker and keeps the conversation."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
QUESTION = "What is the capital of France?"
LONG_QUESTION = "Write a long story about a lighthouse keeper, with many details."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_lab(workdir: Path, timeout: float = 90):
    """``jupyter lab`` on loopback with a token, serving a copy of ``notebooks/``; yields the URL prefix
    to append a path to. ``ASCEND_NB_HOME`` is inherited, so the converted embedded model is reused."""
    root = workdir / "notebooks"
    shutil.copytree(ROOT / "notebooks", root)
    notification = workdir / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text('{"fetchNews": "false"}')  # no "get notified about Jupyter news?" toast
    port, token = _free_port(), secrets.token_hex(16)
    command = [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", "--ip=127.0.0.1",
               f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               f"--LabApp.user_settings_dir={workdir / 'settings'}",
               f"--LabApp.workspaces_dir={workdir / 'workspaces'}"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log_path = workdir / "jupyter-lab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, f"jupyter lab exited:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"jupyter lab not ready in {timeout} s:\n{log_path.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield base, token
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _kernel_idle(base: str, token: str) -> bool:
    with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=5) as reply:
        kernels = json.load(reply)
    return any(k["execution_state"] == "idle" and k["connections"] for k in kernels)


def run_all_cells(page, base: str, token: str, notebook: str) -> None:
    """Open a notebook, wait for its kernel, Run All from the menu, and wait until the last cell has run."""
    page.goto(f"{base}/lab/tree/{notebook}?token={token}")
    deadline = time.monotonic() + 120
    while not _kernel_idle(base, token):  # the page shows "Idle" before the kernel has even started
        assert time.monotonic() < deadline, "the notebook's kernel did not start in 120 s"
        time.sleep(0.5)
    page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\| Idle$")).wait_for(timeout=30_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    last_prompt = page.locator(".jp-CodeCell .jp-InputPrompt").last
    last_prompt.filter(has_text=re.compile(r"\[\d+\]")).wait_for(timeout=240_000)


@pytest.mark.timeout(400)
def test_chat_notebook_answers_in_a_real_browser(tmp_path, embedded_model_dir):
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium)")
    with running_lab(tmp_path) as (base, token), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            run_all_cells(page, base, token, "03_chat.ipynb")
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
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser_chat_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
