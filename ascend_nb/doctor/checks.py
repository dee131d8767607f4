"""Judge a :class:`~ascend_nb.doctor.probe.Probe`: one pure function per install step of the guides.

Each function returns rows with the exact fix in ``hint``: the torch_npu to pip install for this
torch and CANN, the ATB ``.run`` of the right C++ ABI, the ``set_env.sh`` to source. Without Ascend
software the Ascend rows are ``skip`` with the reason; once any Ascend piece is present, a missing
piece is a ``fail``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from ascend_nb.doctor import versions
from ascend_nb.doctor.ascend_files import ATB_DIR
from ascend_nb.doctor.probe import Probe
from ascend_nb.doctor.report import Check
from ascend_nb.dtypes import dtype_name, parse_dtype
from ascend_nb.errors import AscendNbError

# the guides' install order: system, firmware + driver, CANN toolkit, torch + torch_npu, ATB, then
# what the notebooks use (devices, packages); Report.step_table(step) shows one of them
STEPS = ("system", "driver", "cann", "torch", "atb", "devices", "packages")
TOOLKIT_ENV = ("ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH", "ASCEND_OPP_PATH", "ASCEND_AICPU_PATH", "TOOLCHAIN_HOME")
DEFAULT_MODEL_BYTES = 15 * 10**9  # a 7B model in fp16 (Baichuan2-7B-Chat: 7.5B parameters x 2 bytes)
MIN_GLIBC, MIN_GCC = "2.27", "7.5.0"
REQUIRED_PACKAGES = ("transformers",)  # the others only matter for the notebooks: warn
HEALTH_WARN = ("warning",)
CONTAINER_DEVICES = "--device /dev/davinci0 --device /dev/davinci_manager --device /dev/devmm_svm --device /dev/hisi_hdc"
ATB_ABI_ERROR = "undefined symbol: _ZNK6AsdOps3Ops18GetOperationByNameERKSs"


@dataclass(frozen=True)
class Request:
    """What the user intends to run: it sets the RAM/disk budget and whether bf16 is asked for."""

    model_bytes: int | None = None
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.dtype != "auto":
            parse_dtype(self.dtype)  # raises on an unknown name
        if self.model_bytes is not None and self.model_bytes <= 0:
            raise AscendNbError(f"model size must be positive, got {self.model_bytes} bytes")

    @property
    def wants_bf16(self) -> bool:
        return self.dtype != "auto" and dtype_name(self.dtype) == "bfloat16"

    @property
    def weights(self) -> tuple[int, str]:
        if self.model_bytes is None:
            return DEFAULT_MODEL_BYTES, "a 7B model in fp16"
        return self.model_bytes, "the model's weights"


def _at_least(version: str, minimum: str) -> bool:
    """``12.2.0`` >= ``7.5.0``; only the leading dotted number counts (``2.36-9ubuntu`` -> 2.36)."""
    match = re.match(r"\d+(\.\d+)*", version)
    return bool(match) and Version(match[0]) >= Version(minimum)


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def _row(step: str) -> Callable[..., Check]:
    def make(name: str, status: str, found: str = "", expected: str = "", hint: str = "") -> Check:
        return Check(name, status, found, expected, hint, step)
    return make


def _chip(p: Probe) -> str:
    """The chip family in Huawei's package names (``Ascend-hdk-910b-npu-driver_...``)."""
    names = " ".join(d.name for d in p.npu_smi.devices) if p.npu_smi else ""
    return "310p" if "310P" in names else "910b" if "910B" in names else "<910b|310p>"


def _release(p: Probe) -> str | None:
    return versions.cann_release(p.toolkit.version) if p.toolkit else None


def _recommendation(p: Probe) -> versions.Recommendation:
    return versions.recommend(p.torch_version, _release(p))


def _not_ascend(p: Probe) -> str:
    return f"no Ascend software under {p.ascend_root} ({p.ascend_root_source})"


def _minimum_version(row, name: str, found: str | None, minimum: str, missing: str, missing_hint: str,
                     too_old_hint: str) -> Check:
    """warn when the tool is absent, fail when older than ``minimum``, else pass."""
    if found is None:
        return row(name, "warn", missing, f">= {minimum}", missing_hint)
    ok = _at_least(found, minimum)
    return row(name, "pass" if ok else "fail", found, f">= {minimum}", "" if ok else too_old_hint)


