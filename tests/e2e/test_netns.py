"""Localnets in network namespaces (root): each node on its own IP behind a bridge, and
faults made of real packets: partition, isolation, loss, delay, an IP change; nothing left
behind afterwards, also after the controller is killed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from iomtnode.localnet import Localnet, Manifest
from iomtnode.localnet.netns import NetnsInfo
from iomtnode.localnet.procs import pid_state

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]
FAST = {"IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.5"}
STALL_WINDOW_S = 3.0  # a cut-off side must not finalize for this long (several block times)
DELAY_MS = 50.0
BELOW_DELAY_MS = 45.0  # a delayed round trip never takes less; an undelayed one a few ms


def sh(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def leftovers(prefix: str) -> list[str]:
    names = sh("ip", "netns", "list").split() + re.findall(r"^\d+: ([^:@]+)", sh(
        "ip", "-o", "link", "show"), re.M)
    return [n for n in names if n.startswith(prefix)]


async def heights(net: Localnet) -> dict[str, int]:
    return {n: (await net.status(n, timeout_s=3))["height"] for n in net.names}


async def stalled(net: Localnet, names: list[str]) -> bool:
    """Whether ``names`` gain at most one block (one already voted) over the window."""
    before = await heights(net)
    await trio.sleep(STALL_WINDOW_S)
    after = await heights(net)
    return all(after[n] <= before[n] + 1 for n in names)


def drops(net: Localnet, name: str) -> int:
    """Packets the random-drop rules of ``name``'s namespace have dropped so far."""
    assert net.manifest.netns is not None
    table = sh("ip", "netns", "exec", net.manifest.netns.namespace(name), "nft", "list",
               "table", "inet", "iomt_faults")
    return sum(int(n) for n in re.findall(r"numgen .* counter packets (\d+)", table))


