"""api/ imports nothing above it: not the node, the CLI or the tooling. It may use the
layers below (core, store, chain, p2p, admission, consensus, sync) and the node-wide
leaves (config, metrics)."""

from __future__ import annotations

from tests.imports import PACKAGE, imported, imported_by

BELOW = {"api", "core", "store", "chain", "p2p", "admission", "consensus", "sync", "config",
         "metrics"}


def above(module: str) -> bool:
    parts = module.split(".")
    return len(parts) < 2 or parts[1] not in BELOW  # the root package included


def test_api_imports_nothing_above_it():
    files = sorted((PACKAGE / "api").glob("*.py"))
    assert files
    found = {f"{f.name}: {m}" for f in files for m in imported(f) if above(m)}
    assert not found


def test_the_check_sees_an_import_of_the_node():
    """Relative, absolute and lazy (inside a function) imports all count."""
    api = ["iomtnode", "api"]
    assert imported_by("from ..node import Node", api) == {"iomtnode.node"}
    assert "iomtnode.cli" in imported_by("from .. import cli", api)
    assert imported_by("def f():\n    import iomtnode.node\n", api) == {"iomtnode.node"}
    assert imported_by("from .jsonrpc import RpcError", api) == {"iomtnode.api.jsonrpc"}
    assert all(above(m) for m in ("iomtnode", "iomtnode.node", "iomtnode.cli.query"))
    assert not above("iomtnode.chain.feed")
