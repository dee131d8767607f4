"""The environment doctor end to end: fixture Ascend installs + a stand-in npu-smi -> rows, facts, CLI.

No Ascend NPU, driver or CANN is reachable where these tests run, so Ascend machines are stand-ins:
install trees in the real formats under tests/fixtures/ascend/ (see its README) and a stand-in
``npu-smi`` on PATH that prints real ``npu-smi info`` samples. torch_npu is not installable here
either: its version, and the torch it would sit beside, are set on the probe with
``dataclasses.replace``. Everything else (this machine's OS, compilers, RAM, packages) is real.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from ascend_nb import doctor
from ascend_nb.doctor.report import STATUS_STYLES
from ascend_nb.cli import main
from ascend_nb.doctor.checks import STEPS, TOOLKIT_ENV, Request, evaluate, facts
from ascend_nb.doctor.probe import collect
from ascend_nb.errors import AscendNbError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ascend"
ASCEND_VARS = (*TOOLKIT_ENV, "ATB_HOME_PATH", "LD_LIBRARY_PATH")
SMALL = 10**6  # a 1 MB "model", so RAM and disk rows pass on any machine


def clean_env(sample: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without any sourced Ascend set_env.sh, plus the stand-in npu-smi."""
    env = {k: v for k, v in os.environ.items() if k not in ASCEND_VARS}
    if sample:
        env["PATH"] = f"{FIXTURES / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["NPU_SMI_SAMPLE"] = str(FIXTURES / "npu_smi" / sample)
    return {**env, **extra}


def sourced(box: str, *scripts: str) -> dict[str, str]:
    """The Ascend variables after ``source``-ing the fixture's set_env.sh scripts in bash, as users do."""
    commands = "; ".join(f"source {FIXTURES / box / script}" for script in scripts)
    done = subprocess.run(["bash", "-c", f"{commands} >/dev/null && env -0"], env=clean_env(), capture_output=True,
                          text=True, check=True)
    env = dict(item.split("=", 1) for item in done.stdout.split("\0") if "=" in item)
    return {k: env[k] for k in ASCEND_VARS if k in env}


def probe(box: str, sample: str | None, env: dict[str, str] | None = None, **replace):
    return dataclasses.replace(collect(FIXTURES / box, env=env if env is not None else clean_env(sample)), **replace)


def rows(p, **request) -> dict[str, doctor.Check]:
    return {c.name: c for c in evaluate(p, Request(model_bytes=SMALL, **request))}


# facts: every version and device, exactly ----------------------------------------------------------

def test_910b_cann82_facts():
    f = facts(probe("910b_cann82", "910b.txt", cxx11_abi=False))
    assert {k: f[k] for k in ("cann_version", "driver_version", "firmware_version", "atb_version", "npu_smi_version",
                              "cxx11_abi", "recommended_atb_abi")} == {
        "cann_version": "8.2.RC1", "driver_version": "25.0.rc1.1", "firmware_version": "7.7.0.1.231",
        "atb_version": "8.2.RC1", "npu_smi_version": "23.0.2.1", "cxx11_abi": False, "recommended_atb_abi": 0}
    assert f["npus"] == [
        {"npu_id": 0, "chip_id": 0, "name": "910B2C", "health": "OK", "memory_used_mb": 20701,
         "memory_total_mb": 65536, "bf16": True},
        {"npu_id": 1, "chip_id": 0, "name": "910B2C", "health": "Warning", "memory_used_mb": 3379,
         "memory_total_mb": 65536, "bf16": True}]
    assert f["ascend_root"] == str(FIXTURES / "910b_cann82")


def test_310p_old_driver_facts():
    f = facts(probe("310p_cann80", "310p.txt"))
    assert (f["cann_version"], f["driver_version"], f["firmware_version"], f["atb_version"]) == (
        "8.0.RC1", "23.0.rc3", "7.1.0.3.220", "8.0.RC1")
    assert [(d["npu_id"], d["chip_id"], d["name"], d["memory_used_mb"], d["memory_total_mb"], d["bf16"])
            for d in f["npus"]] == [(1, 0, "310P3", 16302, 44280, False), (1, 1, "310P3", 15543, 43693, False)]


def test_cann85_layout():
    p = probe("cann85", "910b.txt")
    assert facts(p)["cann_version"] == "8.5.0" and facts(p)["atb_version"] is None
    r = rows(p)
    assert r["CANN toolkit"].status == "pass"
    assert r["toolkit set_env.sh"].hint == f"source {FIXTURES / 'cann85' / 'cann' / 'set_env.sh'}"
    sourced_rows = rows(probe("cann85", None, env={**clean_env("910b.txt"), **sourced("cann85", "cann/set_env.sh")}))
    assert sourced_rows["toolkit set_env.sh"].status == "pass"