async def round_trip_ms(ip: str, port: int = 7001, attempts: int = 20) -> float:
    """A request to a p2p port and the node's first answer. A refusal is no measurement: a
    node over a per-address limit answers HTTP 503 without reading the request (through a
    delay proxy every connection comes from the proxy's one address, peers' too), so before
    the delayed request reaches it; ask again then, up to ``attempts`` times."""
    for _ in range(attempts):
        start = trio.current_time()
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(ip, port)
            async with stream:
                await stream.send_all(b"GET /p2p/v1 HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    answer = await stream.receive_some(64)
                except trio.BrokenResourceError:
                    answer = b""
        if answer and not answer.startswith(b"HTTP/1.1 503"):
            return (trio.current_time() - start) * 1000
        await trio.sleep(0.25)  # pace the next attempt: the refusal was over a limit
    raise AssertionError(f"{ip}:{port} answered none of {attempts} requests")


P2P_PORT = 7001
REDIAL_S = 10.0  # a reset connection is re-dialed within a dial tick (0.5 s) or two


def established(net: Localnet, name: str) -> list[tuple[str, str, set[int]]]:
    """``(local, remote, pids)`` of every established TCP socket in ``name``'s namespace."""
    assert net.manifest.netns is not None
    lines = sh("ip", "netns", "exec", net.manifest.netns.namespace(name), "ss", "-tnpH",
               "state", "established").splitlines()
    return [(m[1], m[2], {int(p) for p in re.findall(r"pid=(\d+)", m[3])}) for line in lines
            if (m := re.match(r"\d+\s+\d+\s+(\S+)\s+(\S+)\s+(.*)", line))]


def direct_p2p(net: Localnet, name: str) -> list[str]:
    """The remote ends of ``name``'s p2p connections that do not go through its delay
    proxy. The node cannot tell (redirection is NAT), so it is read from the sockets: a
    proxied inbound connection comes from one of the proxy's own sockets, a proxied
    outbound one ends at the proxy's listener (a proxy socket whose remote is the node's)."""
    node = net.node(name).proc
    assert node is not None
    proxy = net.manifest.proxies.get(name)
    sockets = established(net, name)
    mine = [s for s in sockets if proxy is not None and proxy.pid in s[2]]
    proxy_locals, proxy_remotes = {s[0] for s in mine}, {s[1] for s in mine}
    return sorted(remote for local, remote, pids in sockets
                  if node.pid in pids and P2P_PORT in (port(local), port(remote))
                  and remote not in proxy_locals
                  and not (local in proxy_remotes and port(local) != P2P_PORT))


def p2p_connections(net: Localnet, name: str) -> set[tuple[str, str]]:
    """``(local, remote)`` of each of the node's own p2p sockets."""
    node = net.node(name).proc
    assert node is not None
    return {(local, remote) for local, remote, pids in established(net, name)
            if node.pid in pids and P2P_PORT in (port(local), port(remote))}


def port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


async def wait_until_peers(net: Localnet, name: str, count: int, *, direct: int | None,
                           timeout_s: float = REDIAL_S) -> float:
    """Seconds until ``name`` has ``count`` peers and, unless ``direct`` is None, exactly
    ``direct`` p2p connections that bypass its delay proxy."""
    start = trio.current_time()
    with trio.move_on_after(timeout_s):
        while True:
            peers = (await net.admin(name, "admin_peers"))["peers"]
            bypassing = direct_p2p(net, name)
            if len(peers) == count and (direct is None or len(bypassing) == direct):
                return trio.current_time() - start
            await trio.sleep(0.1)
    raise AssertionError(f"{name} after {timeout_s} s: {len(peers)} peers, connections not "
                         f"through its delay proxy: {bypassing}")


@pytest.mark.timeout(60)
async def test_delay_moves_existing_connections_onto_the_proxy_and_heal_moves_them_back(
        tmp_path: Path):
    """Connections made before ``delay`` are cut and re-made through the proxy (NAT alone
    would only redirect new ones); ``heal`` stops the proxy and they come back direct.
    Nothing is restarted."""
    async with Localnet.start(nodes=3, path=tmp_path / "net", netns=True, env=FAST) as net:
        await net.wait_for_height(2, timeout_s=30)
        pids = {n.name: n.proc.pid for n in net.manifest.nodes if n.proc is not None}
        await wait_until_peers(net, "node2", 2, direct=2, timeout_s=30)  # settled, direct

        await net.delay(DELAY_MS, ["node2"])
        took = await wait_until_peers(net, "node2", 2, direct=0)  # both through the proxy
        node2 = net.node("node2").p2p_listen.rsplit(":", 1)[0]
        assert min([await round_trip_ms(node2) for _ in range(3)]) >= DELAY_MS
        top = max((await heights(net)).values())
        await net.wait_for_height(top + 2, timeout_s=30)  # consensus through the proxy,
        # and nothing went back around it (two dials that crossed while the old connections
        # were cut may leave a duplicate, which the nodes close: the sockets may change)
        await wait_until_peers(net, "node2", 2, direct=0)
        assert p2p_connections(net, "node2")
        proxy = net.manifest.proxies["node2"]

        await net.heal()
        assert pid_state(proxy) == "gone"
        back = await wait_until_peers(net, "node2", 2, direct=2)
        assert min([await round_trip_ms(node2) for _ in range(3)]) < BELOW_DELAY_MS
        top = max((await heights(net)).values())
        await net.wait_for_height(top + 2, timeout_s=30)
        assert {n.name: n.proc.pid for n in net.manifest.nodes if n.proc is not None} == pids
        print(f"through the proxy after {took:.2f} s, direct again after {back:.2f} s")


@pytest.mark.timeout(90)
async def test_partition_isolation_and_loss_with_real_packets(tmp_path: Path):
    async with Localnet.start(nodes=4, path=str(tmp_path / "net"), netns=True,
                              env=FAST) as net:
        info = net.manifest.netns
        assert info is not None
        ips = [n.p2p_listen.rsplit(":", 1)[0] for n in net.manifest.nodes]
        assert len(set(ips)) == 4 and all(ip.startswith(f"10.77.{info.subnet}.") for ip in ips)
        for entry in net.manifest.nodes:  # each node runs inside its own namespace
            assert sh("ip", "netns", "identify", str(entry.proc.pid)).strip() == \
                info.namespace(entry.name)
        await net.wait_for_height(3, timeout_s=30)

        await net.partition(["node1", "node2"], ["node3", "node4"])
        assert await stalled(net, net.names)  # 2 of 4: no quorum on either side
        top = max((await heights(net)).values())
        await net.heal()
        await net.wait_for_height(top + 2, timeout_s=30)

        await net.isolate("node4")
        top = (await heights(net))["node4"]
        await net.wait_for_height(top + 3, ["node1", "node2", "node3"], timeout_s=30)
        assert (await heights(net))["node4"] <= top + 1
        assert (await net.status("node4"))["node_id"]  # its API still answers the host
        await net.heal()
        await net.wait_for_height(top + 4, ["node4"], timeout_s=30)

        await net.loss(30.0)
        top = max((await heights(net)).values())
        await net.wait_for_height(top + 3, timeout_s=40)  # 30% loss still finalizes
        assert all(drops(net, n) > 0 for n in net.names)  # ... and packets were dropped
        await net.heal()
        with pytest.raises(subprocess.CalledProcessError):  # the table is gone
            drops(net, "node1")
    assert leftovers(info.prefix) == []


@pytest.mark.timeout(90)
async def test_delay_and_an_ip_change_then_nothing_is_left(tmp_path: Path):
    async with Localnet.start(nodes=4, path=tmp_path / "net", netns=True, env=FAST,
                              devices=2, rate=10.0) as net:
        info = net.manifest.netns
        assert info is not None
        with trio.fail_after(30):  # the simulator, in the root namespace, reaches node1
            while (await net.status("node3"))["committed_txs"] == 0:  # noqa: ASYNC110
                await trio.sleep(0.2)
        node2 = net.node("node2").p2p_listen.rsplit(":", 1)[0]
        assert min([await round_trip_ms(node2) for _ in range(3)]) < BELOW_DELAY_MS

        await net.delay(DELAY_MS, ["node2"])
        assert min([await round_trip_ms(node2) for _ in range(3)]) >= DELAY_MS
        top = max((await heights(net)).values())
        await net.wait_for_height(top + 2, timeout_s=30)  # consensus through the delay
        proxy = net.manifest.proxies["node2"]
        await net.heal()
        assert min([await round_trip_ms(node2) for _ in range(3)]) < BELOW_DELAY_MS
        assert pid_state(proxy) == "gone" and net.manifest.proxies == {}

        mover = net.node("node3")
        old = mover.p2p_listen.rsplit(":", 1)[0]
        new_address = await net.change_ip("node3")
        new = new_address.rsplit(":", 1)[0]
        assert new != old and new.startswith(f"10.77.{info.subnet}.")
        addresses = sh("ip", "-n", info.namespace("node3"), "-o", "-4", "addr", "show")
        assert f"inet {new}/" in addresses and f"inet {old}/" not in addresses
        assert Manifest.load(net.manifest.dir).node("node3").p2p == f"wss://{new_address}/p2p/v1"

        def moved(peers: dict, found: list[str]) -> bool:
            """Connected to node3 at its new address, to nothing at the old, and dialing
            it at the new one (its re-announced record)."""
            record = peers["address_book"].get(mover.node_id, {}).get("addresses", [])
            return (any(a.startswith(f"{new}:") for a in found) and record == [new_address]
                    and not any(a.startswith(f"{old}:") for a in found))

        with trio.fail_after(30):
            while True:
                if all([moved(await net.admin(n, "admin_peers"),
                              (await net.resources(n))["remote_addresses"])
                        for n in ("node1", "node2", "node4")]):
                    break
                await trio.sleep(0.5)
        figures = await net.resources("node3")
        assert figures["peers"] == 3 and figures["fds"] > 0 and figures["rss_bytes"] > 0

        await net.kill("node3")
        await net.restart("node3")  # in its namespace again, on its new address
        assert sh("ip", "netns", "identify", str(mover.proc.pid)).strip() == \
            info.namespace("node3")
        await net.pause("node2")
        await net.resume("node2")
        top = max((await heights(net)).values())
        await net.wait_for_height(top + 2, timeout_s=30)
    assert leftovers(info.prefix) == []
    assert Manifest.load(net.manifest.dir).netns is None


def localnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "iomtnode", "localnet", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **FAST, "PYTHONUNBUFFERED": "1"})


