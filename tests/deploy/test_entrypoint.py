"""The container's start path without Docker: deploy/docker/entrypoint.sh run directly, with
the environment the image sets (IOMTNODE_HOME, ..._KEY_FILE, ..._GENESIS_FILE and settings)
and the real command line on PATH. It makes the home once, runs the node as its own process
(exec: SIGTERM reaches the node) and starts again on the home it made."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.procs import log_events

from .tools import DEPLOY

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
BIN = Path(sys.executable).parent  # this venv's `iomtnode`, as the image's PATH has it
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.05


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BIN / "iomtnode"), *args], capture_output=True, text=True,
                            timeout=60)
    assert not check or result.returncode == 0, result.stderr
    return result


def container_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOMTNODE_")}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
            "IOMTNODE_HOME": str(home),
            # free ports on loopback: the image's 0.0.0.0 with fixed ports would collide
            "IOMTNODE_API_LISTEN": "127.0.0.1:0", "IOMTNODE_P2P_LISTEN": "127.0.0.1:0",
            "IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.3", **extra}


@contextmanager
def entrypoint(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """Run the entrypoint until the node has started; yield it and the node's API URL."""
    with log.open("wb") as out:
        proc = subprocess.Popen([str(ENTRYPOINT)], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (started := [e for e in log_events(log) if e.get("event") == "node_started"]):
            assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no node_started:\n{log.read_text()[-3000:]}"
            time.sleep(POLL_S)
        yield proc, started[0]["api"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)  # to the entrypoint's pid: the node itself after exec
    return proc.wait(timeout=STOP_TIMEOUT_S)


def wait_ready(api: str) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while (probe := cli("status", "--ready", "--api", api, check=False)).returncode != 0:
        assert time.monotonic() < deadline, probe.stderr
        time.sleep(0.2)
    return probe.stdout


def test_an_empty_home_without_a_genesis_is_refused_with_the_variable_to_set(tmp_path: Path):
    result = subprocess.run([str(ENTRYPOINT)], env=container_env(tmp_path / "home"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "set IOMTNODE_GENESIS_FILE" in result.stderr
    assert not (tmp_path / "home").exists()


def test_first_start_makes_the_home_then_runs_the_node_and_restarts_on_it(tmp_path: Path):
    # the network's genesis (here: a one-authority chain made by another home)
    made = json.loads(cli("init", "--home", str(tmp_path / "authority"), "--json").stdout)
    genesis = tmp_path / "authority" / "genesis.json"
    home = tmp_path / "volume" / "node"
    env = container_env(home, IOMTNODE_GENESIS_FILE=str(genesis))

    with entrypoint(env, tmp_path / "first.log") as (proc, api):
        # it runs and answers; with its chain's authority not running it has nobody to get
        # blocks from, and says so
        probe = cli("status", "--ready", "--api", api, check=False)
        assert probe.returncode == 1
        assert "no peer connected (this node is not an authority" in probe.stderr
        status = json.loads(cli("status", "--api", api, "--json").stdout)
        assert status["genesis_hash"] == made["genesis_hash"]
        assert status["node_id"] != made["node_id"]  # a key of its own: a follower
        assert stop(proc) == 0
    assert (home / "node_key").stat().st_mode & 0o077 == 0 and home.stat().st_mode & 0o077 == 0
    node_id = status["node_id"]

    # a second start finds the home made: the same key, no second init
    with entrypoint(env, tmp_path / "second.log") as (proc, api):
        assert json.loads(cli("status", "--api", api, "--json").stdout)["node_id"] == node_id
        assert stop(proc) == 0
    assert "initialized" not in (tmp_path / "second.log").read_text()


def test_nodes_sharing_one_bootnode_list_that_names_them_all_form_a_network(tmp_path: Path):
    """The StatefulSet gives every pod all four names as bootnodes: each node leaves out its
    own advertised address (no dial to itself) and connects to the others."""
    made = json.loads(cli("localnet", "prepare", "--nodes", "2", "--dir", str(tmp_path / "net"),
                          "--base-port", "0", "--json").stdout)
    addresses = [node["p2p"].split("://")[1].split("/")[0] for node in made["nodes"]]
    with contextlib.ExitStack() as stack:
        apis = []
        for node, address in zip(made["nodes"], addresses, strict=True):
            env = container_env(Path(node["home"]), IOMTNODE_P2P_LISTEN=address,
                                IOMTNODE_ADVERTISE_ADDRESS=address,
                                IOMTNODE_BOOTNODES=" , ".join(addresses))
            log = tmp_path / f"{node['name']}.log"
            apis.append(stack.enter_context(entrypoint(env, log))[1])
        for api in apis:  # two authorities: ready means a peer is connected
            wait_ready(api)
        for api, address in zip(apis, addresses, strict=True):
            status = json.loads(cli("status", "--api", api, "--json").stdout)
            assert status["peers"] and status["height"] >= 1
            assert status["p2p_address"] == address
    for node in made["nodes"]:
        log = (tmp_path / f"{node['name']}.log").read_text()
        assert "connected to itself" not in log


def test_a_key_from_a_secret_file_is_the_nodes_key(tmp_path: Path):
    made = json.loads(cli("init", "--home", str(tmp_path / "ceremony"), "--json").stdout)
    secret = tmp_path / "secret" / "node_key"  # as a Kubernetes Secret or compose secret mounts it
    secret.parent.mkdir()
    secret.write_text((tmp_path / "ceremony" / "node_key").read_text())
    secret.chmod(0o440)  # as Kubernetes mounts a Secret's file for the pod's fsGroup
    env = container_env(tmp_path / "volume" / "node", IOMTNODE_KEY_FILE=str(secret),
                        IOMTNODE_GENESIS_FILE=str(tmp_path / "ceremony" / "genesis.json"))

    with entrypoint(env, tmp_path / "node.log") as (proc, api):
        wait_ready(api)
        status = json.loads(cli("status", "--api", api, "--json").stdout)
        assert status["node_id"] == made["node_id"] and status["authorities"] == [made["node_id"]]
        # (whether it signs at once is consensus' rule for a key that may have signed
        # before: docs/consensus.md; here the point is which key the home was made with)
        assert stop(proc) == 0
    assert list((tmp_path / "volume").iterdir()) == [tmp_path / "volume" / "node"]  # no copy left
