"""Localnet layout without processes: homes, one genesis, ports, localnet.json, Procfile;
plus the pure parts around it (invariant checks, pid tracking, --help)."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iomtnode.config import Config, load_config
from iomtnode.core.genesis import Genesis
from iomtnode.home import Home
from iomtnode.localnet.cli import localnet_app
from iomtnode.localnet.invariants import find_violations
from iomtnode.localnet.layout import (
    CHAIN_ID,
    MANIFEST_NAME,
    LocalnetError,
    Manifest,
    ProcRef,
    hostport_of,
    open_or_prepare,
    prepare,
    procfile,
    rewrite_configs,
    ws_url,
)
from iomtnode.localnet.ports import allocate_ports, ephemeral_low, port_is_free
from iomtnode.localnet.procs import pid_state, ref_of
from iomtnode.localnet.table import RateMeter

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def four(tmp_path) -> Manifest:
    return prepare(tmp_path / "net", 4, base_port=None)


# ---- homes, genesis, ports ---------------------------------------------------------------

def test_every_node_gets_a_complete_home_sharing_one_genesis(four):
    geneses = [Home(n.home).load_genesis() for n in four.nodes]
    for entry in four.nodes:
        Home(entry.home).check()
        assert Home(entry.home).load_key().public.hex() == entry.node_id
        assert Home(entry.home).admin_token() == entry.admin_token
    assert {g.hash.hex() for g in geneses} == {four.genesis_hash}
    genesis = geneses[0]
    assert genesis.chain_id == CHAIN_ID == four.chain_id
    assert [a.hex() for a in genesis.authorities] == [n.node_id for n in four.nodes]
    assert genesis.admission_threshold == 1
    assert [n.name for n in four.nodes] == ["node1", "node2", "node3", "node4"]


def test_authorities_are_the_first_k_nodes(tmp_path):
    m = prepare(tmp_path / "net", 3, authorities=1, base_port=None)
    genesis = Genesis.load(m.nodes[0].home / "genesis.json")
    assert genesis.authorities == (bytes.fromhex(m.nodes[0].node_id),)
    assert [n.authority for n in m.nodes] == [True, False, False]


def test_ports_are_distinct_loopback_and_written_into_each_config(four):
    addresses = [n.api_listen for n in four.nodes] + [n.p2p_listen for n in four.nodes]
    assert len(set(addresses)) == 8
    assert all(a.startswith("127.0.0.1:") for a in addresses)
    for entry in four.nodes:
        config = load_config(Home(entry.home).config_path, env={})
        assert (config.api_listen, config.p2p_listen) == (entry.api_listen, entry.p2p_listen)
        others = [n.p2p_listen for n in four.nodes if n.name != entry.name]
        assert list(config.bootnodes) == others  # every other node is a bootnode
        # every client of a localnet comes from 127.0.0.1: one IP may use every API slot
        assert config.api_max_connections_per_ip == config.api_max_connections


def test_connection_limits_fit_every_node_on_one_ip(tmp_path):
    # 16 nodes on 127.0.0.1: each may have the 15 others inbound and in their handshake at
    # once; the defaults (made for a real network) would refuse some of them
    m = prepare(tmp_path / "net", 16, base_port=None)
    config = load_config(Home(m.nodes[0].home).config_path, env={})
    assert Config().max_pending_per_ip < 15
    assert min(config.max_inbound_per_ip, config.max_inbound_per_netgroup,
               config.max_pending_per_ip, config.max_pending_per_netgroup) >= 15
    assert config.max_peers - config.outbound_slots >= 15
    assert config.address_ban_s == 0  # one address for all: bans by node id only


def test_ports_from_a_base_skip_a_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = allocate_ports(3, base=taken)
        assert taken not in ports
        assert ports == sorted(ports) and ports[0] > taken
    assert all(port_is_free("127.0.0.1", p) for p in ports)


def test_ports_without_a_base_are_below_the_ephemeral_range():
    """Ports the OS hands out for bind(0) or an outgoing connection come from its ephemeral
    range: a port picked there and released could be taken before its node binds it."""
    ports = allocate_ports(20)
    assert len(set(ports)) == 20
    assert all(10_000 <= p < ephemeral_low() for p in ports), ports
    assert all(port_is_free("127.0.0.1", p) for p in ports)


def test_prepare_refuses_a_used_directory_and_bad_counts(tmp_path, four):
    with pytest.raises(LocalnetError, match="already a localnet"):
        prepare(four.dir, 4, base_port=None)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(LocalnetError, match="not empty"):
        prepare(tmp_path / "junk", 2, base_port=None)
    with pytest.raises(LocalnetError, match="authorities"):
        prepare(tmp_path / "a", 2, authorities=3, base_port=None)
    with pytest.raises(LocalnetError, match="nodes"):
        prepare(tmp_path / "b", 0, base_port=None)


def test_open_or_prepare_reuses_an_existing_localnet(four):
    again = open_or_prepare(four.dir, None)
    assert again.to_json() == four.to_json()
    with pytest.raises(LocalnetError, match="holds a 4-node localnet"):
        open_or_prepare(four.dir, 3)


# ---- localnet.json -----------------------------------------------------------------------

def test_localnet_json_schema_and_mode(four):
    path = four.dir / MANIFEST_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the admin tokens
    doc = json.loads(path.read_text())
    assert set(doc) >= {"version", "dir", "chain_id", "genesis_hash", "nodes", "simulator",
                        "supervisor", "devices", "rate"}
    for node in doc["nodes"]:
        assert set(node) == {"name", "node_id", "home", "authority", "api", "p2p",
                             "admin_token", "api_ca", "pid", "pid_start"}
        assert node["api"].startswith("ws://127.0.0.1:") and node["api"].endswith("/api/v1")
        assert node["p2p"].startswith("wss://127.0.0.1:") and node["p2p"].endswith("/p2p/v1")
        assert node["pid"] is None and node["api_ca"] is None and len(node["node_id"]) == 64
        assert Path(node["home"]).is_absolute()


def test_manifest_round_trips_with_pids(four):
    four.nodes[1].proc = ProcRef(4242, 99)
    four.simulator = ProcRef(7, None)
    four.save()
    loaded = Manifest.load(four.dir)
    assert loaded.to_json() == four.to_json()
    assert loaded.nodes[1].proc == ProcRef(4242, 99)


def test_the_manifest_is_synced_before_and_after_its_rename(four, monkeypatch):
    """localnet.json names the processes `localnet down` must stop: after a power cut it is
    the old one or the new one, never an empty file (the data and the rename synced)."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    four.save()
    tmp = four.path.with_name(f".{four.path.name}.{os.getpid()}.tmp")
    assert synced == [str(tmp), str(four.path.parent)]
    assert not tmp.exists() and Manifest.load(four.dir).to_json() == four.to_json()


