"""The floor plan of the package, checked on its import graph (every import, also those inside functions).

Floors, bottom up (an import may point to its own floor or lower, never higher):

0. leaves: errors, names, refs, options, settings, units, devices, fileio, events, hardware/, formats/,
   structured/, toolcalls, testing/ (they import only errors and one another);
1. backends/;
2. engine/, store/, sources/, catalog/, modelfile/ (the Modelfile language);
3. services/, chat, wire/, security/;
4. cli/, server/, __main__.

and no module is part of an import cycle. The graph is read from the source with :mod:`ast`.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

import slmctl

PACKAGE = Path(slmctl.__file__).parent

FLOORS: dict[str, int] = {
    **dict.fromkeys(["slmctl", "errors", "names", "refs", "options", "settings", "units", "devices", "fileio",
                     "events", "hardware", "formats", "structured", "toolcalls", "testing"], 0),
    "backends": 1,
    **dict.fromkeys(["engine", "store", "sources", "catalog", "modelfile"], 2),
    **dict.fromkeys(["services", "chat", "wire", "security"], 3),
    **dict.fromkeys(["cli", "server", "__main__"], 4),
}
#: What leaves may import besides themselves.
LEAF_IMPORTS = {"errors"}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(module: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The slmctl modules ``module`` imports, anywhere in its body."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name


@functools.cache  # read once per run: four tests ask
def graph() -> dict[str, set[str]]:
    known = modules()
    return {module: set(imported(module, path, known)) for module, path in known.items()}


def room(module: str) -> str:
    """The top-level room of ``module``: ``slmctl.store.blobs`` -> ``store``, ``slmctl`` -> ``slmctl``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_room_has_a_floor() -> None:
    assert sorted({room(module) for module in modules()} - set(FLOORS)) == []


def test_no_module_imports_a_higher_floor() -> None:
    upward = sorted(f"{module} -> {target}" for module, targets in graph().items() for target in targets
                    if FLOORS[room(target)] > FLOORS[room(module)])
    assert upward == []


def test_leaves_import_only_errors() -> None:
    strays = sorted(f"{module} -> {target}" for module, targets in graph().items()
                    if FLOORS[room(module)] == 0 and room(module) != "slmctl"
                    for target in targets
                    if room(target) != room(module) and room(target) not in LEAF_IMPORTS | {"slmctl"})
    assert strays == []


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(edges.get(target, ())))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize(("edges", "expected"), [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}, [["a", "b", "c"]]),
])
def test_the_cycle_finder_finds_cycles(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_the_graph_sees_imports_inside_functions() -> None:
    edges = graph()
    assert "slmctl.engine.runner" in edges["slmctl.engine.embed_batch"] or \
        "slmctl.engine.embed_batch" in edges["slmctl.engine.runner"]
    assert "slmctl.backends.gguf_batch" in edges["slmctl.backends.gguf"]  # imported inside batch()
