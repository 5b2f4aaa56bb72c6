"""api/ imports nothing above it: not the node, the CLI or the tooling. It may use the
layers below (core, store, chain, p2p, admission, consensus, sync) and the node-wide
leaves (config, metrics)."""

from __future__ import annotations

import ast
from pathlib import Path

import iomtnode

PACKAGE = Path(iomtnode.__file__).parent
BELOW = {"api", "core", "store", "chain", "p2p", "admission", "consensus", "sync", "config",
         "metrics"}


def imported(path: Path) -> set[str]:
    """The iomtnode modules ``path`` imports (absolute names, relative ones resolved)."""
    package = ["iomtnode", *path.relative_to(PACKAGE).with_suffix("").parts][:-1]
    return imported_by(path.read_text(), package)


def imported_by(source: str, here: list[str]) -> set[str]:
    """The iomtnode modules ``source``, a module of package ``here``, imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "iomtnode"}
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if module.split(".")[0] != "iomtnode":
                continue
            if module == "iomtnode":  # from iomtnode import x: x is a module or a name
                found |= {f"iomtnode.{a.name}" for a in node.names}
            else:
                found.add(module)
    return found


def test_api_imports_nothing_above_it():
    files = sorted((PACKAGE / "api").glob("*.py"))
    assert files
    above = {f"{f.name}: {m}" for f in files for m in imported(f)
             if m.split(".")[1] not in BELOW}
    assert not above


def test_the_check_sees_an_import_of_the_node():
    """Relative, absolute and lazy (inside a function) imports all count."""
    api = ["iomtnode", "api"]
    assert imported_by("from ..node import Node", api) == {"iomtnode.node"}
    assert imported_by("from .. import cli", api) == {"iomtnode.cli"}
    assert imported_by("def f():\n    import iomtnode.node\n", api) == {"iomtnode.node"}
    assert imported_by("from .jsonrpc import RpcError", api) == {"iomtnode.api.jsonrpc"}
