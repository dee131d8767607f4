"""ascend_nb's imports point down the layers and never form a cycle.

Every module is parsed (no import runs); every ``import`` counts, including those inside functions,
so an import cannot dodge a cycle by hiding in a function, and so does every string that names a module
(``"ascend_nb.engine.accelerated:AcceleratedEngine"`` in a table imported on first use, a lazy export).
The layer order lives here, once.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ascend_nb

PACKAGE = Path(ascend_nb.__file__).parent

# Lowest first. A module may import its own layer and those below, never above. The key is the first
# name after ``ascend_nb.`` (``ascend_nb.cli.bench`` -> ``cli``).
LAYERS = (
    ("errors", "files", "atomic", "lazy", "dtypes", "cpu_features", "native", "parallel", "progress", "tables",
     "figure_style", "serving", "wheels", "quant_formats"),
    ("device",),
    ("models",),      # registry, templates, params, dims, checkpoint reading, validation, where the embedded model lives
    ("convert",),     # per-source converters and their shared machinery; preparing the embedded model
    ("engine",),      # the backends, and engine.loading (load() and the backend table) on top of them
    ("precision",),
    ("bench", "doctor"),
    ("inspect",),
    ("ui",),
    ("__init__",),    # the package root: re-exports ascend_nb.load and the generation types
    ("cli", "__main__"),  # every argparse module and the shared options
)



def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the ascend_nb modules it imports (``from pkg import name`` counts as pkg.name when that is a module)."""

    def known(name: str) -> str:
        while name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {known(a.name) for a in node.names if a.name.startswith("ascend_nb")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base] * bool(base))
                if base.startswith("ascend_nb"):
                    targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else known(base) for a in node.names}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = node.value.partition(":")[0]  # "module" or "module:attribute", imported by name later
                if "." in named and named in mods:  # (plain "ascend_nb" is also the torch.ops namespace)
                    targets.add(named)
        edges[name] = targets - {name}
    return edges


def layer(module: str) -> int:
    key = module.split(".")[1] if "." in module else "__init__"
    for index, names in enumerate(LAYERS):
        if key in names:
            return index
    raise AssertionError(f"{module} is in no layer: add {key!r} to LAYERS in tests/test_layers.py")


def test_every_module_is_in_a_layer():
    for module in modules():
        layer(module)


def test_no_import_points_up():
    upward = {(m, t) for m, targets in imports(modules()).items() for t in targets if layer(t) > layer(m)}
    assert sorted(upward) == []


def test_no_import_cycle():
    edges = imports(modules())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert cycles == []
