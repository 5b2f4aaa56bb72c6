"""The command line is a package without import cycles: its command modules depend on
``common`` (and on the layers below), never on the package that assembles the app."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

import pytest

from iomtnode.cli import app
from tests.imports import PACKAGE, imported, module_name

FILES = sorted((PACKAGE / "cli").glob("*.py"))


def graph() -> dict[str, set[str]]:
    """Each module of iomtnode.cli -> the modules of iomtnode.cli it imports."""
    edges = {module_name(f): {m for m in imported(f) if m.startswith("iomtnode.cli")}
             for f in FILES}
    edges["iomtnode.cli"].discard("iomtnode.cli")  # its own ``from . import query``
    return edges


def test_no_import_cycles_inside_the_cli():
    edges = graph()
    assert len(edges) >= 6
    try:
        tuple(TopologicalSorter(edges).static_order())
    except CycleError as exc:  # pragma: no cover - the failure being tested for
        pytest.fail(f"import cycle in the CLI: {exc.args[1]}")


def test_command_modules_do_not_import_the_app():
    """``iomtnode.cli`` (the app) imports the command modules, never the other way."""
    edges = graph()
    assert {m for m, deps in edges.items() if "iomtnode.cli" in deps} == set()
    assert "iomtnode.cli.authority" in edges["iomtnode.cli"]


def test_the_check_finds_a_cycle():
    edges = graph() | {"iomtnode.cli.common": {"iomtnode.cli"}}
    with pytest.raises(CycleError):
        tuple(TopologicalSorter(edges).static_order())


def test_the_app_has_every_command():
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    names += [g.name for g in app.registered_groups]
    assert names == ["version", "init", "run", "dev", "status", "simulate", "block", "receipt",
                     "verify", "bench", "audit", "device", "localnet", "authority", "blocks",
                     "patient", "records", "config", "genesis"]
