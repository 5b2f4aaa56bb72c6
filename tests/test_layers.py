"""The layers hold, and no import cycles: not between two files, not between two folders.

The layer contracts in pyproject.toml (also run by `lint-imports` in CI) say which folder may
import which; these tests add that no group of modules imports itself round, at any size: a
cycle between files inside one folder breaks no layer rule but still ties the files together.
Imports made only for annotations (under ``TYPE_CHECKING``) count too. Every module and folder
of the package is named in the layer contract (one it does not name is bound by no layer) and
drawn in docs/architecture.md. And no module of the package is 400 lines or longer.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

import iomtnode

PACKAGE = "iomtnode"
ROOT = Path(iomtnode.__file__).parent
MAX_LINES = 400  # a module longer than this is split by what it does


def import_cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Every group of two or more `modules` that import each other round (Tarjan's strongly
    connected components, iteratively), each sorted, the groups sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    imported = graph.find_modules_directly_imported_by(child) & modules
                    work.append((child, iter(sorted(imported))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))
    return sorted(cycles)


def folder_graph(graph: grimp.ImportGraph) -> grimp.ImportGraph:
    """The same imports between the top-level modules and folders of the package."""

    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    folders = grimp.ImportGraph()
    for importer in graph.modules:
        if not importer.startswith(PACKAGE + "."):
            continue
        folders.add_module(top(importer))
        for imported in graph.find_modules_directly_imported_by(importer):
            if imported.startswith(PACKAGE + ".") and top(imported) != top(importer):
                folders.add_import(importer=top(importer), imported=top(imported))
    return folders


def describe(cycles: list[list[str]]) -> str:
    return "; ".join(" <-> ".join(group) for group in cycles)


def full_graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, exclude_type_checking_imports=False)


def test_the_layer_contracts_hold() -> None:
    pyproject = ROOT.parent / "pyproject.toml"
    assert lint_imports(config_filename=str(pyproject), no_cache=True, no_logo=True) == 0


def test_every_module_is_shorter_than_the_limit() -> None:
    long = {str(path.relative_to(ROOT)): lines for path in sorted(ROOT.rglob("*.py"))
            if (lines := len(path.read_text().splitlines())) >= MAX_LINES}
    assert long == {}


def top_level_modules() -> set[str]:
    """Every module and folder directly in the package: ``iomtnode.chain``, ``iomtnode.log``."""
    return {f"{PACKAGE}.{path.stem if path.is_file() else path.name}"
            for path in ROOT.iterdir()
            if (path.suffix == ".py" and path.stem != "__init__")
            or (path / "__init__.py").is_file()}


def test_every_module_of_the_package_has_its_layer() -> None:
    """A module the layer contract does not name is bound by no layer: it could import
    anything and be imported by anything, and the contract would never fail for it."""
    config = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    layers = next(contract["layers"] for contract in config["tool"]["importlinter"]["contracts"]
                  if contract["type"] == "layers")
    named = set(re.findall(rf"{PACKAGE}\.\w+", " ".join(layers)))
    assert top_level_modules() - named == set()


def test_the_architecture_page_draws_every_module() -> None:
    """docs/architecture.md's diagram names each module and folder of the package."""
    page = (ROOT.parent / "docs" / "architecture.md").read_text()
    diagram = page.split("```", 2)[1]
    drawn = {name.removesuffix("/").removesuffix(".py")
             for name in re.findall(r"[a-z0-9_]+(?:/|\.py)", diagram)}
    assert {module.removeprefix(PACKAGE + ".") for module in top_level_modules()} - drawn == set()


def test_no_cycle_between_files() -> None:
    graph = full_graph()
    cycles = import_cycles(graph, set(graph.modules))
    assert not cycles, f"modules that import each other round: {describe(cycles)}"


def test_no_cycle_between_folders() -> None:
    folders = folder_graph(full_graph())
    cycles = import_cycles(folders, set(folders.modules))
    assert not cycles, f"folders that import each other round: {describe(cycles)}"


def test_finds_a_cycle_of_three_and_names_it() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=importer, imported=imported)
    graph.add_import(importer="p.e", imported="p.e")  # a module importing itself is no cycle
    assert import_cycles(graph, set(graph.modules)) == [["p.a", "p.b", "p.c"]]


def test_finds_no_cycle_in_a_chain() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.a", "p.c")]:
        graph.add_import(importer=importer, imported=imported)
    assert import_cycles(graph, set(graph.modules)) == []


def test_a_folder_cycle_is_found_through_files() -> None:
    graph = grimp.ImportGraph()
    graph.add_import(importer="iomtnode.x.one", imported="iomtnode.y.two")
    graph.add_import(importer="iomtnode.y.three", imported="iomtnode.x.four")
    folders = folder_graph(graph)
    assert import_cycles(folders, set(folders.modules)) == [["iomtnode.x", "iomtnode.y"]]
