"""The package's modules import one another without a cycle.

A cycle holds only by the order in which modules happen to be imported (the first one
in sees the other half-made), and is usually papered over with an import moved into a
function. The graph here is every import between the package's modules, inside functions too
(only imports under ``TYPE_CHECKING`` are left out), read from the source.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "stashd"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported(name: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package's modules one import statement of module ``name`` loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    base = node.module or ""
    if node.level:
        package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    # ``from pkg import mod`` loads the submodule; ``from mod import name`` the module.
    found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    if len(found) < len(node.names) and base in MODULES:
        found.append(base)
    return found


def _edges(name: str, body: list[ast.stmt]) -> set[str]:
    out: set[str] = set()
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= _edges(name, node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update(m for m in _imported(name, node) if m != name)
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for field in ("body", "orelse", "finalbody"):
                out |= _edges(name, getattr(node, field, []))
            for handler in getattr(node, "handlers", []):
                out |= _edges(name, handler.body)
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            # An import inside a function counts too: moving an import into a function
            # hides a cycle from the interpreter, not from the design.
            out |= _edges(name, node.body)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk meets (empty when the graph is acyclic)."""
    state: dict[str, int] = {}
    path: list[str] = []
    found: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return found


def test_no_module_imports_itself_through_others() -> None:
    """The import graph of the package is acyclic."""
    graph = {name: _edges(name, ast.parse(path.read_text()).body) for name, path in MODULES.items()}
    assert sum(map(len, graph.values())) > 100  # the graph was read at all
    assert cycles(graph) == []


def test_a_cycle_is_found_when_there_is_one() -> None:
    """The walk reports a cycle, so an empty answer above means something."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_leaf_types_import_nothing_of_the_package() -> None:
    """stashd.types, which every layer imports, imports no module of the package itself."""
    leaf = "stashd.types"
    assert _edges(leaf, ast.parse(MODULES[leaf].read_text()).body) == set()
