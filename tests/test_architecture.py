"""The import arrows of docs/DESIGN.md, checked on the source (no imports executed).

- `failtax/` (robot-agnostic) names no robot package, not even inside a function;
  `sim/` and `nav_policy/` name no pipeline package; `serving/` knows nothing of failure
  analysis; `common/` is a leaf. Only `loop/` (the composition root) joins the towers.
- No import circle in the house, counting imports inside functions too: an import inside
  a function that would close a circle at module level is a circle dodged, not removed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "serving", "failtax", "sim", "nav_policy", "loop")

# package -> the project packages it must never import (directly or inside functions)
FORBIDDEN = {
    "common": {"serving", "failtax", "sim", "nav_policy", "loop"},
    "serving": {"failtax", "sim", "nav_policy", "loop"},
    "failtax": {"sim", "nav_policy", "loop"},
    "sim": {"failtax", "nav_policy", "loop", "serving"},
    "nav_policy": {"failtax", "loop", "serving"},
    "loop": set(),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool) -> list[str]:
    """Project modules an import statement loads (a `from pkg import name` that names a
    submodule loads that submodule)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_pkg else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                 for a in node.names]
    out = []
    for name in names:
        # the longest project module that the dotted name starts with
        parts = name.split(".")
        while parts and ".".join(parts) not in MODULES:
            parts.pop()
        if parts:
            out.append(".".join(parts))
    return out


def _imports(module: str, path: Path) -> list[tuple[str, bool, int]]:
    """(imported project module, inside a function?, line) for every runtime import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for orelse in child.orelse:
                    visit(orelse, in_function)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((t, in_function, child.lineno)
                             for t in _targets(child, module, is_pkg))
            inner = in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(tree, False)
    return found


IMPORTS = {m: _imports(m, p) for m, p in MODULES.items()}


@pytest.mark.parametrize("package", PACKAGES)
def test_towers_do_not_import_each_other(package: str) -> None:
    bad = [f"{m}:{line} imports {t}" for m, imps in IMPORTS.items()
           if m.split(".")[0] == package
           for t, _, line in imps if t.split(".")[0] in FORBIDDEN[package]]
    assert not bad, "\n".join(bad)


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle in the graph, or None (iterative depth-first search)."""
    state: dict[str, int] = {}
    for start in sorted(edges):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(edges[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            nxt = next(children, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(sorted(edges.get(nxt, ())))))
    return None


def test_no_import_circle_even_through_function_level_imports() -> None:
    edges = {m: {t for t, _, _ in imps if t != m} for m, imps in IMPORTS.items()}
    # importing a.b.c runs a/__init__ and a/b/__init__ first: a package's __init__ that
    # imports its own submodules is not a circle, so only explicit imports count.
    cycle = _cycle(edges)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