# rows: each mismatch gives the right status and the exact fix ---------------------------------------

def test_unsourced_toolkit_set_env_fails_with_the_source_command():
    r = rows(probe("910b_cann82", "910b.txt"))
    row = r["toolkit set_env.sh"]
    assert row.status == "fail"
    assert all(name in row.found for name in TOOLKIT_ENV)
    assert row.hint == f"source {FIXTURES / '910b_cann82' / 'ascend-toolkit' / 'set_env.sh'}"


def test_sourced_set_env_scripts_pass():
    env = {**clean_env("910b.txt"),
           **sourced("910b_cann82", "ascend-toolkit/set_env.sh", "nnal/atb/set_env.sh --cxx_abi=1")}
    r = rows(probe("910b_cann82", None, env=env, cxx11_abi=True))
    assert r["toolkit set_env.sh"].status == "pass"
    assert r["ATB_HOME_PATH"].status == "pass"
    assert r["ATB_HOME_PATH"].found == str(FIXTURES / "910b_cann82/nnal/atb/latest/atb/cxx_abi_1")


def test_set_env_of_another_cann_warns():
    env = {**clean_env("910b.txt"), **sourced("310p_cann80", "ascend-toolkit/set_env.sh")}
    row = rows(probe("910b_cann82", None, env=env))["toolkit set_env.sh"]
    assert row.status == "warn" and "310p_cann80" in row.found


def test_atb_home_path_on_the_wrong_abi_fails():
    env = {**clean_env("910b.txt"), **sourced("910b_cann82", "nnal/atb/set_env.sh --cxx_abi=0")}
    row = rows(probe("910b_cann82", None, env=env, cxx11_abi=True))["ATB_HOME_PATH"]
    assert row.status == "fail"
    assert "_ZNK6AsdOps3Ops18GetOperationByNameERKSs" in row.found
    assert row.hint == f"source {FIXTURES / '910b_cann82/nnal/atb/latest/atb/set_env.sh'} --cxx_abi=1"


def test_unsourced_atb_set_env_warns():
    row = rows(probe("910b_cann82", "910b.txt"))["ATB_HOME_PATH"]
    assert row.status == "warn" and row.hint == f"source {FIXTURES / '910b_cann82/nnal/atb/set_env.sh'}"


def test_missing_atb_abi_package_names_the_run_file():
    r = rows(probe("310p_cann80", "310p.txt", cxx11_abi=True, machine="x86_64"))
    assert r["ATB ABI"].status == "fail"
    assert r["ATB ABI"].found.startswith("cxx_abi_0 installed")
    assert "./Ascend-cann-atb_8.0.RC1_cxx11abi1_linux-x86_64.run --install" in r["ATB ABI"].hint
    assert rows(probe("310p_cann80", "310p.txt", cxx11_abi=False))["ATB ABI"].status == "pass"


def test_torch_npu_not_listed_for_the_cann_fails_with_the_listed_build():
    r = rows(probe("910b_cann82", "910b.txt", torch_version="2.5.1", torch_npu_version="2.5.1", torch_npu_problem=None))
    assert r["torch_npu pairs with torch"].status == "pass"
    row = r["torch_npu listed for CANN"]
    assert row.status == "fail" and row.found == "torch_npu 2.5.1 is not listed for CANN 8.2.RC1"
    assert row.hint.startswith("pip install torch_npu==2.5.1.post1  (listed for CANN 8.2.RC1")
    ok = rows(probe("910b_cann82", "910b.txt", torch_version="2.5.1", torch_npu_version="2.5.1.post1",
                    torch_npu_problem=None))
    assert ok["torch_npu listed for CANN"].status == "pass" and ok["torch_npu"].status == "pass"


def test_torch_npu_built_for_another_torch_fails_with_the_matching_torch():
    row = rows(probe("910b_cann82", "910b.txt", torch_version="2.6.0", torch_npu_version="2.5.1.post1",
                     torch_npu_problem=None))["torch_npu pairs with torch"]
    assert row.status == "fail" and row.hint == "pip install torch==2.5.1"


def test_missing_torch_npu_on_an_ascend_machine_fails_with_the_pip_command():
    row = rows(probe("910b_cann82", "910b.txt", torch_version="2.4.0", torch_npu_version=None))["torch_npu"]
    assert row.status == "fail"
    assert row.hint.startswith("pip install torch==2.6.0 torch_npu==2.6.0")


