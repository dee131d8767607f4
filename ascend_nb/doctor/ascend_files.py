"""Read what the Ascend installers leave on disk: toolkit, driver, firmware and ATB version files.

Layouts (``root`` is ``/usr/local/Ascend`` by default):
- CANN toolkit before 8.5: ``ascend-toolkit/latest/<arch>-linux/ascend_toolkit_install.info`` (``key=value``),
  ``ascend-toolkit/set_env.sh``; from 8.5: ``cann/<arch>-linux/...`` and ``cann/set_env.sh``.
  ``<home>/toolkit/version.info`` (``Version=8.2.0.0.201``) is the fallback.
- driver / firmware: ``driver/version.info``, ``firmware/version.info`` (``Version=``; newer driver
  files add ``package_version=``, which is preferred).
- ATB (NNAL): ``nnal/atb/latest/version.info`` with indented ``key : value`` lines, one directory per
  C++ ABI (``latest/atb/cxx_abi_0``, ``cxx_abi_1``) and ``nnal/atb/set_env.sh``.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("/usr/local/Ascend")
TOOLKIT_INFO = "ascend_toolkit_install.info"
# (layout name, toolkit home relative to root, set_env.sh relative to root), newest layout first
TOOLKIT_LAYOUTS = (("cann", "cann", "cann/set_env.sh"),
                   ("ascend-toolkit", "ascend-toolkit/latest", "ascend-toolkit/set_env.sh"))
ATB_DIR = "nnal/atb"


@dataclass(frozen=True)
class ToolkitInfo:
    """The installed CANN toolkit."""

    version: str | None
    inner_version: str | None
    arch: str | None
    home: Path  # what ASCEND_TOOLKIT_HOME / ASCEND_HOME_PATH point at once set_env.sh is sourced
    info_file: Path
    set_env: Path


@dataclass(frozen=True)
class VersionInfo:
    """A ``version.info`` file and the version read from it."""

    version: str | None
    key: str | None  # which key the version came from
    file: Path


@dataclass(frozen=True)
class AtbInfo:
    """The installed ATB acceleration library (NNAL)."""

    version: str | None  # the release, e.g. 8.2.RC1
    build: str | None  # e.g. 8.2.RC1.B150
    platform: str | None
    home: Path  # nnal/atb/latest
    abis: tuple[int, ...]  # installed cxx_abi_<n> packages
    set_env: Path

    def abi_dir(self, abi: int) -> Path:
        """Where ``ATB_HOME_PATH`` points for this ABI (``latest/atb/cxx_abi_<abi>``)."""
        for parent in (self.home / "atb", self.home):
            if (parent / f"cxx_abi_{abi}").is_dir():
                return parent / f"cxx_abi_{abi}"
        return self.home / "atb" / f"cxx_abi_{abi}"


def parse_key_values(text: str, sep: str = "=") -> dict[str, str]:
    """``key=value`` (or ``key : value``) lines into a dict; blank, comment and other lines are ignored."""
    values = {}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        if found and key.strip() and not key.strip().startswith("#"):
            values[key.strip()] = value.strip()
    return values


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def root_from_env(env: Mapping[str, str]) -> Path | None:
    """The Ascend root implied by ``$ASCEND_HOME_PATH`` / ``$ASCEND_TOOLKIT_HOME`` (set by set_env.sh).

    ``/usr/local/Ascend/ascend-toolkit/latest`` and ``/usr/local/Ascend/cann-8.5.0`` both give
    ``/usr/local/Ascend``.
    """
    for name in ("ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME"):
        if not env.get(name):
            continue
        path = Path(env[name])
        for candidate in (path, *path.parents):
            if candidate.name in ("ascend-toolkit", "cann") or candidate.name.startswith("cann-"):
                return candidate.parent
    return None


def _arch_dir(home: Path) -> Path | None:
    """``<home>/<arch>-linux`` holding the install info, this machine's architecture first."""
    candidates = sorted(home.glob(f"*-linux/{TOOLKIT_INFO}"))
    preferred = [c for c in candidates if c.parent.name == f"{platform.machine()}-linux"]
    chosen = (preferred or candidates or [None])[0]
    return chosen.parent if chosen else None


def read_toolkit(root: Path) -> ToolkitInfo | None:
    """The CANN toolkit under ``root`` (8.5+ ``cann/`` layout first), or None when there is none."""
    for _, home_rel, set_env_rel in TOOLKIT_LAYOUTS:
        home = root / home_rel
        arch_dir = _arch_dir(home)
        if arch_dir is not None:
            info = parse_key_values(_read(arch_dir / TOOLKIT_INFO))
            version = info.get("version") or _toolkit_version_info(home)
            return ToolkitInfo(version, info.get("innerversion"), info.get("arch") or arch_dir.name.split("-")[0],
                               home, arch_dir / TOOLKIT_INFO, root / set_env_rel)
        fallback = home / "toolkit" / "version.info"
        if fallback.is_file():
            return ToolkitInfo(_toolkit_version_info(home), None, None, home, fallback, root / set_env_rel)
    return None


def _toolkit_version_info(home: Path) -> str | None:
    path = home / "toolkit" / "version.info"
    return parse_key_values(_read(path)).get("Version") if path.is_file() else None


def read_version_file(path: Path, keys: tuple[str, ...] = ("Version",)) -> VersionInfo | None:
    """The first of ``keys`` present in a ``key=value`` version file, or None when the file is absent."""
    if not path.is_file():
        return None
    values = parse_key_values(_read(path))
    for key in keys:
        if values.get(key):
            return VersionInfo(values[key], key, path)
    return VersionInfo(None, None, path)


def read_driver(root: Path) -> VersionInfo | None:
    """``driver/version.info``: ``package_version`` when present (newer drivers), else ``Version``."""
    return read_version_file(root / "driver" / "version.info", ("package_version", "Version"))


def read_firmware(root: Path) -> VersionInfo | None:
    """``firmware/version.info``: ``Version``."""
    return read_version_file(root / "firmware" / "version.info")


def read_atb(root: Path) -> AtbInfo | None:
    """ATB (NNAL) under ``root``: version, platform and which C++ ABI packages are installed."""
    home = root / ATB_DIR / "latest"
    info_file = home / "version.info"
    if not info_file.is_file():
        return None
    values = parse_key_values(_read(info_file), sep=":")
    abis = tuple(sorted({int(path.name[-1]) for parent in (home / "atb", home)
                         for path in parent.glob("cxx_abi_[01]") if path.is_dir()}))
    return AtbInfo(values.get("Ascend-cann-atb"), values.get("Ascend-cann-atb Version"), values.get("Platform"),
                   home, abis, root / ATB_DIR / "set_env.sh")
