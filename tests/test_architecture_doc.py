"""docs/architecture.md gives every module of ascend_nb its sentence, in its layer's section."""

from __future__ import annotations

import re
from pathlib import Path

import ascend_nb

PACKAGE = Path(ascend_nb.__file__).parent
DOC = PACKAGE.parent / "docs" / "architecture.md"
BASE_SECTIONS = ("base", "device")  # where the modules directly under ascend_nb/ are described


def sections() -> dict[str, str]:
    """Section name (the bold heading, e.g. ``convert``) -> its text."""
    parts = re.split(r"^\*\*(\w+)\*\*.*$", DOC.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_module_has_its_sentence():
    text = sections()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if path.name == "__init__.py" and relative.parts[0] != "cli" or path.name == "__main__.py":
            continue  # a package's exports, described by its modules
        names = BASE_SECTIONS if len(relative.parts) == 1 else (relative.parts[0],)
        inside = Path(*relative.parts[1:]) if len(relative.parts) > 2 else path.name  # sources/gguf.py, kernels.py
        if not any(f"`{path.name}`" in text.get(name, "") or f"`{inside}`" in text.get(name, "") for name in names):
            missing.append(str(relative))
    assert missing == [], f"add a sentence for each of {missing} to docs/architecture.md"


def test_every_described_module_exists():
    for name, body in sections().items():
        folder = PACKAGE / name
        paths = folder.rglob("*.py") if folder.is_dir() else PACKAGE.glob("*.py")
        nested = {str(p.relative_to(folder)) for p in folder.rglob("*.py")} if folder.is_dir() else set()
        known = {p.name for p in paths} | nested
        described = set(re.findall(r"^\s*- `([\w/]+\.py)`", body, flags=re.M))
        assert described and sorted(described - known) == [], f"docs/architecture.md's {name} names modules that are gone"
