"""The house keeps its shape: the import graph of src/grpolab has no circles, the lower floors never import
the upper ones, and no module grows past 400 lines.

The graph is read with ``ast``, so imports inside functions count as much as those at the top of a module:
a function-level import hides a circle from Python, not from this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "grpolab"
MAX_LINES = 400
# Lower floors: what they may never import (an engine knows nothing of scoring runs or training).
FORBIDDEN = {
    "grpolab.generation": ("grpolab.evaluation", "grpolab.training", "grpolab.commands"),
    "grpolab.tasks": ("grpolab.evaluation", "grpolab.training", "grpolab.commands"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(tree: ast.AST, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The grpolab modules a module imports anywhere in its body (``from m import x``: m.x if a module)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import grpolab.a.b` names module grpolab.a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    names = set(known)
    return {
        name: imported(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py", names)
        for name, path in known.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_reader_sees_function_level_imports_and_circles():
    # The reader itself, on a made-up package: a circle hidden in a function is still a circle.
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c"}
    a = ast.parse("def f():\n    from pkg.b import thing\n")
    b = ast.parse("from . import a\nimport pkg.c\n")
    graph = {
        "pkg.a": imported(a, "pkg.a", False, known),
        "pkg.b": imported(b, "pkg.b", False, known),
        "pkg.c": set(),
    }
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a", "pkg.c"}, "pkg.c": set()}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    assert cycles({"x": {"y"}, "y": set()}) == []


def test_the_graph_covers_the_package():
    graph = import_graph()
    assert {"grpolab.cli", "grpolab.tasks.gsm8k", "grpolab.training.grpo", "grpolab.generation.hf"} <= set(
        graph
    )
    assert "grpolab.tasks.base" in graph["grpolab.tasks.gsm8k"]


def test_no_import_circles():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("floor", sorted(FORBIDDEN))
def test_lower_floors_never_import_upper_ones(floor):
    upward = {
        (name, target)
        for name, targets in import_graph().items()
        if name == floor or name.startswith(floor + ".")
        for target in targets
        if target.startswith(FORBIDDEN[floor])
    }
    assert upward == set()


def test_no_module_over_400_lines():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}
