"""The package's modules import each other without cycles.

The graph is read from the source with `ast`, so it counts every import,
including those inside functions: an import deferred to call time still ties
the two modules together, and hiding a cycle that way is what this test is
here to stop.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = "ray_serving_ext"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path, modules: Set[str], external: bool = False) -> Set[str]:
    """The package modules `path` imports (with `external`, the top-level names of
    everything else it imports)."""
    module = _module_name(path)
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node, path.name == "__init__.py")
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        if external:
            found |= {t.split(".")[0] for t in targets if t and not t.startswith(PACKAGE)}
            continue
        for target in targets:
            # `from pkg import mod` names a module; `from mod import name` names its module.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module and target.startswith(PACKAGE):
                found.add(target)
    return found


def import_graph() -> Dict[str, Set[str]]:
    """Module name -> the package modules it imports."""
    paths = sorted(ROOT.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def imported_closure(module: str) -> Set[str]:
    """Every top-level package `module` imports, itself or through the package
    modules it imports (a package's own ``__init__`` not counted: it is what
    re-exports the API, not what the module needs)."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = import_graph()
    seen, todo, external = set(), [module], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        external |= _imports(paths[name], set(paths), external=True)
        todo += [m for m in graph[name] if not name.startswith(m + ".") and m != PACKAGE]
    return external


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle as a path [a, b, ..., a], or [] if there is none.

    A package's ``__init__`` re-exporting its submodules is not a cycle
    (importing ``pkg.mod`` runs ``pkg/__init__`` first by definition), so edges
    into a package from its own submodules are left out.
    """
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if node.startswith(nxt + "."):
                continue  # a submodule importing its own package
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_graph_reads_relative_and_nested_imports():
    graph = import_graph()
    assert "ray_serving_ext._private.cluster" in graph["ray_serving_ext._private.client"]
    assert "ray_serving_ext.config" in graph["ray_serving_ext.deployment"]
    assert "ray" in imported_closure("ray_serving_ext._private.client")  # through cluster.py


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)
