"""pyproject.toml is the source of truth; environment.yml must list the same packages."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_pyproject_dependencies():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dependencies = {_name(r): r.replace(" ", "") for r in pyproject["project"]["dependencies"]}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    pip_lines = [line.strip()[2:].strip() for line in lines[lines.index("  - pip:") + 1:] if line.strip().startswith("- ")]
    conda = {_name(r): r.replace(" ", "") for r in pip_lines if not r.startswith("-e")}
    assert set(conda) == set(dependencies)
    for name, requirement in dependencies.items():
        if name != "torch":  # environment.yml pins the CPU build the Makefile installs
            assert conda[name] == requirement, name
    assert conda["torch"] == "torch==2.13.0"


def test_torch_npu_is_an_optional_extra_only():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert not any(_name(r) == "torch-npu" for r in pyproject["project"]["dependencies"])
    assert [_name(r) for r in pyproject["project"]["optional-dependencies"]["npu"]] == ["torch-npu"]


def test_makefile_pins_torch_in_the_setup_path():
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH_PIN ?= torch==2.13.0" in makefile
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
