"""Upgrading a node's home, as processes: a home the previous release made (a config.toml and
a store that state no format) starts and is stamped with the current formats; a config or a
store of a newer format stops `iomtnode run` with what it found, what it reads and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import plyvel
import pytest

from iomtnode.config import CONFIG_VERSION
from iomtnode.store import BlockStore
from iomtnode.store.format import FORMAT_KEY, STORE_FORMAT, stored_format
from tests.e2e.procs import NodeProcess, iomtnode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def make_home(tmp_path: Path) -> Path:
    home = tmp_path / "node"
    iomtnode("init", "--home", str(home), "--json")
    return home


def run_refused(home: Path) -> str:
    """`iomtnode run` on ``home``: it must exit at once with code 2; its stderr."""
    proc = iomtnode("run", "--home", str(home), "--api", "127.0.0.1:0", "--p2p", "127.0.0.1:0",
                    check=False, timeout=30)
    assert proc.returncode == 2, proc.stderr[-3000:]
    return proc.stderr


def test_a_home_of_the_previous_release_starts_and_is_stamped(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    with NodeProcess.start(home, tmp_path / "first.log") as node:
        node.wait_for_height(1)
    config = home / "config.toml"
    config.write_text(config.read_text().replace(f"\nversion = {CONFIG_VERSION}\n", "\n"))
    db = plyvel.DB(str(home / "data"))
    db.delete(FORMAT_KEY)  # as the release before format numbers left it
    db.close()
    shown = json.loads(iomtnode("config", "show", "--home", str(home), "--json").stdout)
    assert shown["version"] == {"value": 1, "source": "default"}
    with NodeProcess.start(home, tmp_path / "second.log") as node:
        status = json.loads(iomtnode("status", "--api", node.api, "--json").stdout)
        assert status["height"] >= 1
    with BlockStore.open(home / "data") as store:
        assert store.get_meta("store_format") == STORE_FORMAT.to_bytes(2, "big")


def test_a_config_of_a_newer_format_stops_the_node_with_what_to_do(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    config = home / "config.toml"
    config.write_text(config.read_text().replace(f"\nversion = {CONFIG_VERSION}\n",
                                                 f"\nversion = {CONFIG_VERSION + 1}\n"))
    stderr = run_refused(home)
    assert f"{config} is configuration format {CONFIG_VERSION + 1}" in stderr
    assert f"reads formats up to {CONFIG_VERSION}" in stderr
    assert "upgrade iomtnode" in stderr


def test_a_store_of_a_newer_format_stops_the_node_untouched(tmp_path: Path) -> None:
    home = make_home(tmp_path)
    BlockStore.open(home / "data").close()
    db = plyvel.DB(str(home / "data"))
    db.put(FORMAT_KEY, (STORE_FORMAT + 1).to_bytes(2, "big"))
    db.close()
    stderr = run_refused(home)
    assert f"is of store format {STORE_FORMAT + 1}" in stderr
    assert f"reads store formats up to {STORE_FORMAT}" in stderr
    assert "Upgrade iomtnode" in stderr
    db = plyvel.DB(str(home / "data"))
    assert stored_format(db) == STORE_FORMAT + 1
    db.close()
