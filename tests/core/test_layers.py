"""The package's import direction (docs/design.md): no import circle, the bottom modules import
nothing of the package, and the web modules and the pure decisions import nothing above them.
Imports are read from the source with `ast`, including those inside functions and under
TYPE_CHECKING, which an import-time check would miss."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "lucidgrant"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lucidgrant"):
                base = str(node.module)
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names} & modules.keys()
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("lucidgrant.")}
        edges[name] = {m for m in found if m in modules and m not in (name, "lucidgrant")}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                found.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def below(edges: dict[str, set[str]], name: str) -> set[str]:
    """Everything `name` imports, directly or not."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for dep in edges[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_no_import_circle():
    assert cycles(graph()) == []


def test_the_checker_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_nothing_imports_upward():
    edges = graph()
    for bottom in ("names", "timing", "grant", "kube"):
        assert edges[f"lucidgrant.{bottom}"] == set(), bottom
    for web in ("web", "authflow", "authstate", "flowhost", "flowpages"):
        assert "lucidgrant.runtime" not in below(edges, f"lucidgrant.{web}"), web
    for pure in ("decide", "failures"):
        deep = below(edges, f"lucidgrant.{pure}")
        io = {"refresh", "consumer", "deletion", "publish", "reconcile", "runtime"}
        assert not deep & {f"lucidgrant.{m}" for m in io}, pure
    plugin = below(edges, "lucidgrant.cli.kubectl")
    assert not plugin & {"lucidgrant.reconcile", "lucidgrant.metrics", "lucidgrant.runtime"}
