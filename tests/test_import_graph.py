"""The import graph: data flows one way and every layer imports downward only.

program -> agent -> namespace -> driver -> wire -> server: ``drivers`` import
nothing of ours but themselves; ``reference_agent`` imports drivers; the layers
that start servers, test and measure sit above and import downward; the CLI
(``harness``) is the top. Module-level cycles inside a package are refused
too, late (function-level) imports included, since a late import only hides a
cycle. A private module (``_name``) is imported only inside its own package.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Each top-level package and the packages of ours it may import.
ALLOWED: dict[str, frozenset[str]] = {
    "drivers": frozenset(),
    "chirp_server": frozenset({"drivers"}),
    "reference_agent": frozenset({"drivers"}),
    "servers": frozenset({"drivers"}),
    "faultnet": frozenset({"drivers", "servers"}),
    "conformance": frozenset({"drivers", "reference_agent", "servers"}),
    # conformance.mounts: the FUSE peers the remote micro benchmark mounts as the suite does.
    "benchmarks": frozenset({"drivers", "reference_agent", "servers", "conformance"}),
    "simulation": frozenset({"drivers", "servers", "faultnet", "benchmarks"}),
    "report": frozenset(
        {"drivers", "servers", "faultnet", "benchmarks", "simulation", "conformance"}
    ),
    "harness": frozenset(
        {
            "drivers",
            "chirp_server",
            "reference_agent",
            "servers",
            "faultnet",
            "conformance",
            "benchmarks",
            "simulation",
            "report",
        }
    ),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def _type_checking_block(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Name | ast.Attribute)
        and ast.unparse(node.test).endswith("TYPE_CHECKING")
    )


def imported_names(path: Path, name: str) -> Iterator[str]:
    """Every module ``path`` imports at run time, absolute, of any package."""
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if _type_checking_block(node):
            skip.update(id(child) for child in ast.walk(node))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            yield prefix
            for alias in node.names:
                yield f"{prefix}.{alias.name}"


@functools.cache
def graph() -> dict[str, set[str]]:
    modules = product_modules()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        # A module's own ancestor packages are imported before it anyway: not an edge.
        ancestors = {".".join(name.split(".")[:depth]) for depth in range(1, name.count(".") + 1)}
        edges[name] = {
            target
            for target in imported_names(path, name)
            if target in modules and target != name and target not in ancestors
        }
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``edges`` as a path, or None (iterative DFS, colours)."""
    state: dict[str, int] = {}
    for start in sorted(edges):
        if state.get(start):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                return [*path[path.index(child) :], child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(edges.get(child, ())))))
    return None


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for source, targets in edges.items():
        package = source.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != package and other not in ALLOWED[package]:
                found.append(f"{source} -> {target}")
    return sorted(found)


def private_imports(edges: dict[str, set[str]]) -> list[str]:
    """Imports of a ``_private`` module from outside the package that holds it."""
    found = []
    for source, targets in edges.items():
        for target in targets:
            parts = target.split(".")
            for depth, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:depth])
                    if not (source == owner or source.startswith(owner + ".")):
                        found.append(f"{source} -> {target}")
                    break
    return sorted(found)


def package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {package: set() for package in ALLOWED}
    for source, targets in edges.items():
        for target in targets:
            if source.split(".")[0] != target.split(".")[0]:
                packages[source.split(".")[0]].add(target.split(".")[0])
    return packages


def test_no_package_imports_upward() -> None:
    assert upward_imports(graph()) == []


def test_no_cycle_between_packages() -> None:
    assert find_cycle(package_edges(graph())) is None


def test_no_cycle_between_modules() -> None:
    assert find_cycle(graph()) is None


def test_private_modules_stay_private() -> None:
    assert private_imports(graph()) == []


# -- the checkers catch what they name ------------------------------------------------------


def test_cycle_finder_finds_a_seeded_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    cycle = find_cycle(edges)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    ("source", "target", "caught"),
    [
        ("drivers.ftp._driver", "harness.cli", True),
        ("reference_agent.agent", "conformance.plugin", True),
        ("harness.cli", "drivers.local", False),
    ],
)
def test_upward_check_catches_a_seeded_import(source: str, target: str, caught: bool) -> None:
    assert bool(upward_imports({source: {target}})) is caught


def test_private_check_catches_a_seeded_import() -> None:
    assert private_imports({"reference_agent.sys_file": {"drivers.chirp._shell"}})
    assert not private_imports({"drivers.chirp._driver": {"drivers.chirp._shell"}})


def test_relative_imports_resolve(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from . import sibling\nfrom ..up import thing\n")
    assert set(imported_names(module, "pkg.sub.m")) == {
        "pkg.sub",
        "pkg.sub.sibling",
        "pkg.up",
        "pkg.up.thing",
    }