# 1. system ------------------------------------------------------------------------------------------

def check_system(p: Probe, request: Request) -> Iterator[Check]:
    row = _row("system")
    if p.system == "Linux" and p.machine in ("aarch64", "x86_64"):
        yield row("os/arch", "pass", f"{p.system} {p.machine}", "Linux aarch64 or x86_64")
    else:
        yield row("os/arch", "warn", f"{p.system} {p.machine}", "Linux aarch64 or x86_64",
                  "Ascend packages exist only for Linux aarch64/x86_64; CUDA and CPU still work here")

    yield _minimum_version(row, "glibc", p.glibc, MIN_GLIBC, "not glibc (musl or unknown)",
                           "CANN and torch_npu need a glibc distribution (Ubuntu, openEuler, EulerOS, CentOS)",
                           f"glibc {p.glibc} is too old: use a distribution with glibc >= {MIN_GLIBC} (Ubuntu 18.04+)")
    yield _minimum_version(row, "gcc", p.gcc, MIN_GCC, "gcc not on PATH",
                           "apt-get install gcc g++ (Ubuntu/Debian) or yum install gcc gcc-c++ (openEuler/CentOS)",
                           f"gcc {p.gcc} is older than {MIN_GCC}: install a newer gcc (e.g. devtoolset / gcc-9)")

    bounds = versions.python_range(p.torch_version)
    if bounds is None:
        yield row("python", "skip", p.python_version, "",
                  f"no torch_npu Python range on record for torch {versions.base_version(p.torch_version)}")
    else:
        expected = f"{bounds[0]}-{bounds[1]} (torch_npu wheels for torch {versions.base_version(p.torch_version)})"
        if versions.python_in_range(p.python_version, bounds):
            yield row("python", "pass", p.python_version, expected)
        else:
            yield row("python", "fail" if p.ascend_present else "warn", p.python_version, expected,
                      f"create the environment with Python {bounds[1]} (conda create -n ascend-nb python={bounds[1]})")

    need, label = request.weights
    if p.ram_available is None:
        yield row("RAM", "skip", "/proc/meminfo unreadable", f">= {_gb(need)} free for {label}")
    else:
        ok = p.ram_available >= need
        yield row("RAM", "pass" if ok else "fail", f"{_gb(p.ram_available)} available of {_gb(p.ram_total or 0)}",
                  f">= {_gb(need)} free for {label}",
                  "" if ok else "weights are read into host memory once, even for NPU/CUDA: close other "
                                "processes or use a machine with more RAM")

    if p.cache_problem:
        problem, _, fix = p.cache_problem.partition("; ")
        yield row("cache folder", "fail", problem, "a writable folder for models and kernels", fix)
    status = "fail" if p.disk_free < need else "warn" if p.disk_free < 2 * need else "pass"
    yield row("disk", status, f"{_gb(p.disk_free)} free at {p.disk_path}",
              f">= {_gb(2 * need)}: {label} + a converted copy",
              "" if status == "pass" else "free space there or point ASCEND_NB_HOME at a larger disk "
                                          "(export ASCEND_NB_HOME=/data/ascend_nb)")


# 2. firmware and driver ------------------------------------------------------------------------------

