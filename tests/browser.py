"""JupyterLab in headless Debian Chromium, for the browser tests: a lab serving a copy of ``notebooks/``,
a page on it that leaves a screenshot in ``tests/artifacts/`` when the test fails, and Run All."""

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
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def write_notebook(cells: list[str], path: Path) -> None:
    """A notebook of these code cells on the Python 3 kernel at ``path``."""
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    notebook.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nbformat.write(notebook, path)


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
    try:
        with urllib.request.urlopen(f"{base}/api/kernels?token={token}", timeout=5) as reply:
            kernels = json.load(reply)
    except urllib.error.HTTPError as error:
        if error.code != 500:
            raise
        # jupyter_server answers 500 while a kernel it lists is still starting (its last_activity is
        # None: "TraitError: The 'last_activity' trait ... expected a datetime"): not idle yet
        return False
    return any(k["execution_state"] == "idle" and k["connections"] for k in kernels)


def run_all_cells(page, base: str, token: str, notebook: str, wait: bool = True) -> None:
    """Open a notebook, wait for its kernel, Run All from the menu, and (``wait``) until the last cell has run."""
    page.goto(f"{base}/lab/tree/{notebook}?token={token}")
    deadline = time.monotonic() + 120
    while not _kernel_idle(base, token):  # the page shows "Idle" before the kernel has even started
        assert time.monotonic() < deadline, "the notebook's kernel did not start in 120 s"
        time.sleep(0.5)
    page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\| Idle$")).wait_for(timeout=30_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    if not wait:
        return
    last_prompt = page.locator(".jp-CodeCell .jp-InputPrompt").last
    last_prompt.filter(has_text=re.compile(r"\[\d+\]")).wait_for(timeout=240_000)


def sample_until(done, sample: Callable[[], object], interval: float) -> list:
    """What the page showed while a cell ran: ``sample()`` every ``interval`` seconds until the ``done`` locator
    matches (the cell's last output)."""
    samples = []
    while done.count() == 0:
        samples.append(sample())
        time.sleep(interval)
    return samples

@contextmanager
def lab_page(workdir: Path, failure_png: str, viewport: tuple[int, int] = (1280, 1000)) -> Iterator[tuple]:
    """``(page, base, token)``: a Chromium page beside :func:`running_lab`; when the body fails, the page
    is saved as ``tests/artifacts/<failure_png>`` before the error propagates."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium)")
    with running_lab(workdir) as (base, token), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]}, device_scale_factor=1)
        try:
            yield page, base, token
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / failure_png), full_page=True)
            raise
        finally:
            browser.close()


# what a person sees in an exported notebook: figures drawn, numbers on one line
OFFLINE_REPORT_JS = """() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  const drawn = plots.filter(p => {
    const svg = p.querySelector('svg.main-svg');
    const box = svg && svg.getBoundingClientRect();
    return box && box.width > 200 && box.height > 150 && p.querySelectorAll('.trace, .hm, image').length > 0;
  });
  const wrapped = [];
  for (const cell of document.querySelectorAll('td, th')) {
    const range = document.createRange();
    range.selectNodeContents(cell);
    const lines = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
    const text = cell.textContent.trim();
    const oneWord = text.length > 0 && !/\\s/.test(text);
    if (lines.size > 1 && oneWord) wrapped.push(text);
  }
  return {plots: plots.length, drawn: drawn.length, wrapped,
          missing: document.body.innerText.includes('plotly.js is not in this page'),
          progress: [...document.querySelectorAll('progress')].map(p => [Number(p.value), Number(p.max)])};
}"""


def offline_report(html_path: Path, width: int = 1400) -> dict:
    """Open an exported notebook in headless Chromium with every request but the file itself refused (an
    air-gapped Ascend server), at ``width`` px; what drew: ``plots``, ``drawn`` (an SVG of real size with
    traces), ``wrapped`` (one-word cells broken over lines), ``missing`` (the no-plotly.js notice),
    ``progress`` (each bar's value and max), ``blocked`` (the requests refused)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium)")
    blocked: list[str] = []

    def only_the_file(route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": width, "height": 1000}, device_scale_factor=1)
        page.route("**/*", only_the_file)
        page.goto(html_path.as_uri(), wait_until="load", timeout=120_000)
        page.wait_for_timeout(1500)  # plotly draws after load
        report = page.evaluate(OFFLINE_REPORT_JS)
        if report["drawn"] < report["plots"] or report["wrapped"]:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"offline-{html_path.stem}.png"), full_page=True)
        browser.close()
    return {**report, "blocked": blocked}


def assert_reads_offline(html_path: Path, figures: int) -> dict:
    """Every one of ``figures`` figures drew with the network off, and no value wraps inside itself."""
    report = offline_report(html_path)
    assert report["plots"] == figures and report["drawn"] == figures and not report["missing"], report
    assert not report["wrapped"], f"cells broken inside a value: {report['wrapped'][:10]}"
    assert all(value == high for value, high in report["progress"]), f"progress bars left unfinished: {report}"
    return report
