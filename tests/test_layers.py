"""The kit's layers and module sizes, checked on the source (``ast``, nothing is imported).

Every module of ``duallora/`` and ``data_prep/`` sits on one floor (docs/ARCHITECTURE.md has the
picture) and may import modules of its own floor or of the floors below, never above:

    0 ground floor   duallora (the package), duallora.errors, duallora.paths, duallora.base.*
    1 building blocks duallora.model, duallora.data, data_prep, duallora.results
    2 engine         duallora.federated
    3 services       duallora.flower, duallora.benchmark
    4 front doors    duallora.plots, duallora.notebooks, duallora.commands, duallora.cli

Imports are counted wherever they are written: at the top of a module and inside functions
(a lazy import is still a dependency), absolute and relative. Between modules there must be no
import cycle at all, whatever the floors.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("duallora", "data_prep")

FLOORS: tuple[tuple[str, ...], ...] = (
    ("duallora", "duallora.errors", "duallora.paths", "duallora.base"),
    ("duallora.model", "duallora.data", "data_prep", "duallora.results"),
    ("duallora.federated",),
    ("duallora.flower", "duallora.benchmark"),
    ("duallora.plots", "duallora.notebooks", "duallora.commands", "duallora.cli",
     "duallora.__main__"),
)
FLOOR_NAMES = ("ground floor", "building blocks", "engine", "services", "front doors")

Graph = Mapping[str, Iterable[str]]


# --------------------------------------------------------------------------- the import graph
def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def kit_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(path, root): path
            for package in PACKAGES for path in sorted((root / package).rglob("*.py"))}


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest known module that ``name`` (a module or ``module.attribute``) lies in."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, source: str, modules: Mapping[str, Path],
               is_package: bool = False) -> set[str]:
    """The kit modules that ``source`` (module ``module``) imports, at any depth of its tree."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES and (hit := _known(alias.name, modules)):
                    found.add(hit)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:  # ``from pkg import module`` imports that module
                target = f"{base}.{alias.name}"
                hit = target if target in modules else _known(base, modules)
                if hit:
                    found.add(hit)
    found.discard(module)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = kit_modules(root)
    return {name: imports_of(name, path.read_text(), modules, path.name == "__init__.py")
            for name, path in modules.items()}


# ---------------------------------------------------------------- what the test looks for
def find_cycles(graph: Graph) -> list[list[str]]:
    """Every import cycle, one per strongly connected component of more than one module (or a
    module importing itself), as a closed path ``[a, b, ..., a]`` through that component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    edges = {node: sorted(graph.get(node, ())) for node in nodes}

    for start in nodes:  # Tarjan's algorithm, iteratively (no recursion limit)
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
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
                if len(component) > 1 or node in edges[node]:
                    components.append(sorted(component))
    return [_closed_path(component, edges) for component in components]


def _closed_path(component: list[str], edges: Mapping[str, list[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first search)."""
    start, members = component[0], set(component)
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in edges[node]:
            if child == start:
                path = [node]
                while (before := previous[path[-1]]) is not None:
                    path.append(before)
                return [*reversed(path), start]
            if child in members and child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{component} is not strongly connected")


def floor_of(module: str, floors: tuple[tuple[str, ...], ...] = FLOORS) -> int | None:
    """The floor of the longest prefix of ``module`` that a floor names (None: unplaced)."""
    best: tuple[int, int] | None = None
    for level, prefixes in enumerate(floors):
        for prefix in prefixes:
            inside = module == prefix or module.startswith(prefix + ".")
            if inside and (best is None or len(prefix) > best[0]):
                best = (len(prefix), level)
    return None if best is None else best[1]


def upward_edges(graph: Graph, floors: tuple[tuple[str, ...], ...] = FLOORS
                 ) -> list[tuple[str, str]]:
    """``(importer, imported)`` for every import of a module on a higher floor."""
    bad = []
    for source in sorted(graph):
        for target in sorted(graph[source]):
            here, there = floor_of(source, floors), floor_of(target, floors)
            if here is not None and there is not None and there > here:
                bad.append((source, target))
    return bad


def _describe(edges: list[tuple[str, str]]) -> str:
    return "\n".join(f"  {a} ({FLOOR_NAMES[floor_of(a)]}) -> {b} ({FLOOR_NAMES[floor_of(b)]})"
                     for a, b in edges)


# ------------------------------------------------------------------------------- the finders
SYNTHETIC = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}


def test_cycle_finder_finds_a_cycle_and_a_self_import():
    cycles = find_cycles(SYNTHETIC)
    assert ["a", "b", "c", "a"] in cycles
    assert ["e", "e"] in cycles
    assert len(cycles) == 2
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_upward_edge_finder_on_a_synthetic_graph():
    floors = (("low",), ("high",))
    graph = {"low.x": {"high.y", "low.z"}, "high.y": {"low.x"}, "low.z": set()}
    assert upward_edges(graph, floors) == [("low.x", "high.y")]


def test_graph_counts_lazy_and_relative_imports():
    modules = {name: Path() for name in ("duallora.a", "duallora.b", "duallora.c",
                                         "duallora.pkg", "duallora.pkg.d")}
    source = ("import os\nfrom . import b\n"
              "def f():\n    from duallora.c import thing\n    from .pkg import d\n")
    assert imports_of("duallora.a", source, modules) == {"duallora.b", "duallora.c",
                                                        "duallora.pkg.d"}


# ------------------------------------------------------------------------------- the kit
def test_every_kit_module_has_a_floor():
    unplaced = [name for name in import_graph() if floor_of(name) is None]
    assert not unplaced, f"modules on no floor (add them to FLOORS): {unplaced}"


def test_no_import_cycle_between_kit_modules():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (counting imports inside functions):\n" + "\n".join(
        "  " + " -> ".join(cycle) for cycle in cycles)


def test_no_module_imports_a_floor_above_its_own():
    bad = upward_edges(import_graph())
    assert not bad, "imports of a higher floor:\n" + _describe(bad)


def test_ground_floor_imports_only_the_ground_floor():
    graph = import_graph()
    bad = [(a, b) for a in sorted(graph) if floor_of(a) == 0
           for b in sorted(graph[a]) if floor_of(b) != 0]
    assert not bad, "the ground floor imports the kit above it:\n" + _describe(bad)


MAX_LINES = 450  # a module a newcomer reads in one sitting; split by responsibility beyond


def test_no_module_is_longer_than_the_limit():
    long = {name: n for name, path in kit_modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by responsibility): {long}"