def test_torch_npu_import_failure_points_at_set_env():
    problem = "import torch_npu failed: libhccl.so: cannot open shared object file (source the CANN set_env.sh first)"
    row = rows(probe("910b_cann82", "910b.txt", torch_version="2.6.0", torch_npu_version="2.6.0",
                     torch_npu_problem=problem))["torch_npu"]
    assert row.status == "fail" and "libhccl.so" in row.found
    assert row.hint == f"source {FIXTURES / '910b_cann82' / 'ascend-toolkit' / 'set_env.sh'}"


def test_bf16_asked_on_310p_fails_and_auto_passes():
    p = probe("310p_cann80", "310p.txt")
    asked = rows(p, dtype="bfloat16")["bf16 on NPU"]
    assert asked.status == "fail" and "--dtype float16" in asked.hint
    assert "310P3 (NPU 1 chip 0), 310P3 (NPU 1 chip 1)" in asked.found
    assert rows(p)["bf16 on NPU"].status == "pass"
    assert rows(probe("910b_cann82", "910b.txt"), dtype="bf16")["bf16 on NPU"].status == "pass"


def test_npu_health_rows():
    r = rows(probe("910b_cann82", "910b.txt"))
    assert r["NPU 0 chip 0"].status == "pass"
    assert r["NPU 1 chip 0"].status == "warn" and r["NPU 1 chip 0"].hint == "npu-smi info -t health -i 1"


def test_broken_driver_is_a_fail_row_not_a_crash():
    r = rows(probe("broken_driver", "dcmi_failed.txt"))
    assert r["npu-smi"].status == "fail"
    assert "dcmi module initialize failed. ret is -8005" in r["npu-smi"].found
    assert "/dev/davinci_manager" in r["npu-smi"].hint
    assert r["driver"].status == "pass" and r["bf16 on NPU"].status == "skip"


def test_unknown_cann_release_warns(tmp_path):
    info = tmp_path / "ascend-toolkit" / "latest" / "x86_64-linux"
    info.mkdir(parents=True)
    (info / "ascend_toolkit_install.info").write_text("version=7.0.RC1\narch=x86_64\n")
    r = rows(dataclasses.replace(collect(tmp_path, env=clean_env()), torch_npu_version="2.1.0.post4",
                                 torch_npu_problem=None))
    assert r["CANN toolkit"].status == "warn"
    assert r["torch_npu listed for CANN"].status == "skip"


def test_old_compilers_and_wrong_python_fail_on_an_ascend_box():
    r = rows(probe("910b_cann82", "910b.txt", gcc="4.8.5", glibc="2.17", python_version="3.12.1", torch_version="2.6.0"))
    assert (r["gcc"].status, r["glibc"].status, r["python"].status) == ("fail", "fail", "fail")
    assert r["python"].expected.startswith("3.9-3.11") and "python=3.11" in r["python"].hint
    r = rows(probe("910b_cann82", "910b.txt", gcc=None, glibc="2.28-ubuntu", python_version="3.11.2"))
    assert (r["gcc"].status, r["glibc"].status) == ("warn", "pass")


# this machine -------------------------------------------------------------------------------------

def test_without_ascend_every_ascend_row_skips_with_a_reason(tmp_path):
    p = collect(tmp_path, env=clean_env())
    assert not p.ascend_present
    checks = evaluate(p, Request(model_bytes=SMALL))
    ascend_steps = {"driver", "cann", "atb"}
    for c in checks:
        if c.step in ascend_steps or c.name.startswith("torch_npu") or c.name == "bf16 on NPU":
            assert c.status == "skip" and c.found, c
    assert list(dict.fromkeys(c.step for c in checks)) == list(STEPS)  # rows in the guides' install order
    assert not [c for c in checks if c.status == "fail"]


def test_run_resolves_the_root_from_ascend_home_path(monkeypatch):
    for name in ASCEND_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASCEND_HOME_PATH", str(FIXTURES / "cann85" / "cann"))
    report = doctor.run(model_bytes=SMALL)
    assert report.facts["ascend_root"] == str(FIXTURES / "cann85")
    assert report.facts["cann_version"] == "8.5.0"


def test_run_rejects_a_missing_root_and_bad_request(tmp_path):
    with pytest.raises(AscendNbError, match="not a directory"):
        doctor.run(tmp_path / "nope")
    with pytest.raises(AscendNbError, match="unknown dtype"):
        doctor.run(tmp_path, dtype="int3")


