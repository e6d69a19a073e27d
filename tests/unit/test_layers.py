"""The architecture's one rule, checked on the source: each layer imports only the layers below it.

    errors → config → db → apps | store → sync → worker → scheduler → console

apps and store are side by side: neither imports the other. An import inside a function counts as
much as one at the top: a lazy import that goes upwards is still a cycle waiting to happen.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tablesync"
LAYERS = {"errors": 0, "config": 1, "db": 2, "apps": 3, "store": 3, "sync": 4, "worker": 5, "scheduler": 6, "console": 7}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "tablesync" else None


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names if node.module == "tablesync")
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_every_module_belongs_to_a_layer() -> None:
    for path in modules():
        rel = path.relative_to(PACKAGE)
        if rel.parts == ("__init__.py",):
            continue
        assert (rel.parts[0] if len(rel.parts) > 1 else rel.stem) in LAYERS, f"{rel} is in no layer"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_only_downwards(path: Path) -> None:
    rel = path.relative_to(PACKAGE)
    own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    if own not in LAYERS:
        return
    wrong = []
    for line, module in imports(path):
        other = layer_of(module)
        if other is None or other == own:
            continue
        if LAYERS[other] >= LAYERS[own]:
            wrong.append(f"line {line}: {module} ({other} is not below {own})")
    assert not wrong, f"tablesync/{rel} imports upwards or sideways:\n  " + "\n  ".join(wrong)


def runtime_imports(path: Path) -> set[str]:
    """The tablesync modules `path` imports when it runs (anywhere in it, but not for type checking only)."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("tablesync.")}


def test_no_module_imports_itself_through_others() -> None:
    """No import cycle, not even through a lazy import inside a function: each module can be read
    (and reasoned about) after the ones it imports."""
    names = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p for p in modules()}
    names = {n.removesuffix(".__init__"): p for n, p in names.items()}
    graph = {n: {m for m in runtime_imports(p) if m in names and m != n} for n, p in names.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycle = path[path.index(m):] + [m]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if m not in state:
                visit(m)
        path.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