def check_driver(p: Probe, request: Request) -> Iterator[Check]:
    row = _row("driver")
    arch, chip = p.machine, _chip(p)
    for name, info, run_file, missing_status in (
            ("firmware", p.firmware, f"Ascend-hdk-{chip}-npu-firmware_<version>.run --full", "warn"),
            ("driver", p.driver, f"Ascend-hdk-{chip}-npu-driver_<version>_linux-{arch}.run --full", "fail")):
        where = p.ascend_root / name / "version.info"
        if info is None:
            if p.ascend_present:
                note = " (containers often do not mount it)" if name == "firmware" else ""
                yield row(name, missing_status, f"no {where}{note}", "installed (firmware first, then driver)",
                          f"chmod +x {run_file.split()[0]} && ./{run_file}")
            else:
                yield row(name, "skip", _not_ascend(p), "installed on Ascend machines")
        elif info.version is None:
            yield row(name, "fail", f"{where} has no Version= line", "Version=...", f"reinstall: ./{run_file}")
        else:
            yield row(name, "pass", f"{info.version} ({info.key} in {where})", "installed")

    result = p.npu_smi
    if result is None:
        if p.ascend_present:
            yield row("npu-smi", "warn", "npu-smi not on PATH", "npu-smi info lists the NPUs",
                      "it ships with the driver (/usr/local/sbin/npu-smi): export PATH=$PATH:/usr/local/sbin, or in "
                      "a container mount it (-v /usr/local/sbin/npu-smi:/usr/local/sbin/npu-smi)")
        else:
            yield row("npu-smi", "skip", "npu-smi not on PATH (no Ascend driver here)", "npu-smi info lists the NPUs")
    elif result.error:
        yield row("npu-smi", "fail", result.error, "npu-smi info lists the NPUs",
                  f"the driver cannot reach the NPUs: check ls /dev/davinci*, reinstall the driver "
                  f"(./Ascend-hdk-{chip}-npu-driver_<version>_linux-{arch}.run --full) and reboot; in a container "
                  f"pass {CONTAINER_DEVICES} -v /usr/local/Ascend/driver:/usr/local/Ascend/driver")
    else:
        names = sorted({d.name for d in result.devices})
        summary = ", ".join(f"{n} x{sum(d.name == n for d in result.devices)}" for n in names)
        yield row("npu-smi", "pass", f"npu-smi {result.version or '?'}: {len(result.devices)} NPU chip(s): {summary}",
                  "npu-smi info lists the NPUs")


# 3. CANN toolkit -------------------------------------------------------------------------------------

def check_cann(p: Probe, request: Request) -> Iterator[Check]:
    row = _row("cann")
    toolkit, arch = p.toolkit, p.machine
    known = ", ".join(versions.TORCH_NPU_FOR_CANN)
    if toolkit is None:
        cann = _recommendation(p).cann
        found = (f"no ascend_toolkit_install.info under {p.ascend_root}/cann/*-linux or "
                 f"{p.ascend_root}/ascend-toolkit/latest/*-linux")
        install = (f"./Ascend-cann-toolkit_{cann}_linux-{arch}.run --install, then "
                   f"./Ascend-cann-kernels-{_chip(p)}_{cann}_linux.run --install")
        if p.ascend_present:
            yield row("CANN toolkit", "fail", found, f"a CANN release in the matching table ({known})", install)
        else:
            yield row("CANN toolkit", "skip", f"{found}: {_not_ascend(p)}", "installed on Ascend machines",
                      f"on an Ascend machine: {install}")
        yield row("toolkit set_env.sh", "skip", "no CANN toolkit", "sourced before every run")
        return

    release = versions.cann_release(toolkit.version)
    where = f"{toolkit.info_file}"
    if toolkit.version is None:
        yield row("CANN toolkit", "fail", f"{where} has no version=", "version=<release>",
                  f"reinstall: ./Ascend-cann-toolkit_<release>_linux-{arch}.run --install")
    elif release is None:
        yield row("CANN toolkit", "warn", f"{toolkit.version} ({where})", f"a release in the matching table ({known})",
                  "this CANN is not in ascend-nb's matching table: check the torch_npu release notes for its torch_npu")
    else:
        shown = toolkit.version if toolkit.version == release else f"{toolkit.version} (release {release})"
        yield row("CANN toolkit", "pass", f"{shown}, {toolkit.arch or '?'} ({where})",
                  f"a release in the matching table ({known})")

    env = p.env
    missing = [name for name in TOOLKIT_ENV if not env.get(name)]
    library_path = {os.path.normpath(entry) for entry in env.get("LD_LIBRARY_PATH", "").split(":") if entry}
    if env.get("ASCEND_TOOLKIT_HOME") and os.path.normpath(Path(env["ASCEND_TOOLKIT_HOME"]) / "lib64") not in library_path:
        missing.append("LD_LIBRARY_PATH ($ASCEND_TOOLKIT_HOME/lib64)")
    expected = f"{', '.join(TOOLKIT_ENV)} set by {toolkit.set_env}"
    if missing:
        yield row("toolkit set_env.sh", "fail", f"not sourced: {', '.join(missing)} unset", expected,
                  f"source {toolkit.set_env}")
    elif Path(env["ASCEND_HOME_PATH"]).resolve() != toolkit.home.resolve():
        yield row("toolkit set_env.sh", "warn", f"ASCEND_HOME_PATH={env['ASCEND_HOME_PATH']} is another CANN than "
                  f"{toolkit.home}", expected, f"source {toolkit.set_env} (in a fresh shell)")
    else:
        yield row("toolkit set_env.sh", "pass", f"sourced: ASCEND_HOME_PATH={env['ASCEND_HOME_PATH']}", expected)