def test_load_says_what_to_do_for_a_missing_manifest(tmp_path):
    with pytest.raises(LocalnetError, match="localnet prepare"):
        Manifest.load(tmp_path)


def test_rewrite_configs_follows_a_moved_node(four):
    four.nodes[3].p2p = ws_url("127.0.0.5:4000", "/p2p/v1")
    rewrite_configs(four)
    assert load_config(four.nodes[3].home / "config.toml", env={}).p2p_listen == "127.0.0.5:4000"
    assert "127.0.0.5:4000" in load_config(four.nodes[0].home / "config.toml",
                                           env={}).bootnodes


def test_urls_and_addresses():
    assert ws_url("127.0.0.1:80", "/api/v1") == "ws://127.0.0.1:80/api/v1"
    assert hostport_of("ws://127.0.0.3:9/p2p/v1") == "127.0.0.3:9"
    assert hostport_of("127.0.0.3:9") == "127.0.0.3:9"


# ---- Procfile ----------------------------------------------------------------------------

def test_the_help_s_quick_start_runs_honcho_where_prepare_wrote_the_procfile():
    # "prepare --dir localnet && honcho start" works only in the repository's root (its own
    # Procfile); anywhere else honcho finds no Procfile: the help says to cd first
    assert "--dir localnet && cd localnet && honcho start" in localnet_app.info.help


