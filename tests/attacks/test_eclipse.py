"""Finding 2, eclipse: throwaway inbound connections and handshakes that never finish must not
cut a node off. Each attack is attempted and refused; the node still dials out, its honest
peers stay connected and the network keeps finalizing.

The connection flood is about policy (slots, limits per address, eviction): it runs in
process on the memory network under a virtual clock, each throwaway connection a real
:class:`Host` with a fresh key. The pending-handshake flood is about sockets: it runs over
loopback TCP with raw connections that never say a word (a handshake that never completes is
pending, whatever the transport speaks).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import structlog
import trio

from iomtnode.config import Config
from iomtnode.node import Clock, Node
from iomtnode.p2p.host import DialError, Host
from iomtnode.p2p.slots import MAX_PENDING_PER_IP, MAX_PENDING_PER_NETGROUP
from iomtnode.p2p.tls import TlsTransport
from iomtnode.p2p.transport import TcpTransport

from ..node.harness import BASE, Net, wait_for
from .throwaway import throwaway_host

pytestmark = pytest.mark.timeout(120)


ATTACK_IPS = ("10.66.0.1", "10.66.0.2", "10.66.1.1", "10.66.1.2")  # 4 IPs, 2 netgroups


async def test_throwaway_inbound_connections_cannot_eclipse_a_node(tmp_path, nursery,
                                                                    autojump_clock):
    net = Net(tmp_path, 4, authorities=3)
    tight = replace(BASE, max_peers=20, outbound_slots=4)  # 16 inbound slots
    target = await net.start(nursery, 0, node=net.make(0, config=tight))
    for i in (1, 2):
        await net.start(nursery, i, (net.p2p(0),))
    await wait_for(lambda: all(len(net.node(i).p2p.host.peers()) == 2 for i in range(3)),
                   "mesh of the three authorities")
    honest = {net.keys[1].public, net.keys[2].public}
    host = target.p2p.host
    await net.wait_height(3)
    h0 = target.chain.height
    attackers: list[Host] = []
    refused: list[str] = []
    with structlog.testing.capture_logs() as logs:
        for n in range(50):
            attacker = await throwaway_host(nursery, net, ATTACK_IPS[n % len(ATTACK_IPS)])
            attackers.append(attacker)
            try:
                await attacker.dial(net.p2p(0))
            except DialError as exc:
                refused.append(str(exc))
            inbound = [p for p in host.peers() if not p.outbound]
            assert len(inbound) <= 16  # the outbound slots stay free
            assert honest <= {p.node_id for p in host.peers()}, "an honest peer was dropped"
        await net.wait(lambda: target.chain.height >= h0 + 5, "finalizing under attack")
        # the node still dials out: a new honest node, reached through a reserved slot
        newcomer = await net.start(nursery, 3)
        peer = await host.dial(net.p2p(3))
        assert peer.node_id == newcomer.key.public and peer.outbound
    attacking = {a.node_id for a in attackers}
    connected = {p.node_id for p in host.peers()} & attacking
    assert len(connected) <= 16
    assert all("503" in r for r in refused)  # any refusal came at the door, with a reason
    evicted = [e for e in logs if e["event"] == "peer_evicted"]
    disconnected = {e["peer"] for e in logs if e["event"] == "peer_disconnected"
                    and e.get("node") == host.node_id.hex()[:16]}
    assert evicted, "a full inbound made no room by eviction"
    assert not disconnected & {k.hex()[:16] for k in honest}, "an honest peer was evicted"
    assert net.same_chain()


class FromAddress(TcpTransport):
    """TCP whose dials come from ``local_ip`` (a loopback address other than 127.0.0.1)."""

    def __init__(self, local_ip: str) -> None:
        super().__init__(None)
        self.local_ip = local_ip

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port, local_address=self.local_ip)


FLOOD_SOURCES = ("127.0.0.1", "127.0.0.2")  # two addresses of one /24
FLOOD_SOCKETS = 128  # held open at once: twice what the node lets handshake in all


async def flood(port: int, stop: trio.Event) -> None:
    """Keep 128 raw sockets to ``port`` open that never send a byte, opening 32 new ones every
    0.2 s in place of the oldest (so the node's handshake timeout never empties the flood)."""
    held: list[trio.SocketStream] = []
    try:
        for _ in range(1000):  # bounded: at most 200 s
            if stop.is_set():
                return
            while len(held) > FLOOD_SOCKETS - 32:  # the oldest go, new ones take their places
                await held.pop(0).aclose()
            for source in FLOOD_SOURCES:
                for _ in range(16):
                    held.append(await trio.open_tcp_stream("127.0.0.1", port,
                                                           local_address=source))
            with trio.move_on_after(0.2):
                await stop.wait()
    finally:
        for stream in held:
            await trio.aclose_forcefully(stream)


async def test_pending_handshakes_cannot_keep_honest_peers_out(tmp_path, nursery):
    # real nodes on loopback TCP: node 0 is flooded with raw connections that never send a
    # byte, from two addresses of one /24; node 1, an honest authority on another /24,
    # connects while the flood goes on, and the two keep finalizing
    config = replace(BASE, block_interval_s=0.05, empty_block_interval_s=0.2)
    net = Net(tmp_path, 2, authorities=2, config=config, virtual=False)

    def real(i: int, transport: TlsTransport, bootnodes: tuple[str, ...] = ()) -> Node:
        cfg = replace(config, bootnodes=bootnodes)
        return Node(net.homes[i], cfg, clock=Clock(net.now_ms, virtual=False),
                    transport=transport)

    with trio.fail_after(90):
        target = await net.start(nursery, 0, node=real(0, TlsTransport(TcpTransport())))
        slots, stop = target.p2p.host.slots, trio.Event()
        most = {"ip": 0, "group": 0}

        def sample() -> None:
            most["ip"] = max(most["ip"], slots.pending("127.0.0.1"))
            most["group"] = max(most["group"], slots.pending_in("127.0.0.0/24"))

        with structlog.testing.capture_logs() as logs:
            nursery.start_soon(flood, target.p2p.host.listen_port, stop)
            await wait_for(lambda: sample() or most["group"] >= MAX_PENDING_PER_NETGROUP,
                           "the flood holding its netgroup's handshake places", timeout=10)
            await net.start(nursery, 1, node=real(1, TlsTransport(FromAddress("127.0.1.1")),
                                                   (net.p2p(0),)))
            await wait_for(lambda: sample() or target.p2p.host.get(net.keys[1].public),
                           "the honest peer connected under the flood", timeout=20)
            h0 = target.chain.height
            await wait_for(lambda: sample() or all(n.chain.height >= h0 + 3 for n in net.live()),
                           "finalizing under the flood", timeout=30)
            assert target.p2p.host.get(net.keys[1].public) is not None
            stop.set()
    assert most["ip"] <= MAX_PENDING_PER_IP and most["group"] <= MAX_PENDING_PER_NETGROUP
    reasons = [e["reason"] for e in logs if e["event"] == "peer_handshake_rejected"]
    assert any("handshakes in progress from 127.0.0" in r for r in reasons)
    assert Config().max_pending_per_ip == MAX_PENDING_PER_IP
