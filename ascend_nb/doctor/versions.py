"""Which torch_npu goes with which CANN, torch and Python: the matching table as data.

Release names follow Huawei's: ``8.0.RC1`` (release candidate), ``8.0.0`` (commercial). torch_npu
``X.Y.Z[.postN]`` pairs with torch ``X.Y.Z``; each CANN release lists the torch_npu builds made for it,
newest torch first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

TORCH_NPU_FOR_CANN: dict[str, tuple[str, ...]] = {
    "8.0.RC1": ("2.2.0", "2.1.0.post4", "1.11.0.post11"),
    "8.0.RC2": ("2.3.1", "2.2.0.post2", "2.1.0.post6"),
    "8.0.RC3": ("2.4.0", "2.3.1.post2", "2.1.0.post8"),
    "8.0.0": ("2.4.0.post2", "2.3.1.post4", "2.1.0.post10"),
    "8.1.RC1": ("2.5.1", "2.4.0.post4", "2.3.1.post6", "2.1.0.post12"),
    "8.2.RC1": ("2.6.0", "2.5.1.post1", "2.1.0.post13"),
    "8.3.RC1": ("2.8.0", "2.7.1", "2.6.0.post3", "2.1.0.post17"),
    "8.5.0": ("2.9.0", "2.8.0.post2", "2.7.1.post2", "2.6.0.post5"),
    "9.0.0": ("2.10.0", "2.9.0.post2", "2.8.0.post4", "2.7.1.post4"),
    "9.1.0": ("2.12.0", "2.11.0", "2.10.0.post4", "2.9.0.post6", "2.7.1.post8"),
}

# (first torch minor, last torch minor or None for "and later", lowest Python, highest Python)
PYTHON_FOR_TORCH: tuple[tuple[tuple[int, int], tuple[int, int] | None, str, str], ...] = (
    ((2, 1), (2, 1), "3.8", "3.11"),
    ((2, 5), (2, 6), "3.9", "3.11"),
    ((2, 7), (2, 8), "3.9", "3.13"),
    ((2, 9), None, "3.10", "3.13"),
)


def base_version(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``, ``2.1.0.post4`` -> ``2.1.0``: the torch release a build belongs to."""
    try:
        return Version(version).base_version
    except InvalidVersion:
        return version.split("+")[0]


def cann_release(version: str | None) -> str | None:
    """The table key for a CANN version string, or None when the table has no such release.

    ``8.0.RC1`` and ``8.0.RC1.alpha003`` map to ``8.0.RC1``; a four- or five-part inner number such as
    ``8.2.0.0.201`` (``toolkit/version.info``) maps to the only release of its ``X.Y`` line, if unique.
    """
    if not version:
        return None
    parts = version.strip().split(".")
    key = ".".join(parts[:3])
    if key in TORCH_NPU_FOR_CANN:
        return key
    if len(parts) >= 3 and parts[2].upper().startswith("RC"):
        return None
    same_line = [release for release in TORCH_NPU_FOR_CANN if release.split(".")[:2] == parts[:2]]
    return same_line[0] if len(same_line) == 1 else None


def pairs_with_torch(torch_npu_version: str, torch_version: str) -> bool:
    """torch_npu X.Y.Z[.postN] is built against torch X.Y.Z exactly."""
    return base_version(torch_npu_version) == base_version(torch_version)


def python_range(torch_version: str) -> tuple[str, str] | None:
    """The Python versions torch_npu wheels exist for on this torch line, or None when not on record."""
    match = re.match(r"(\d+)\.(\d+)", torch_version)
    if not match:
        return None
    minor = (int(match[1]), int(match[2]))
    for first, last, low, high in PYTHON_FOR_TORCH:
        if first <= minor and (last is None or minor <= last):
            return low, high
    return None


def python_in_range(python_version: str, bounds: tuple[str, str]) -> bool:
    """True when ``3.11.7`` lies within ``("3.10", "3.13")`` (minor versions, inclusive)."""
    minor = Version(".".join(python_version.split(".")[:2]))
    return Version(bounds[0]) <= minor <= Version(bounds[1])


@dataclass(frozen=True)
class Recommendation:
    """A torch + torch_npu pair to install, and the CANN release that lists it."""

    torch: str
    torch_npu: str
    cann: str
    changes_torch: bool  # False when the installed torch can stay

    @property
    def pip_command(self) -> str:
        if self.changes_torch:
            return f"pip install torch=={self.torch} torch_npu=={self.torch_npu}"
        return f"pip install torch_npu=={self.torch_npu}"

    def describe(self) -> str:
        """The pip command plus the context a person needs to trust it."""
        note = f"listed for CANN {self.cann}"
        bounds = python_range(self.torch)
        if bounds:
            note += f"; Python {bounds[0]}-{bounds[1]}"
        return f"{self.pip_command}  ({note})"


def recommend(torch_version: str, cann: str | None = None) -> Recommendation:
    """The torch_npu to install for this torch (kept when possible) and CANN release (when known).

    With a known CANN: its build for this torch, else its newest pair (torch must change). Without:
    the newest CANN release that has a build for this torch, else the newest pair of the newest CANN.
    """
    torch_base = base_version(torch_version)
    releases = [cann] if cann in TORCH_NPU_FOR_CANN else list(reversed(TORCH_NPU_FOR_CANN))
    for release in releases:
        for build in TORCH_NPU_FOR_CANN[release]:
            if base_version(build) == torch_base:
                return Recommendation(torch_base, build, release, changes_torch=False)
    newest = TORCH_NPU_FOR_CANN[releases[0]][0]
    return Recommendation(base_version(newest), newest, releases[0], changes_torch=True)


def torch_lines_for(cann: str) -> str:
    """``2.6.0, 2.5.1, 2.1.0``: the torch versions a CANN release has torch_npu builds for."""
    return ", ".join(base_version(build) for build in TORCH_NPU_FOR_CANN[cann])