def test_repo_procfile_matches_what_prepare_makes(tmp_path):
    text = (REPO / "Procfile").read_text()
    assert "iomtnode localnet prepare --nodes 4 --dir localnet && honcho start" in text
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    m = prepare(tmp_path / "localnet", 4, base_port=None)
    assert "\n".join(lines) + "\n" == procfile([n.name for n in m.nodes], "localnet")
    for line in lines:  # each names a home that prepare made
        home = line.split("--home ", 1)[1]
        Home(tmp_path / home).check()
    local = (m.dir / "Procfile").read_text()
    assert "node1: iomtnode run --home node1" in local


# ---- invariants (the chaos plans: test_scenarios.py) -------------------------------------

def status(height: int, chain: str = "iomt-localnet") -> dict:
    return {"height": height, "chain_id": chain, "genesis_hash": "g"}


def test_invariants_hold_on_one_chain_within_k():
    assert find_violations({"a": status(5), "b": status(3)},
                           {"a": ["h0", "h1", "h2", "h3"], "b": ["h0", "h1", "h2", "h3"]},
                           k=2) == []


def test_invariants_catch_a_fork_a_laggard_and_another_chain():
    found = find_violations({"a": status(9), "b": status(2), "c": status(9, "other")},
                            {"a": ["h0", "h1", "x2"], "b": ["h0", "h1", "h2"],
                             "c": ["h0", "h1", "h2"]}, k=3)
    assert any("fork at height 2" in v for v in found)
    assert any(v.startswith("b is at height 2") for v in found)
    assert any("chain_id" in v for v in found)
    assert not any("height 1:" in v for v in found)


# ---- processes by pid, rates, CLI help ---------------------------------------------------

def test_pid_state_tells_a_reused_pid_from_ours():
    me = ref_of(os.getpid())
    assert pid_state(me) == "running"
    if me.start is not None:  # /proc is there: a different start time is another process
        assert pid_state(ProcRef(me.pid, me.start + 1)) == "gone"
    assert pid_state(None) == "gone"


def test_rate_meter_uses_deltas_and_forgets_restarts():
    meter = RateMeter()
    assert meter.update("a", 100, 0.0) is None
    assert meter.update("a", 150, 2.0) == 25.0
    assert meter.update("a", 10, 3.0) is None  # restarted node: counts anew
    assert meter.update("a", None, 4.0) is None


@pytest.mark.parametrize("command", [[], ["prepare"], ["up"], ["down"], ["status"], ["chaos"]])
def test_every_command_explains_itself(command):
    result = CliRunner().invoke(localnet_app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize("command", [
    ["status"], ["down"], ["chaos", "--scenario", "isolate"], ["up"], ["prepare"]])
def test_a_directory_that_is_no_localnet_exits_2_from_every_command(tmp_path, command):
    # a --dir the operator got wrong is input that cannot be used (2), whichever command read
    # it; 1 is for a localnet that failed (a node down, an invariant violated)
    (tmp_path / "notes.txt").write_text("not a localnet\n")
    result = CliRunner().invoke(localnet_app, [*command, "--dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert f"error: {tmp_path} " in result.stderr


def test_a_missing_localnet_directory_exits_2_from_every_command_that_reads_one(tmp_path):
    for command in (["status"], ["down"], ["chaos", "--scenario", "isolate"]):
        result = CliRunner().invoke(localnet_app, [*command, "--dir", str(tmp_path / "none")])
        assert result.exit_code == 2, (command, result.output)
        assert "is not a localnet (localnet.json missing)" in result.stderr


def test_prepare_command_prints_json_without_tokens(tmp_path):
    result = CliRunner().invoke(localnet_app, ["prepare", "--nodes", "2", "--dir",
                                               str(tmp_path / "n"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [n["name"] for n in doc["nodes"]] == ["node1", "node2"]
    assert all("admin_token" not in n for n in doc["nodes"])
