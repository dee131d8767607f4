"""Look at this machine once: OS, compilers, Python packages, Ascend files, npu-smi, devices, memory.

Everything the checks judge is gathered here into a :class:`Probe`, so the checks stay pure functions
(and tests can swap single facts with ``dataclasses.replace``). Nothing here raises for a missing or
broken component: absence is a fact.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from packaging.requirements import Requirement

from ascend_nb import device as devices
from ascend_nb.cpu_features import CpuFeatures, cpu_features
from ascend_nb.doctor import ascend_files, npu_smi
from ascend_nb.doctor.ascend_files import AtbInfo, ToolkitInfo, VersionInfo
from ascend_nb.doctor.npu_smi import NpuSmiResult
from ascend_nb.errors import AscendNbError
from ascend_nb.files import cache_home_problem, configured_cache_home
from ascend_nb.models.embedded import embedded_model_dir, is_prepared
from ascend_nb.models.registry import MODELS
from ascend_nb.models.validation import WEIGHT_PATTERNS

NOTEBOOK_PACKAGES = ("transformers", "ipywidgets", "jupyterlab", "plotly", "anywidget", "pandas")


@dataclass(frozen=True)
class PackageState:
    """An installed Python distribution and the version range ascend-nb declares for it."""

    name: str
    version: str | None
    requirement: str  # e.g. "transformers>=5.0,<6" ("" when ascend-nb's metadata is unavailable)


@dataclass(frozen=True)
class Probe:
    """What is installed and visible here; the checks turn it into pass/warn/fail/skip rows."""

    ascend_root: Path
    ascend_root_source: str  # "--ascend-root", "$ASCEND_HOME_PATH" or "default"
    env: Mapping[str, str]
    system: str
    machine: str
    glibc: str | None
    gcc: str | None
    python_version: str
    torch_version: str
    cxx11_abi: bool
    torch_cuda: str | None
    torch_npu_version: str | None  # from the installed distribution, without importing it
    torch_npu_problem: str | None  # why torch.npu is unusable (None: it works or is not installed)
    toolkit: ToolkitInfo | None
    driver: VersionInfo | None
    firmware: VersionInfo | None
    atb: AtbInfo | None
    npu_smi: NpuSmiResult | None  # None: npu-smi is not on PATH
    cuda_devices: tuple[devices.DeviceInfo, ...]
    cpu: devices.DeviceInfo
    cpu_count: int
    auto_device: str
    ram_total: int | None
    ram_available: int | None
    disk_path: Path
    disk_free: int
    packages: tuple[PackageState, ...] = field(default=())
    cpu_features: CpuFeatures | None = None
    cpu_kernel_paths: tuple[str, ...] = ()  # the accelerated backend's CPU kernel paths runnable here, fastest first
    cache_problem: str | None = None  # why $ASCEND_NB_HOME cannot hold models and kernels (None: it can)

    @property
    def ascend_present(self) -> bool:
        """Any sign of Ascend software: then a missing piece is a failure, not a skip."""
        return any((self.toolkit, self.driver, self.npu_smi, self.torch_npu_version))


def resolve_ascend_root(ascend_root: str | Path | None, env: Mapping[str, str]) -> tuple[Path, str]:
    """The argument (must exist), else the root implied by ``$ASCEND_HOME_PATH``, else /usr/local/Ascend."""
    if ascend_root is not None:
        path = Path(ascend_root).expanduser()
        if not path.is_dir():
            raise AscendNbError(f"--ascend-root {path} is not a directory: give the folder holding "
                                "ascend-toolkit/ (or cann/), driver/ and nnal/, e.g. /usr/local/Ascend")
        return path, "--ascend-root"
    from_env = ascend_files.root_from_env(env)
    if from_env is not None:
        return from_env, "$ASCEND_HOME_PATH"
    return ascend_files.DEFAULT_ROOT, "default"


def _gcc_version(env: Mapping[str, str]) -> str | None:
    gcc = shutil.which("gcc", path=env.get("PATH", ""))
    if gcc is None:
        return None
    try:
        done = subprocess.run([gcc, "-dumpfullversion", "-dumpversion"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _glibc_version() -> str | None:
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return None
    name, _, version = text.partition(" ")
    return version if name == "glibc" and version else None


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _packages() -> tuple[PackageState, ...]:
    try:
        declared = {Requirement(r).name.lower(): Requirement(r) for r in importlib.metadata.requires("ascend-nb") or ()
                    if "extra ==" not in r}
    except importlib.metadata.PackageNotFoundError:
        declared = {}
    return tuple(PackageState(name, _distribution_version(name),
                              f"{name}{declared[name].specifier}" if name in declared else "")
                 for name in NOTEBOOK_PACKAGES)


def _cuda_devices() -> tuple[devices.DeviceInfo, ...]:
    if not torch.cuda.is_available():
        return ()
    return tuple(devices.device_info(f"cuda:{index}") for index in range(torch.cuda.device_count()))


def collect(ascend_root: str | Path | None = None, env: Mapping[str, str] | None = None) -> Probe:
    """Probe this machine (and the Ascend install under ``ascend_root``)."""
    env = dict(os.environ if env is None else env)
    root, source = resolve_ascend_root(ascend_root, env)
    torch_npu_version = _distribution_version("torch_npu")
    ram_total, ram_available = devices.host_memory()
    cache_problem = cache_home_problem()
    disk_path = _existing_parent(configured_cache_home())
    return Probe(
        ascend_root=root, ascend_root_source=source, env=env,
        system=platform.system(), machine=platform.machine(), glibc=_glibc_version(), gcc=_gcc_version(env),
        python_version=platform.python_version(),
        torch_version=torch.__version__, cxx11_abi=bool(torch.compiled_with_cxx11_abi()), torch_cuda=torch.version.cuda,
        torch_npu_version=torch_npu_version,
        torch_npu_problem=devices.npu_unavailable_reason() if torch_npu_version else None,
        toolkit=ascend_files.read_toolkit(root), driver=ascend_files.read_driver(root),
        firmware=ascend_files.read_firmware(root), atb=ascend_files.read_atb(root),
        npu_smi=npu_smi.run_npu_smi(env),
        cuda_devices=_cuda_devices(), cpu=devices.device_info("cpu"), cpu_count=os.cpu_count() or 1,
        auto_device=devices.available_device_types()[0],
        ram_total=ram_total, ram_available=ram_available,
        disk_path=disk_path, disk_free=shutil.disk_usage(disk_path).free,
        packages=_packages(), cpu_features=cpu_features(),
        cache_problem=cache_problem,
        cpu_kernel_paths=tuple(devices.runnable_kernel_paths("cpu")),
    )


def weights_bytes(model: str | Path) -> int | None:
    """Bytes of weight files for a local model directory or a prepared registry model, else None."""
    text = str(model)
    if text in MODELS:
        if not MODELS[text].embedded or not is_prepared(embedded_model_dir()):
            return None
        path = embedded_model_dir()
    else:
        path = Path(text).expanduser()
        if not path.is_dir():
            raise AscendNbError(f"model directory {path} does not exist: give a registry name or a local directory")
    files = {f for pattern in (*WEIGHT_PATTERNS, "*.gguf") for f in path.glob(pattern)}
    return sum(f.stat().st_size for f in files) or None
