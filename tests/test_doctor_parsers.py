"""The doctor's readers: the CANN/torch_npu matching table, Ascend version files and ``npu-smi info``.

No Ascend NPU, driver or CANN is reachable where these tests run, so the inputs are stand-ins in
the real formats (DESIGN.md section 3): install trees under tests/fixtures/ascend/ and a stand-in
``npu-smi`` script that prints real ``npu-smi info`` samples.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ascend_nb.doctor import ascend_files, npu_smi, versions
from ascend_nb.doctor.npu_smi import NpuDevice

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ascend"


# versions ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, release", [
    ("8.0.RC1", "8.0.RC1"), ("8.0.RC1.alpha003", "8.0.RC1"), ("8.0.0", "8.0.0"), ("8.5.0", "8.5.0"),
    ("8.2.0.0.201", "8.2.RC1"),  # toolkit/version.info inner number: the only 8.2 release
    ("8.0.0.0.201", "8.0.0"), ("8.0.RC4", None), ("7.0.0", None), ("8.1.0.1.1", "8.1.RC1"), ("", None), (None, None),
])
def test_cann_release_maps_version_strings_to_table_keys(text, release):
    assert versions.cann_release(text) == release


def test_torch_npu_pairs_with_the_same_torch_release_only():
    assert versions.pairs_with_torch("2.1.0.post13", "2.1.0")
    assert versions.pairs_with_torch("2.6.0", "2.6.0+cpu")
    assert not versions.pairs_with_torch("2.5.1.post1", "2.6.0")


@pytest.mark.parametrize("torch_version, bounds", [
    ("2.1.0", ("3.8", "3.11")), ("2.6.0", ("3.9", "3.11")), ("2.8.0", ("3.9", "3.13")), ("2.13.0+cpu", ("3.10", "3.13")),
    ("2.3.1", None),
])
def test_python_range_per_torch_line(torch_version, bounds):
    assert versions.python_range(torch_version) == bounds


def test_python_in_range_compares_minor_versions():
    assert versions.python_in_range("3.11.7", ("3.9", "3.11"))
    assert not versions.python_in_range("3.12.1", ("3.9", "3.11"))
    assert not versions.python_in_range("3.8.10", ("3.9", "3.11"))


def test_recommend_keeps_torch_when_the_cann_lists_a_build_for_it():
    rec = versions.recommend("2.5.1+cpu", "8.2.RC1")
    assert (rec.torch, rec.torch_npu, rec.cann, rec.changes_torch) == ("2.5.1", "2.5.1.post1", "8.2.RC1", False)
    assert rec.pip_command == "pip install torch_npu==2.5.1.post1"


def test_recommend_changes_torch_to_the_newest_pair_of_the_cann():
    rec = versions.recommend("2.13.0", "8.2.RC1")
    assert rec.pip_command == "pip install torch==2.6.0 torch_npu==2.6.0"
    assert "CANN 8.2.RC1" in rec.describe() and "Python 3.9-3.11" in rec.describe()


def test_recommend_without_cann_picks_the_newest_release_with_a_build_for_torch():
    assert versions.recommend("2.7.1").torch_npu == "2.7.1.post8"  # 9.1.0 lists 2.7.1.post8
    assert versions.recommend("2.13.0").pip_command == "pip install torch==2.12.0 torch_npu==2.12.0"


def test_each_cann_lists_its_builds_newest_torch_first():  # recommend() relies on it
    for release, builds in versions.TORCH_NPU_FOR_CANN.items():
        assert builds, release
        assert [versions.base_version(b) for b in builds] == sorted(
            (versions.base_version(b) for b in builds), key=lambda v: tuple(map(int, v.split("."))), reverse=True)


# Ascend files -----------------------------------------------------------------------------------------

def test_parse_key_values_handles_both_separators_and_skips_noise():
    assert ascend_files.parse_key_values("# c\nVersion=8.2.0\n\nbad line\narch = aarch64\n") == {
        "Version": "8.2.0", "arch": "aarch64"}
    assert ascend_files.parse_key_values("    Ascend-cann-atb Version : 8.2.RC1.B150\n", sep=":") == {
        "Ascend-cann-atb Version": "8.2.RC1.B150"}


def test_read_toolkit_pre_85_layout():
    root = FIXTURES / "910b_cann82"
    toolkit = ascend_files.read_toolkit(root)
    assert (toolkit.version, toolkit.inner_version, toolkit.arch) == ("8.2.RC1", "V100R001C22SPC001B231", "aarch64")
    assert toolkit.home == root / "ascend-toolkit" / "latest"
    assert toolkit.set_env == root / "ascend-toolkit" / "set_env.sh"
    assert toolkit.info_file == root / "ascend-toolkit/latest/aarch64-linux/ascend_toolkit_install.info"


def test_read_toolkit_85_cann_layout():
    root = FIXTURES / "cann85"
    toolkit = ascend_files.read_toolkit(root)
    assert (toolkit.version, toolkit.arch) == ("8.5.0", "x86_64")
    assert toolkit.home == root / "cann" and toolkit.set_env == root / "cann" / "set_env.sh"


def test_read_toolkit_falls_back_to_toolkit_version_info(tmp_path):
    home = tmp_path / "ascend-toolkit" / "latest" / "toolkit"
    home.mkdir(parents=True)
    (home / "version.info").write_text("Version=8.2.0.0.201\n")
    toolkit = ascend_files.read_toolkit(tmp_path)
    assert toolkit.version == "8.2.0.0.201" and toolkit.arch is None
    assert versions.cann_release(toolkit.version) == "8.2.RC1"


def test_read_toolkit_absent(tmp_path):
    assert ascend_files.read_toolkit(tmp_path) is None


def test_driver_prefers_package_version_and_falls_back_to_version():
    new = ascend_files.read_driver(FIXTURES / "910b_cann82")
    assert (new.version, new.key) == ("25.0.rc1.1", "package_version")
    old = ascend_files.read_driver(FIXTURES / "310p_cann80")
    assert (old.version, old.key) == ("23.0.rc3", "Version")


def test_firmware_version_and_unreadable_file(tmp_path):
    assert ascend_files.read_firmware(FIXTURES / "910b_cann82").version == "7.7.0.1.231"
    (tmp_path / "firmware").mkdir()
    (tmp_path / "firmware" / "version.info").write_text("garbage\n")
    assert ascend_files.read_firmware(tmp_path).version is None
    assert ascend_files.read_driver(tmp_path) is None


def test_read_atb_version_platform_and_abis():
    atb = ascend_files.read_atb(FIXTURES / "910b_cann82")
    assert (atb.version, atb.build, atb.platform, atb.abis) == ("8.2.RC1", "8.2.RC1.B150", "aarch64", (0, 1))
    assert atb.abi_dir(1) == FIXTURES / "910b_cann82/nnal/atb/latest/atb/cxx_abi_1"
    assert ascend_files.read_atb(FIXTURES / "310p_cann80").abis == (0,)
    assert ascend_files.read_atb(FIXTURES / "cann85") is None


@pytest.mark.parametrize("env, root", [
    ({"ASCEND_HOME_PATH": "/opt/Ascend/ascend-toolkit/latest"}, "/opt/Ascend"),
    ({"ASCEND_HOME_PATH": "/usr/local/Ascend/cann-8.5.0"}, "/usr/local/Ascend"),
    ({"ASCEND_TOOLKIT_HOME": "/home/u/Ascend/cann"}, "/home/u/Ascend"),
    ({"ASCEND_HOME_PATH": "/somewhere/else"}, None),
    ({}, None),
])
def test_root_from_env(env, root):
    assert ascend_files.root_from_env(env) == (Path(root) if root else None)


# npu-smi ----------------------------------------------------------------------------------------------

def test_parse_910b_layout_uses_hbm_and_skips_the_process_table():
    version, devices = npu_smi.parse_npu_smi((FIXTURES / "npu_smi" / "910b.txt").read_text())
    assert version == "23.0.2.1"
    assert devices == [NpuDevice(0, 0, "910B2C", "OK", 20701, 65536, True),
                       NpuDevice(1, 0, "910B2C", "Warning", 3379, 65536, True)]


def test_parse_310p_layout_two_chips_per_card_no_bf16():
    version, devices = npu_smi.parse_npu_smi((FIXTURES / "npu_smi" / "310p.txt").read_text())
    assert version == "23.0.rc3"
    assert devices == [NpuDevice(1, 0, "310P3", "OK", 16302, 44280, False),
                       NpuDevice(1, 1, "310P3", "OK", 15543, 43693, False)]


def _env(sample: str, **extra: str) -> dict[str, str]:
    return dict(os.environ, PATH=f"{FIXTURES / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                NPU_SMI_SAMPLE=str(FIXTURES / "npu_smi" / sample), **extra)


def test_run_npu_smi_through_the_stand_in():
    result = npu_smi.run_npu_smi(_env("310p.txt"))
    assert result.error is None and result.version == "23.0.rc3"
    assert [(d.npu_id, d.chip_id) for d in result.devices] == [(1, 0), (1, 1)]
    assert result.executable == str(FIXTURES / "bin" / "npu-smi")


@pytest.mark.parametrize("exit_code, prefix", [("0", "no NPU rows: "), ("255", "npu-smi info exited 255: ")])
def test_run_npu_smi_reports_the_dcmi_failure(exit_code, prefix):
    result = npu_smi.run_npu_smi(_env("dcmi_failed.txt", NPU_SMI_EXIT=exit_code))
    assert result.devices == ()
    assert result.error == prefix + "dcmi module initialize failed. ret is -8005"


def test_run_npu_smi_absent_from_path(tmp_path):
    assert npu_smi.run_npu_smi({"PATH": str(tmp_path)}) is None
