"""notebooks/01_environment_check.ipynb runs headless: on this machine, and against a stand-in Ascend box.

No Ascend NPU is reachable where these tests run, so the second run points the notebook at the
fixture install tree tests/fixtures/ascend/310p_cann80 and puts the stand-in ``npu-smi`` (which
prints a real Atlas 300I DUO sample) on the kernel's PATH.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ascend_nb.doctor.report import STATUS_STYLES
from tests.notebook_runner import outputs_text, run_notebook

pytestmark = pytest.mark.slow
NOTEBOOK = "01_environment_check.ipynb"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ascend"
ASCEND_VARS = ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH", "ASCEND_OPP_PATH", "ASCEND_AICPU_PATH", "TOOLCHAIN_HOME",
               "ATB_HOME_PATH")


def _colour(status: str) -> str:
    return STATUS_STYLES[status].split(";")[0].split(":")[1].strip()


def test_notebook_on_this_machine(tmp_path, monkeypatch):
    for name in ASCEND_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if not (Path(p) / "npu-smi").exists()))
    log = (Path(__file__).resolve().parent / "fixtures" / "logs" / "vllm_ascend_262_libhccl.txt").read_text()
    notebook = run_notebook(NOTEBOOK, {"ASCEND_ROOT": str(tmp_path), "EXPLAIN_TEXT": log}, tmp_dir=tmp_path)
    text = outputs_text(notebook)
    assert f"Ascend root: {tmp_path}" in text
    # the text area + Explain button, driven headless; then the plan of Baichuan2-7B-Chat on one 310P3 chip
    assert "libhccl.so: cannot open shared object file -> source /usr/local/Ascend/ascend-toolkit/set_env.sh" in text
    assert "baichuan2-7b-chat on 310P3 (float16, max_seq_len 4096, batch 1)" in text
    assert "largest max_seq_len that fits at batch 1: 4096" in text
    figures = [o["data"]["application/vnd.plotly.v1+json"] for c in notebook.cells for o in c.get("outputs", [])
               if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert [f["data"][0]["type"] for f in figures] == ["heatmap"] and "Does it fit?" in str(figures[0]["layout"])
    assert "A100-80GB" in text and "910B4-32GB" in text
    assert "npu-smi not on PATH" in text and "torch_npu not installed" in text
    assert _colour("pass") in text and _colour("skip") in text
    assert '"cann_version": null' in text
    assert "2.12.0, 2.11.0, 2.10.0.post4, 2.9.0.post6, 2.7.1.post8" in text  # the CANN 9.1.0 row, not clipped
    assert f"{tmp_path}/nnal/atb/latest/atb/cxx_abi_" in text  # the ATB_HOME_PATH row names a real path


def test_notebook_on_a_stand_in_310p_box(tmp_path, monkeypatch):
    for name in ASCEND_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", f"{FIXTURES / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("NPU_SMI_SAMPLE", str(FIXTURES / "npu_smi" / "310p.txt"))
    root = FIXTURES / "310p_cann80"
    text = outputs_text(run_notebook(NOTEBOOK, {"ASCEND_ROOT": str(root), "DTYPE": "bfloat16"}, tmp_dir=tmp_path))
    assert "310P3" in text and _colour("fail") in text
    assert f"[fail] toolkit set_env.sh: source {root / 'ascend-toolkit' / 'set_env.sh'}" in text
    assert "--dtype float16" in text
    assert "Ascend-cann-atb_8.0.RC1_cxx11abi" in text
    assert '"driver_version": "23.0.rc3"' in text