# 4. torch and torch_npu ------------------------------------------------------------------------------

def check_torch(p: Probe, request: Request) -> Iterator[Check]:
    row = _row("torch")
    release, rec = _release(p), _recommendation(p)
    expected = (f"a torch with a torch_npu build for CANN {release}: {versions.torch_lines_for(release)}" if release
                else "any (on Ascend, torch_npu pins it)")
    yield row("torch", "pass", f"{p.torch_version}, compiled_with_cxx11_abi() = {p.cxx11_abi}", expected)

    npu = p.torch_npu_version
    if npu is None:
        if p.ascend_present:
            yield row("torch_npu", "fail", "not installed", rec.torch_npu, rec.describe())
        else:
            yield row("torch_npu", "skip", "not installed (only needed with an Ascend NPU)", rec.torch_npu,
                      f"on an Ascend machine: {rec.describe()}")
        yield row("torch_npu pairs with torch", "skip", "torch_npu not installed", "torch_npu X.Y.Z[.postN] with torch X.Y.Z")
        yield row("torch_npu listed for CANN", "skip", "torch_npu not installed", "a torch_npu the CANN release lists")
        return

    if p.torch_npu_problem:
        fix = (f"source {p.toolkit.set_env}" if p.toolkit and "import" in p.torch_npu_problem
               else "npu-smi info (see the driver rows)")
        yield row("torch_npu", "fail", f"{npu} installed; {p.torch_npu_problem}", "imports and sees the NPUs", fix)
    else:
        yield row("torch_npu", "pass", f"{npu}, torch.npu available", "imports and sees the NPUs")

    pair_expected = f"torch {versions.base_version(npu)} for torch_npu {npu}"
    if versions.pairs_with_torch(npu, p.torch_version):
        yield row("torch_npu pairs with torch", "pass", f"torch_npu {npu} with torch {p.torch_version}", pair_expected)
    else:
        listed = release is not None and npu in versions.TORCH_NPU_FOR_CANN[release]
        fix = f"pip install torch=={versions.base_version(npu)}" if listed or release is None else rec.describe()
        yield row("torch_npu pairs with torch", "fail", f"torch_npu {npu} with torch {p.torch_version}", pair_expected, fix)

    if release is None:
        reason = "no CANN toolkit found" if p.toolkit is None else f"CANN {p.toolkit.version} is not in the table"
        yield row("torch_npu listed for CANN", "skip", reason, "a torch_npu the CANN release lists")
        return
    builds = versions.TORCH_NPU_FOR_CANN[release]
    expected = f"one of {', '.join(builds)} (CANN {release})"
    if npu in builds:
        yield row("torch_npu listed for CANN", "pass", f"torch_npu {npu} with CANN {release}", expected)
    else:
        yield row("torch_npu listed for CANN", "fail", f"torch_npu {npu} is not listed for CANN {release}", expected,
                  rec.describe())


# 5. ATB -----------------------------------------------------------------------------------------------

