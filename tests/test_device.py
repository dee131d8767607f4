import os
import subprocess
import sys

import pytest
import torch

from ascend_nb import device as devices
from ascend_nb.errors import AscendNbError


def test_autoload_of_torch_npu_is_disabled_before_torch_is_imported():
    code = "import ascend_nb, os, sys; print(os.environ['TORCH_DEVICE_BACKEND_AUTOLOAD'], 'torch_npu' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "TORCH_DEVICE_BACKEND_AUTOLOAD"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["0", "False"]


def test_npu_is_reported_unavailable_with_a_reason_here():
    # No NPU (and no torch_npu) exists on this machine: the layer must say why instead of crashing.
    reason = devices.npu_unavailable_reason()
    assert reason and "torch_npu" in reason
    assert not devices.npu_available()
    with pytest.raises(AscendNbError, match="npu.*not available.*torch_npu"):
        devices.resolve_device("npu")


def test_auto_picks_the_best_available_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert devices.resolve_device("auto").type == expected
    assert devices.available_device_types()[-1] == "cpu"


@pytest.mark.parametrize("bad", ["tpu", "gpu0", "cuda:x"])
def test_unknown_device_is_a_clear_error(bad):
    with pytest.raises(AscendNbError, match="device"):
        devices.resolve_device(bad)


def test_cpu_has_one_device():
    assert devices.resolve_device("cpu:0") == torch.device("cpu:0")
    with pytest.raises(AscendNbError, match="'cpu:5' does not exist: the CPU is one device"):
        devices.resolve_device("cpu:5")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(AscendNbError, match="cuda.*not available"):
        devices.resolve_device("cuda")


def test_auto_dtype_on_cpu_follows_native_bf16_support():
    expected = torch.bfloat16 if devices.cpu_supports_bf16() else torch.float32
    assert devices.resolve_dtype("auto", "cpu") == expected
    assert devices.resolve_dtype("fp16", "cpu") == torch.float16
    with pytest.raises(AscendNbError, match="unknown dtype"):
        devices.resolve_dtype("int3", "cpu")


def _fake_npu(soc: int, name: str):
    # Stand-in for torch_npu's device query: no NPU is reachable here, so the dispatch on
    # SoC version is tested against the values real 310P / 910B devices report.
    return lambda device="auto": devices.DeviceInfo("npu", 0, name, soc, soc not in devices.SOC_310P, 44280.0)


def test_bf16_on_310p_is_refused_and_auto_picks_fp16(monkeypatch):
    monkeypatch.setattr(devices, "device_info", _fake_npu(202, "Ascend310P3"))
    with pytest.raises(AscendNbError, match="310P.*bfloat16.*float16"):
        devices.resolve_dtype("bfloat16", "npu")
    assert devices.resolve_dtype("auto", "npu") == torch.float16


def test_bf16_on_910b4_is_allowed(monkeypatch):
    # 224 is the 910B4 that the Baichuan2 guide's SoC list forgot.
    monkeypatch.setattr(devices, "device_info", _fake_npu(224, "Ascend910B4"))
    assert devices.resolve_dtype("bf16", "npu") == torch.bfloat16
    assert not devices.device_info().is_310p


def test_cpu_memory_stats_and_synchronize():
    devices.synchronize("cpu")
    devices.reset_peak_memory("cpu")
    stats = devices.memory_stats("cpu")
    assert stats["peak_mb"] > 50  # a Python process with torch loaded
    assert devices.device_info("cpu").type == "cpu"


def test_host_memory_is_read_once_for_doctor_sweep_and_planner():
    total, available = devices.host_memory()
    assert total >= available > 0  # this machine has /proc/meminfo
    assert devices.free_memory_bytes("cpu") == pytest.approx(available, rel=0.5)
