"""Take the README's screenshots from JupyterLab in headless Debian chromium (``make screenshots``).

The performance, precision and environment notebooks are executed headless first with papermill
(small parameters, so it takes minutes), then opened in JupyterLab as anyone opens an executed
notebook: what the PNGs show is what an executed copy shows. The chat runs live. Usage:
``python scripts/screenshots.py [OUT_DIR] [--reuse]`` (default ``docs/images``); the executed copies
are kept in ``tests/artifacts/screenshots/``, and ``--reuse`` takes them instead of running again
(for retakes of the same run; a changed figure needs a new run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.notebook_runner import run_notebook  # noqa: E402
from tests.browser import lab_page, run_all_cells  # noqa: E402
from tests.test_browser_chat import QUESTION  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "ascend"
EXECUTED = {  # notebook -> papermill parameters
    "04_performance.ipynb": {"INPUT_LENS": [32, 256, 1024], "OUTPUT_LENS": [32, 128], "REPEAT": 2, "TP_SIZES": [1],
                             "SERVED": False, "TRACE_INPUT_LEN": 32, "TRACE_DECODE_STEPS": 2},
    "05_precision.ipynb": {"LIMIT": 2, "COMPARE_PROMPTS": ["The capital of France is", "中国的首都是"]},
    "01_environment_check.ipynb": {"ASCEND_ROOT": str(FIXTURES / "310p_cann80"), "DTYPE": "bfloat16"},
}
# (png name, notebook, code cell source marker, what to capture inside that cell's output: a CSS selector)
SHOTS = [
    ("sweep_figure.png", "04_performance.ipynb", "plot = LiveSweepPlot(", ".js-plotly-plot"),
    ("precision_accuracy.png", "05_precision.ipynb", "generate_plot = AccuracyPlot(", ".js-plotly-plot"),
    ("precision_layers.png", "05_precision.ipynb", "show_static(layer_comparison_figure", ".js-plotly-plot"),
    ("environment_table.png", "01_environment_check.ipynb", 'report.step_table("cann")', ".jp-OutputArea-output"),
]


RUNS = ROOT / "tests" / "artifacts" / "screenshots"


def execute(workdir: Path, reuse: bool = False) -> dict[str, Path]:
    """Run each notebook of :data:`EXECUTED` with papermill (unless ``reuse`` finds its executed copy);
    return the executed copies."""
    env = {"PATH": f"{FIXTURES / 'bin'}{os.pathsep}{os.environ['PATH']}",  # the stand-in 310P box of the tests
           "NPU_SMI_SAMPLE": str(FIXTURES / "npu_smi" / "310p.txt")}
    os.environ.update(env)
    workdir.mkdir(parents=True, exist_ok=True)
    done = {}
    for name, parameters in EXECUTED.items():
        done[name] = workdir / f"executed_{name}"
        if reuse and done[name].is_file():
            continue
        print(f"executing {name} ...", flush=True)
        run_notebook(name, parameters, timeout=1200, tmp_dir=workdir)
    return done


def cell_index(notebook: Path, marker: str) -> int:
    cells = json.loads(notebook.read_text())["cells"]
    return next(i for i, c in enumerate(cells) if marker in "".join(c["source"]))


def main(out_dir: str = "docs/images", reuse: bool = False) -> None:
    out = (ROOT / out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ascend-nb-shots-") as tmp:
        workdir = Path(tmp)
        executed = execute(RUNS, reuse)
        with lab_page(workdir, "screenshots_failure.png", viewport=(1600, 1200)) as (page, base, token):
            tracker = workdir / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
            tracker.parent.mkdir(parents=True, exist_ok=True)
            tracker.write_text('{"windowingMode": "none"}')  # every cell in the page, not only those in view
            for path in executed.values():
                shutil.copy(path, workdir / "notebooks" / path.name)
            for png, name, marker, selector in SHOTS:  # a workspace per shot: only that notebook open
                page.goto(f"{base}/lab/workspaces/{Path(png).stem}/tree/executed_{name}?token={token}")
                cell = page.locator(".jp-Notebook .jp-Cell").nth(cell_index(executed[name], marker))
                target = cell.locator(selector).first
                target.wait_for(timeout=60_000)
                target.scroll_into_view_if_needed()
                page.wait_for_timeout(1500)  # plotly draws after it is attached
                target.screenshot(path=str(out / png))
                print(f"wrote {out / png}", flush=True)
            run_all_cells(page, base, token, "03_chat.ipynb")
            page.locator("textarea.anb-chat-prompt").fill(f"{QUESTION} (法国的首都是哪里？)")  # CJK renders
            page.get_by_role("button", name="Send").click()
            page.locator(".anb-chat-row.assistant .anb-chat-stats", has_text=re.compile(r"TPOT \d")).last.wait_for(
                timeout=180_000)  # the finished reply's line, not the live "generating…" one
            chat = page.locator(".anb-chat").first
            chat.scroll_into_view_if_needed()
            chat.screenshot(path=str(out / "chat_widget.png"))
            print(f"wrote {out / 'chat_widget.png'}", flush=True)


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--reuse"]
    main(*arguments, reuse="--reuse" in sys.argv[1:])
