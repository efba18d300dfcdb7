"""No import cycle between the library's packages (asagi_dagster.<package> or top-level
module): each stage builds on shared ones (core, engines, models, storage, config), never
back on another stage that builds on it. Imports inside functions count too."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent.parent / "asagi_dagster"


def package_imports() -> dict[str, set[str]]:
    """For each package (or top-level module) of the library, the others it imports."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in LIBRARY.rglob("*.py"):
        parts = path.relative_to(LIBRARY).with_suffix("").parts
        source = parts[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("asagi_dagster."):
                    target = name.split(".")[1]
                    if target != source:
                        edges[source].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_the_librarys_packages():
    edges = package_imports()
    assert {"synth", "train", "eval"} <= set(edges)  # it read the stages
    assert cycles(edges) == [], {k: sorted(v) for k, v in edges.items()}


def test_the_library_never_imports_the_embedded_sample():
    """asagi_sample (the demo's pages, datasets and benchmark stand-ins) builds on the
    library; the library, its assets and resources never on it."""
    for folder in (LIBRARY, LIBRARY.parent / "assets", LIBRARY.parent / "resources"):
        for path in folder.rglob("*.py"):
            assert "asagi_sample" not in path.read_text(encoding="utf-8"), path


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
