"""A network started as hospitals start one across hosts, with the real command line: four
homes in separate directories (one from an imported key file), each authority's card with a
DNS name, one genesis from the four cards, checked and installed by each; then four node
processes, each in its own network namespace on a bridge, listening on 0.0.0.0 and
advertising its name, which the other namespaces resolve through their own hosts file
(``/etc/netns/NS/hosts``, which ``ip netns exec`` mounts over ``/etc/hosts``; the system's
file is never touched). Readings are admitted and finalized on all four, and each node knows
the others by their names. And the containers' and pods' start: four homes made from
imported keys and the genesis, none with a signing state, still finalize."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import pytest
import trio

from iomtnode.client import open_client
from iomtnode.home import read_key
from iomtnode.localnet import netns
from iomtnode.patient import plaintext as pt
from tests.e2e.privacykit import (
    Patient,
    every_vital,
    now_ms,
    register,
    submit_and_wait,
)
from tests.e2e.procs import iomtnode, iomtnode_all, log_events

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
NEEDS_NETNS = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="network namespaces need root and the `ip` command (iproute2)")

CHAIN = "ward-net"
DOMAIN = "ward.test"  # .test: reserved, never resolves outside these namespaces' hosts files
P2P_PORT = 7546
API_PORT = 7545
NODES = 4
START_TIMEOUT_S = 30.0
MESH_TIMEOUT_S = 60.0  # an imported key observes for its grace period before it signs
POLL_S = 0.25
NETNS_ETC = Path("/etc/netns")


def name(i: int) -> str:
    return f"node{i}.{DOMAIN}"


def ok_json(*args: str) -> dict:
    return json.loads(iomtnode(*args, "--json").stdout)


def all_ok_json(*commands: tuple[str, ...]) -> list[dict]:
    """:func:`ok_json` of independent commands (one per site), run at once."""
    return [json.loads(p.stdout) for p in iomtnode_all(*((*c, "--json") for c in commands))]


@contextmanager
def namespaces(count: int) -> Iterator[tuple[netns.NetnsInfo, list[str]]]:
    """``count`` namespaces on a bridge, each resolving every node's name through its own
    hosts file: ``(info, ips)``. Namespaces, links and hosts files are gone afterwards."""
    rng = random.Random()
    info = netns.NetnsInfo(prefix=f"igc{rng.randrange(16 ** 4):04x}",
                           subnet=netns.choose_subnet(netns.used_subnets(), rng))
    ips = [info.ip(netns.FIRST_NODE_HOST + i) for i in range(count)]
    made_etc = not NETNS_ETC.exists()
    hosts = "127.0.0.1 localhost\n" + "".join(f"{ip} {name(i)}\n" for i, ip in enumerate(ips))
    try:
        netns.create_bridge(info)
        for i, ip in enumerate(ips):
            netns.create_node(info, f"node{i}", i, ip)
            etc = NETNS_ETC / info.namespace(f"node{i}")
            etc.mkdir(parents=True)
            (etc / "hosts").write_text(hosts)
        yield info, ips
    finally:
        for i in range(count):
            shutil.rmtree(NETNS_ETC / info.namespace(f"node{i}"), ignore_errors=True)
        if made_etc and NETNS_ETC.exists() and not any(NETNS_ETC.iterdir()):
            NETNS_ETC.rmdir()
        netns.destroy(info.prefix)
    assert not netns.leftovers(info.prefix)


def run_command(home: Path, api: str, p2p: str) -> list[str]:
    return [sys.executable, "-m", "iomtnode", "--log-json", "run", "--home", str(home),
            "--api", api, "--p2p", p2p]


@contextmanager
def node_processes(commands: list[list[str]], logs: Path, envs: list[dict[str, str]] | None
                   = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run each command (node ``i`` logs to ``logs/node{i}.log``, with ``envs[i]`` added to
    the environment) until its node started; each stopped (SIGKILL if stuck) on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.5"}
    try:
        for i, command in enumerate(commands):
            with (logs / f"node{i}.log").open("wb") as out:
                procs.append(subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT,
                    env={**env, **(envs[i] if envs else {})}))
        deadline = time.monotonic() + START_TIMEOUT_S
        for i, proc in enumerate(procs):
            log = logs / f"node{i}.log"
            while not any(e.get("event") == "node_started" for e in log_events(log)):
                assert proc.poll() is None, f"node{i} exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"node{i} did not start"
                time.sleep(POLL_S)
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ceremony(tmp_path: Path) -> tuple[list[Path], str]:
    """Four homes, their cards, one genesis, checked and installed everywhere: the homes
    and the genesis hash. The last home is made from a key file (as a container's is)."""
    key_file = tmp_path / "secret" / "node_key"
    key_file.parent.mkdir()
    key_file.write_text(os.urandom(32).hex() + "\n")
    homes = [tmp_path / f"site{i}" / "home" for i in range(NODES)]
    cards = [tmp_path / f"site{i}" / "card.json" for i in range(NODES)]
    imported = [("--key-file", str(key_file)) if i == NODES - 1 else () for i in range(NODES)]
    # each site's steps run at every site at once, as the sites would
    inits = all_ok_json(*(("init", "--home", str(home), "--no-genesis", *key)
                          for home, key in zip(homes, imported, strict=True)))
    for made, key in zip(inits, imported, strict=True):
        assert made["genesis_hash"] is None and made["signing_state"] is (not key)
    all_ok_json(*(("genesis", "card", "--home", str(home), "--chain-id", CHAIN, "--address",
                   f"{name(i)}:{P2P_PORT}", "--name", f"site {i}", "--out", str(card))
                  for i, (home, card) in enumerate(zip(homes, cards, strict=True))))
    with_cards = [a for c in cards for a in ("--card", str(c))]
    genesis = tmp_path / "genesis.json"
    made = ok_json("genesis", "new", "--chain-id", CHAIN, *with_cards,
                   "--admission-threshold", "1", "--out", str(genesis))
    assert sorted(made["bootnodes"]) == [f"{name(i)}:{P2P_PORT}" for i in range(NODES)]
    for checked in all_ok_json(*(("genesis", "verify", str(genesis), "--home", str(home),
                                  "--expect-hash", made["genesis_hash"], *with_cards,
                                  "--install") for home in homes)):
        assert checked["installed"] and checked["genesis_hash"] == made["genesis_hash"]
    return homes, made["genesis_hash"]


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float
                   ) -> None:
    """Poll ``check`` (it asks the nodes over the network) until true, within ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        while not await check():  # noqa: ASYNC110 (a condition on other processes)
            await trio.sleep(POLL_S)
        return
    raise AssertionError(f"not within {timeout_s} s: {what}")


@NEEDS_NETNS
def test_a_four_authority_network_from_the_ceremony_finalizes_readings(tmp_path: Path):
    homes, genesis_hash = ceremony(tmp_path)
    with namespaces(NODES) as (info, ips), node_processes([
            [*netns.in_namespace(info.namespace(f"node{i}")),
             *run_command(home, f"{ip}:{API_PORT}", f"0.0.0.0:{P2P_PORT}")]
            for i, (home, ip) in enumerate(zip(homes, ips, strict=True))], tmp_path):
        trio.run(check_network, homes, ips, genesis_hash)
        # the imported key deferred (it may have signed before), then signed again
        events = [e["event"] for e in log_events(tmp_path / f"node{NODES - 1}.log")]
        assert "signing_deferred" in events and "signing_resumed" in events


async def check_network(homes: list[Path], ips: list[str], genesis_hash: str) -> None:
    urls = [f"ws://{ip}:{API_PORT}/api/v1" for ip in ips]
    tokens = [(h / "admin_token").read_text().strip() for h in homes]
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(open_client(u)) for u in urls]

        async def meshed() -> bool:
            for i, client in enumerate(clients):
                status = await client.call("status")
                assert status["genesis_hash"] == genesis_hash
                assert status["p2p_address"] == f"{name(i)}:{P2P_PORT}"  # advertised
                book = (await client.call("admin_peers", token=tokens[i]))["address_book"]
                known = {a for r in book.values() for a in r["addresses"]}
                others = {f"{name(j)}:{P2P_PORT}" for j in range(NODES) if j != i}
                if len(status["peers"]) < NODES - 1 or not others <= known \
                        or status["height"] < 2:
                    return False
            return True

        await wait_for("every node meshed, knowing the others by name", meshed,
                       MESH_TIMEOUT_S)
        authority = read_key(homes[0] / "node_key")
        patient = Patient.make(CHAIN, {"vitals": [pt.BEDSIDE_MONITOR]})
        await register(clients[1], clients, authority, [patient])
        stream = patient.streams["vitals"]
        readings = every_vital(stream, stream.devices[0], now_ms(), CHAIN)
        await submit_and_wait(clients[2], clients, [r.tx for r in readings])
        heads = [(await c.call("status"))["height"] for c in clients]
        assert min(heads) >= 3, heads


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (bound together, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_a_new_network_of_imported_keys_finalizes(tmp_path: Path):
    """What every container and pod does: its home made on first start from a key it is
    given and the ceremony's genesis (``init --key-file K --genesis G``), so no home has a
    signing state and every authority defers; the network still finalizes blocks."""
    ports = free_ports(NODES)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    keys = [tmp_path / "secrets" / f"node{i}" for i in range(NODES)]
    keys[0].parent.mkdir()
    for key in keys:
        key.write_text(os.urandom(32).hex())
    holders = [tmp_path / f"keyholder{i}" for i in range(NODES)]
    card_files = [tmp_path / f"node{i}.card" for i in range(NODES)]
    # each step at every site at once, as the sites would
    all_ok_json(*(("init", "--home", str(holder), "--no-genesis", "--key-file", str(key))
                  for holder, key in zip(holders, keys, strict=True)))
    all_ok_json(*(("genesis", "card", "--home", str(holder), "--chain-id", CHAIN, "--address",
                   address, "--out", str(card))
                  for holder, address, card in zip(holders, addresses, card_files, strict=True)))
    cards = [a for c in card_files for a in ("--card", str(c))]
    genesis = tmp_path / "genesis.json"
    ok_json("genesis", "new", "--chain-id", CHAIN, *cards, "--out", str(genesis))
    homes = [tmp_path / f"pod{i}" for i in range(NODES)]
    for made in all_ok_json(*(("init", "--home", str(home), "--key-file", str(key),  # the
                               "--genesis", str(genesis))  # container's entrypoint
                              for home, key in zip(homes, keys, strict=True))):
        assert not made["signing_state"]
    envs = [{"IOMTNODE_BOOTNODES": ",".join(a for a in addresses if a != mine)}
            for mine in addresses]
    logs = tmp_path / "logs"
    logs.mkdir()
    with node_processes([run_command(h, "127.0.0.1:0", a) for h, a in zip(
            homes, addresses, strict=True)], logs, envs):
        deadline = time.monotonic() + MESH_TIMEOUT_S
        while min(last_height(logs / f"node{i}.log") for i in range(NODES)) < 3:
            assert time.monotonic() < deadline, [
                last_height(logs / f"node{i}.log") for i in range(NODES)]
            time.sleep(POLL_S)
    for i in range(NODES):
        events = [e["event"] for e in log_events(logs / f"node{i}.log")]
        assert "signing_deferred" in events and "signing_resumed" in events


def last_height(log: Path) -> int:
    return max((e["height"] for e in log_events(log) if e.get("event") == "block_finalized"),
               default=0)