def test_run_is_fast_and_the_report_is_consistent(tmp_path):
    start = time.perf_counter()
    report = doctor.run(tmp_path, model_bytes=SMALL)
    assert time.perf_counter() - start < 5
    assert list(report.table.columns) == ["check", "status", "found", "expected", "hint"]
    assert len(report.table) == len(report.checks)
    assert report.exit_code == (1 if (report.table.status == "fail").any() else 0)


def test_ram_and_disk_fail_for_a_model_larger_than_the_machine(tmp_path):
    huge = 10**15
    r = {c.name: c for c in evaluate(collect(tmp_path, env=clean_env()), Request(model_bytes=huge))}
    assert r["RAM"].status == "fail" and r["disk"].status == "fail"
    assert "ASCEND_NB_HOME" in r["disk"].hint


# report and CLI -----------------------------------------------------------------------------------

def test_report_fixes_list_failures_first_and_exit_code():
    report = doctor.Report([doctor.Check("a", "warn", hint="do a"), doctor.Check("b", "fail", hint="do b"),
                            doctor.Check("c", "pass")])
    assert report.fixes() == ["[fail] b: do b", "[warn] a: do a"]
    assert report.exit_code == 1
    assert doctor.Report([doctor.Check("a", "skip")]).exit_code == 0
    with pytest.raises(ValueError):
        doctor.Check("x", "ok")


def test_style_table_colours_each_status():
    report = doctor.Report([doctor.Check(s, s) for s in ("pass", "warn", "fail", "skip")])
    html = doctor.style_table(report.table)._repr_html_()
    for status, colour in (("pass", "#c8e6c9"), ("warn", "#ffe0b2"), ("fail", "#ffcdd2"), ("skip", "#eeeeee")):
        assert f'background-color: {colour}; color: {STATUS_STYLES[status].split("color: ")[-1]}">{status}</td>' in html
    assert "<style" not in html  # inline: JupyterLab keeps it in an untrusted (executed) notebook


def test_atb_home_path_row_expects_a_real_path_when_atb_is_missing(tmp_path):
    row = {c.name: c for c in doctor.run(tmp_path).checks}["ATB_HOME_PATH"]
    assert row.expected == f"{tmp_path}/nnal/atb/latest/atb/cxx_abi_{int(torch.compiled_with_cxx11_abi())}"


def test_step_summary_counts_each_status_per_step():
    report = doctor.Report([doctor.Check("a", "pass", step="system"), doctor.Check("b", "fail", step="system"),
                            doctor.Check("c", "skip", step="atb")])
    summary = report.step_summary()
    assert summary.to_dict("records") == [{"step": "system", "pass": 1, "warn": 0, "fail": 1, "skip": 0},
                                          {"step": "atb", "pass": 0, "warn": 0, "fail": 0, "skip": 1}]
    html = doctor.style_table(summary)._repr_html_()
    assert 'background-color: #ffcdd2; color: #b71c1c">1</td>' in html


def test_cli_json(monkeypatch, capsys):
    for name, value in clean_env("310p.txt").items():
        monkeypatch.setenv(name, value)
    for name in ASCEND_VARS:
        monkeypatch.delenv(name, raising=False)
    code = main(["doctor", "--ascend-root", str(FIXTURES / "310p_cann80"), "--json", "--dtype", "bfloat16"])
    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert set(data) == {"checks", "facts"}
    assert all(set(c) == {"name", "status", "found", "expected", "hint"} for c in data["checks"])
    assert {"cann_version", "driver_version", "firmware_version", "atb_version", "torch_version", "torch_npu_version",
            "cxx11_abi", "recommended_atb_abi", "npus", "cuda_devices"} <= set(data["facts"])
    assert data["facts"]["driver_version"] == "23.0.rc3" and len(data["facts"]["npus"]) == 2
    statuses = {c["name"]: c["status"] for c in data["checks"]}
    assert statuses["bf16 on NPU"] == "fail" and statuses["npu-smi"] == "pass"


def test_cli_text_and_errors(tmp_path, monkeypatch, capsys):
    for name in ASCEND_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", clean_env("dcmi_failed.txt")["PATH"])
    monkeypatch.setenv("NPU_SMI_SAMPLE", str(FIXTURES / "npu_smi" / "dcmi_failed.txt"))
    assert main(["doctor", "--ascend-root", str(FIXTURES / "broken_driver")]) == 1
    out = capsys.readouterr().out
    assert "npu-smi" in out and "How to fix:" in out and "dcmi module initialize failed" in out
    assert main(["doctor", "--ascend-root", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