@pytest.mark.timeout(90)
def test_down_and_a_new_start_clean_up_after_a_killed_controller(tmp_path: Path):
    directory = tmp_path / "net"
    up = subprocess.Popen([sys.executable, "-m", "iomtnode", "localnet", "up", "--netns",
                           "--nodes", "2", "--dir", str(directory), "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env={**os.environ, **FAST})
    try:
        assert up.stdout is not None
        started = json.loads(up.stdout.readline())  # printed once every node answers
        prefix = started["netns"]["prefix"]
        up.send_signal(signal.SIGKILL)  # the controller crashes; its nodes keep running
        up.wait(10)
        manifest = Manifest.load(directory)
        refs = [n.proc for n in manifest.nodes]
        assert all(pid_state(r) == "running" for r in refs) and leftovers(prefix)

        again = localnet("up", "--netns", "--dir", str(directory), "--detach")
        assert again.returncode == 1 and "localnet down --dir" in again.stderr
        down = localnet("down", "--dir", str(directory), "--json")
        assert down.returncode == 0, down.stderr
        assert all(pid_state(r) == "gone" for r in refs)
        assert leftovers(prefix) == [] and f"{prefix}br" in json.loads(down.stdout)["removed"]

        for entry in manifest.nodes:  # a crash of everything: nodes gone, namespaces not
            subprocess.run(["ip", "netns", "add", f"{prefix}-{entry.name}"], check=True)
        crashed = Manifest.load(directory)
        crashed.netns = NetnsInfo(prefix=prefix, subnet=started["netns"]["subnet"])
        crashed.save()
        squatter = subprocess.Popen(["ip", "netns", "exec", f"{prefix}-node1", "sleep", "60"])
        try:  # a process still inside: refused, naming the namespace and the pid
            refused = localnet("up", "--netns", "--dir", str(directory), "--detach")
            assert refused.returncode == 1 and f"{prefix}-node1 (pids {squatter.pid})" in \
                refused.stderr, refused.stderr
        finally:
            squatter.kill()
            squatter.wait(10)
        started = localnet("up", "--netns", "--dir", str(directory), "--detach", "--json")
        assert started.returncode == 0, started.stderr
        fresh = json.loads(started.stdout)["netns"]["prefix"]
        assert leftovers(prefix) == [] and fresh != prefix and leftovers(fresh)
    finally:
        if up.poll() is None:
            up.kill()
        localnet("down", "--dir", str(directory))
    assert leftovers(prefix) == [] and leftovers(fresh) == []