def check_atb(p: Probe, request: Request) -> Iterator[Check]:
    row = _row("atb")
    abi = int(p.cxx11_abi)
    atb, release = p.atb, _release(p)
    abi_expected = f"cxx_abi_{abi} (torch.compiled_with_cxx11_abi() is {p.cxx11_abi})"
    run_file = f"Ascend-cann-atb_{(atb and atb.version) or release or '<cann release>'}_cxx11abi{abi}_linux-{p.machine}.run"
    install = f"chmod +x {run_file} && ./{run_file} --install && source {p.ascend_root}/nnal/atb/set_env.sh"
    if atb is None:
        reason = f"not installed under {p.ascend_root}/nnal/atb" + ("" if p.ascend_present else f": {_not_ascend(p)}")
        yield row("ATB", "skip", reason, "only the guides' ATB model code needs it", f"to install: {install}")
        yield row("ATB ABI", "skip", "ATB not installed", abi_expected, f"to install: {install}")
        yield row("ATB_HOME_PATH", "skip", "ATB not installed", f"{p.ascend_root}/{ATB_DIR}/latest/atb/cxx_abi_{abi}")
        return

    detail = ", ".join(x for x in (atb.build, atb.platform) if x)
    found = f"{atb.version or '?'} ({detail})" if detail else f"{atb.version or '?'}"
    if atb.version is None:
        yield row("ATB", "warn", f"{atb.home / 'version.info'} has no 'Ascend-cann-atb :' line", "a readable version",
                  f"reinstall: {install}")
    elif release and versions.cann_release(atb.version) != release:
        yield row("ATB", "warn", found, f"the ATB of CANN {release}",
                  f"install the ATB release that matches CANN {release}: "
                  f"./Ascend-cann-atb_{release}_cxx11abi{abi}_linux-{p.machine}.run --install")
    else:
        yield row("ATB", "pass", found, f"the ATB of CANN {release}" if release else "installed")

    installed = ", ".join(f"cxx_abi_{n}" for n in atb.abis) or "no cxx_abi_* directory"
    if abi in atb.abis:
        yield row("ATB ABI", "pass", f"{installed} installed", abi_expected)
    else:
        yield row("ATB ABI", "fail", f"{installed} installed (otherwise: {ATB_ABI_ERROR})", abi_expected, install)

    value = p.env.get("ATB_HOME_PATH")
    wanted = atb.abi_dir(abi)
    if not value:
        yield row("ATB_HOME_PATH", "warn", "unset: nnal/atb/set_env.sh not sourced", str(wanted), f"source {atb.set_env}")
    elif Path(value).name == f"cxx_abi_{1 - abi}":
        yield row("ATB_HOME_PATH", "fail", f"{value}: the other C++ ABI (gives {ATB_ABI_ERROR})", str(wanted),
                  f"source {wanted.parent / 'set_env.sh'} --cxx_abi={abi}")
    elif Path(value).name != f"cxx_abi_{abi}":
        yield row("ATB_HOME_PATH", "warn", f"{value}: not a cxx_abi_<n> directory", str(wanted), f"source {atb.set_env}")
    else:
        yield row("ATB_HOME_PATH", "pass", value, str(wanted))


# 6. devices -------------------------------------------------------------------------------------------

