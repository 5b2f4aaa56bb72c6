"""The chain sits below admission: it publishes commits, and whoever needs them (the
mempool, consensus, relay) subscribes. No module of chain/ imports admission, consensus,
sync, p2p or api."""

from __future__ import annotations

import ast
from pathlib import Path

import iomtnode.chain

ABOVE = ("admission", "consensus", "sync", "p2p", "api", "node")


def imported(path: Path) -> set[str]:
    """The modules ``path`` imports, absolute (``iomtnode.x.y``)."""
    package = ["iomtnode", "chain"]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_the_import_reader_sees_relative_imports():
    source = Path(iomtnode.chain.__file__).parent / "writer.py"
    assert "iomtnode.chain.feed" in imported(source)
    assert "iomtnode.core.block" in imported(source)


def test_no_chain_module_imports_a_layer_above_it():
    folder = Path(iomtnode.chain.__file__).parent
    offending = {
        f"{path.name}: {name}"
        for path in sorted(folder.glob("*.py"))
        for name in imported(path)
        if any(name == f"iomtnode.{layer}" or name.startswith(f"iomtnode.{layer}.")
               for layer in ABOVE)
    }
    assert offending == set()
