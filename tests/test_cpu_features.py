"""CPU features from /proc/cpuinfo and the kernel paths each CPU class may run (no probing here:
the texts are the two kinds of machine this project runs on, and an aarch64 Ascend host)."""

import pytest

from ascend_nb import device as devices
from ascend_nb.cpu_features import cpu_features, parse_cpuinfo

EPYC = "processor: 0\nmodel name: AMD EPYC 7B13\nflags: fpu sse2 avx f16c fma avx2 bmi2\n"
XEON = ("processor: 0\nmodel name: Intel(R) Xeon(R) Processor\nflags: fpu avx f16c fma avx2 avx512f avx512dq "
        "avx512bw avx512vl avx_vnni avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8\n")
KUNPENG = "processor: 0\nBogoMIPS: 200.00\nFeatures: fp asimd evtstrm aes sve\nCPU implementer: 0x48\n"


def supported(features) -> list[str]:
    return [path for path in devices.KERNEL_PATHS["cpu"] if devices.CPU_PATH_NEEDS[path][0](features)]


@pytest.mark.parametrize("text, arch, onednn, cpu_class, paths", [
    (EPYC, "x86_64", False, "avx2", ["cpu-avx2-gemv", "cpu-aten", "torch"]),
    (XEON, "x86_64", True, "amx", list(devices.KERNEL_PATHS["cpu"])),
    (KUNPENG, "aarch64", False, "neon", ["cpu-aten", "torch"]),
])
def test_each_cpu_class_gets_its_kernel_paths(text, arch, onednn, cpu_class, paths):
    features = parse_cpuinfo(text, arch, onednn_bf16=onednn)
    assert features.cpu_class == cpu_class and supported(features) == paths
    assert features.name != arch or arch == "aarch64"  # x86 names come from "model name"


def test_flags_are_read_not_guessed():
    xeon = parse_cpuinfo(XEON, "x86_64", onednn_bf16=True)
    assert xeon.flags == ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                          "amx_bf16", "amx_int8", "onednn_bf16"]
    assert parse_cpuinfo(KUNPENG, "aarch64").flags == ["neon", "sve"]


def test_this_machine_runs_its_default_path():
    """Whatever this CPU is, the default placement is its first runnable path, and it is runnable."""
    features = cpu_features()
    runnable = devices.runnable_kernel_paths("cpu")
    assert set(runnable) <= set(supported(features)) and runnable[-2:] == ["cpu-aten", "torch"]
    assert devices.place("cpu", "float32", "accelerated").kernels == runnable[0]