def check_devices(p: Probe, request: Request) -> Iterator[Check]:
    row = _row("devices")
    npus = p.npu_smi.devices if p.npu_smi else ()
    for d in npus:
        health = d.health.lower()
        status = "pass" if health == "ok" else "warn" if health in HEALTH_WARN else "fail"
        yield row(f"NPU {d.npu_id} chip {d.chip_id}", status,
                  f"{d.name}, health {d.health}, memory {d.memory_used_mb}/{d.memory_total_mb} MB", "health OK",
                  "" if status == "pass" else f"npu-smi info -t health -i {d.npu_id}")

    if not npus:
        yield row("bf16 on NPU", "skip", "no NPU listed by npu-smi", "bf16 on 910B; float16 only on 310P")
    else:
        without = [d for d in npus if not d.bf16]
        listing = ", ".join(f"{d.name} (NPU {d.npu_id} chip {d.chip_id})" for d in without)
        if not without:
            yield row("bf16 on NPU", "pass", f"yes: {', '.join(sorted({d.name for d in npus}))}", "bf16 on 910B")
        elif request.wants_bf16:
            yield row("bf16 on NPU", "fail", f"dtype {request.dtype} asked; no bf16 on {listing}", "float16 on 310P",
                      "use dtype='float16' (--dtype float16): 310P has no bfloat16 "
                      "(aclnnCast ... not implemented for DT_BFLOAT16)")
        else:
            yield row("bf16 on NPU", "pass", f"no bf16 on {listing}", f"float16 on 310P (dtype {request.dtype})")

    if p.cuda_devices:
        found = "; ".join(f"cuda:{d.index} {d.name} ({d.total_memory_mb:.0f} MB, bf16 {'yes' if d.supports_bf16 else 'no'})"
                          for d in p.cuda_devices)
        yield row("CUDA", "pass", found, "torch.cuda.is_available()")
    else:
        reason = f"torch built with CUDA {p.torch_cuda}, but no device visible" if p.torch_cuda else "torch built for CPU"
        yield row("CUDA", "skip", f"no CUDA device ({reason})", "torch.cuda.is_available()")

    yield row("CPU", "pass", f"{p.cpu.name}, {p.cpu_count} cores, native bf16 {'yes' if p.cpu.supports_bf16 else 'no'}",
              "always available (float32, or bf16 where the CPU has it)")
    if p.cpu_features is not None:
        paths = ", ".join(p.cpu_kernel_paths)
        slower = "" if p.cpu_kernel_paths[0].endswith("-gemv") or p.cpu_features.cpu_class in ("neon", "generic") else \
            " (the native kernels are built in the cache folder, which cannot be used: see its row)" if p.cache_problem \
            else " (the native GEMVs did not build: install g++ and ninja, then `ascend-nb fetch`)"
        yield row("CPU kernels", "pass" if not slower else "warn",
                  f"{p.cpu_features.cpu_class}: {' '.join(p.cpu_features.flags)}; kernel paths {paths}",
                  "the fastest path this CPU runs is the accelerated backend's default" + slower,
                  "force one with ASCEND_NB_KERNELS=PATH or --kernels PATH")

    expected = "npu on an Ascend machine, else cuda, else cpu"
    if npus and p.auto_device != "npu":
        yield row("device='auto'", "fail", f"{p.auto_device}: npu-smi lists NPUs but torch cannot use them", expected,
                  "fix the torch_npu rows above")
    else:
        yield row("device='auto'", "pass", p.auto_device, expected)


# 7. notebook packages --------------------------------------------------------------------------------

def check_packages(p: Probe, request: Request) -> Iterator[Check]:
    row = _row("packages")
    for pkg in p.packages:
        spec = SpecifierSet(pkg.requirement[len(pkg.name):]) if pkg.requirement else SpecifierSet()
        wanted = pkg.requirement or pkg.name
        bad = "fail" if pkg.name in REQUIRED_PACKAGES else "warn"
        if pkg.version is None:
            yield row(pkg.name, bad, "not installed", wanted, f'pip install "{wanted}"')
        elif spec and not spec.contains(pkg.version, prereleases=True):
            yield row(pkg.name, bad, pkg.version, wanted, f'pip install "{wanted}"')
        else:
            yield row(pkg.name, "pass", pkg.version, wanted)


CHECKS = (check_system, check_driver, check_cann, check_torch, check_atb, check_devices, check_packages)


def evaluate(p: Probe, request: Request | None = None) -> list[Check]:
    """Every row, in the order the guides install things."""
    request = request or Request()
    return [check for step in CHECKS for check in step(p, request)]


def facts(p: Probe) -> dict:
    """The versions and devices found (the ``facts`` of ``--json``)."""
    return {
        "ascend_root": str(p.ascend_root),
        "cann_version": p.toolkit.version if p.toolkit else None,
        "driver_version": p.driver.version if p.driver else None,
        "firmware_version": p.firmware.version if p.firmware else None,
        "atb_version": p.atb.version if p.atb else None,
        "torch_version": p.torch_version,
        "torch_npu_version": p.torch_npu_version,
        "cxx11_abi": p.cxx11_abi,
        "recommended_atb_abi": int(p.cxx11_abi),
        "python_version": p.python_version,
        "npu_smi_version": p.npu_smi.version if p.npu_smi else None,
        "npus": [d.as_dict() for d in (p.npu_smi.devices if p.npu_smi else ())],
        "cuda_devices": [{"index": d.index, "name": d.name, "memory_total_mb": d.total_memory_mb, "bf16": d.supports_bf16}
                         for d in p.cuda_devices],
    }
