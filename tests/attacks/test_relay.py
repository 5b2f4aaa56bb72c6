"""Finding 1: a party that reaches two nodes relays their handshake to stand between them.

The relay connects to A and to B (each over its own TLS connection, as anyone may), forwards
B's Hello to A and A's Hello to B, then swaps their Auths. Each node signed the channel
binding of its own connection with the relay, so each refuses the other's Auth as relayed,
blaming the connection and not the node id it claims: no penalty, no ban, and A and B connect
to each other and keep finalizing. Process-level with real sockets and real TLS
(``iomtnode run`` under :class:`~iomtnode.localnet.Localnet`), and in-process on the memory
network, whose connections carry bindings of their own. When both nodes dial the relay, it
is the TLS server of both connections and shows one certificate on both, so the bindings
are equal: the Auths' ends (both "dialed") refuse it then; with processes (the relay is their
bootnode) and in process over real TLS. Plus the pure rule underneath.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import trio
from trio.testing import memory_stream_pair
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    wrap_client_stream,
    wrap_server_stream,
)

from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.localnet import Localnet
from iomtnode.p2p.handshake import HandshakeError, check_auth, make_auth, make_hello
from iomtnode.p2p.host import DialError, Host, P2PConfig
from iomtnode.p2p.messages import Hello, decode_message
from iomtnode.p2p.peer import Peer
from iomtnode.p2p.records import sign_record
from iomtnode.p2p.transport import ChannelError, split_address
from tests.node.memnet import MemoryNetwork
from tests.p2p.fakepeer import open_p2p, secure

FAST = {"IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.3", "IOMTNODE_BLOCK_INTERVAL_S": "0.05"}
RELAYED = "handshake relayed"
CHAIN = "iomt-test"
GENESIS = blake2b256(b"genesis")


# ---- the relay --------------------------------------------------------------------------------

async def close_reason(ws: WebSocketConnection) -> str:
    """Read until the node closes; its close reason ("" if it closed without one)."""
    while True:
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            return exc.reason.reason or "" if exc.reason is not None else ""


async def relay(a: WebSocketConnection, b: WebSocketConnection,
                hellos: tuple[bytes, bytes] | None = None) -> tuple[str, str]:
    """Stand between the nodes at the ends of ``a`` and ``b``: swap their Hellos (``hellos``
    if already read), then their Auths; return why each closed on us. A side that refuses
    early is left to close."""
    with trio.fail_after(15):
        hello_a, hello_b = hellos or (await a.get_message(), await b.get_message())
        await a.send_message(hello_b)  # to A we are B ...
        await b.send_message(hello_a)  # ... and to B we are A
        try:
            auth_a, auth_b = await a.get_message(), await b.get_message()
            await a.send_message(auth_b)
            await b.send_message(auth_a)
            for _ in range(6):  # as in the finding: garbage in B's name, if A took us for B
                await a.send_message(b"\xc1")
        except ConnectionClosed:
            pass
        return await close_reason(a), await close_reason(b)


async def relay_between(address_a: str, address_b: str) -> tuple[str, str]:
    async with trio.open_nursery() as nursery:
        ws_a, _ = await open_p2p(nursery, *split_address(address_a))
        ws_b, _ = await open_p2p(nursery, *split_address(address_b))
        reasons = await relay(ws_a, ws_b)
        nursery.cancel_scope.cancel()
    return reasons


# ---- real processes, real TLS -----------------------------------------------------------------

def log_events(net: Localnet, name: str) -> list[dict]:
    events = []
    for line in net.node(name).log.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


async def peer_ids(net: Localnet, name: str) -> set[str]:
    return {p["node_id"] for p in (await net.status(name))["peers"]}


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_a_relayed_handshake_is_refused_and_blames_neither_node(tmp_path: Path):
    # Two nodes that have never met (no bootnodes): the relay gets each to sign for it.
    env = {**FAST, "IOMTNODE_BOOTNODES": ""}
    async with Localnet.start(nodes=2, path=tmp_path / "net", authorities=1, env=env) as net:
        a, b = net.node("node1"), net.node("node2")
        await net.wait_for_height(2, names=["node1"], timeout_s=30)
        refused = await relay_between(a.p2p_listen, b.p2p_listen)
        assert all(reason.startswith(RELAYED) for reason in refused), refused
        for name in ("node1", "node2"):
            events = log_events(net, name)
            assert any(e["event"] == "peer_refused" and e["reason"].startswith(RELAYED)
                       for e in events), name
            assert not [e for e in events if e["event"] in ("peer_penalized", "peer_banned")]
            assert not [e for e in events if e["event"] == "peer_connected"]

        # B learns A's address and connects: A has not banned or penalised B's id.
        async with Localnet.attach(net.manifest.dir,
                                   env={**FAST, "IOMTNODE_BOOTNODES": a.p2p_listen}) as other:
            await other.restart("node2")
        with trio.fail_after(20):
            while await peer_ids(net, "node1") != {b.node_id}:  # noqa: ASYNC110 - processes
                await trio.sleep(0.1)
        top = (await net.status("node1"))["height"]
        await net.wait_for_height(top + 2, timeout_s=20)

        # Again, now that they are connected: refused, and their connection stays.
        refused = await relay_between(a.p2p_listen, b.p2p_listen)
        assert all(reason for reason in refused), refused  # each side closed with a reason
        top = (await net.status("node1"))["height"]
        await net.wait_for_height(top + 3, timeout_s=20)
        assert await peer_ids(net, "node1") == {b.node_id}
        assert await peer_ids(net, "node2") == {a.node_id}
        for name in ("node1", "node2"):
            events = log_events(net, name)
            assert [e["event"] for e in events if e["event"] in (
                "peer_connected", "peer_disconnected")] == ["peer_connected"], name
            assert not [e for e in events if e["event"] in ("peer_penalized", "peer_banned")]
        await net.check_invariants(k=3, within_s=10)


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_a_relay_that_both_node_processes_dial_is_refused(tmp_path: Path):
    # The relay is both nodes' bootnode: each dials it, and it is the TLS server of both.
    legs: dict[bytes, tuple[WebSocketConnection, bytes]] = {}
    paired = trio.Event()
    async with trio.open_nursery() as nursery:

        async def accepted(stream: trio.SocketStream) -> None:
            try:
                conn = await secure(stream, outbound=False)  # one certificate for every leg
                ws = await (await wrap_server_stream(nursery, conn.stream)).accept()
                hello = await ws.get_message()
            except (ChannelError, ConnectionClosed, trio.BrokenResourceError):
                return
            node_id = decode_message(hello).node_id
            if paired.is_set() or node_id in legs:  # a node's retry: not needed
                await ws.aclose()
                return
            legs[node_id] = (ws, hello)
            if len(legs) == 2:
                paired.set()
            await trio.sleep_forever()  # the stream is closed when this returns

        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(partial(trio.serve_listeners, accepted, listeners,
                                   handler_nursery=nursery))
        env = {**FAST, "IOMTNODE_BOOTNODES": f"127.0.0.1:{port}"}
        async with Localnet.start(nodes=2, path=tmp_path / "net", authorities=1,
                                  env=env) as net:
            with trio.fail_after(30):
                await paired.wait()
            (ws_a, hello_a), (ws_b, hello_b) = legs.values()
            refused = await relay(ws_a, ws_b, (hello_a, hello_b))
            assert all("both ends dialed" in reason for reason in refused), refused
            for name in ("node1", "node2"):
                events = log_events(net, name)
                assert any(e["event"] == "peer_refused" and "both ends dialed" in e["reason"]
                           for e in events), name
                assert not [e for e in events if e["event"] in (
                    "peer_penalized", "peer_banned", "peer_connected")]
            await net.wait_for_height(3, names=["node1"], timeout_s=30)
        nursery.cancel_scope.cancel()


# ---- in process: the memory network's connections have bindings of their own ----------------

class Node:
    """A HostHandler that records who connected."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.connected: list[bytes] = []

    def local_hello(self) -> Hello:
        return make_hello(self.key, CHAIN, GENESIS, 0, bytes(32))

    def local_record(self) -> bytes:
        return sign_record(self.key, ("10.0.0.1:7546",), 1, 0, CHAIN).raw

    async def on_connected(self, peer: Peer) -> None:
        self.connected.append(peer.node_id)

    async def on_message(self, peer: Peer, msg: object) -> None:
        pass

    def on_disconnected(self, peer: Peer, reason: str) -> None:
        pass


async def test_a_relay_on_the_memory_network_is_refused(nursery, autojump_clock):
    network = MemoryNetwork()
    hosts = []
    for i, address in enumerate(("10.0.0.1", "10.0.0.2")):
        key = SigningKey(bytes([i + 1]) * 32)
        host = Host(P2PConfig(host=address, port=7546), key, Node(key),
                    transport=network.transport(address))
        await nursery.start(host.run)
        hosts.append(host)
    a, b = hosts
    with trio.fail_after(60):
        legs = []
        for address in ("10.0.0.1", "10.0.0.2"):
            stream = await network.connect("10.0.9.9", address, 7546)
            legs.append(await wrap_client_stream(nursery, stream, address, "/p2p/v1"))
        refused = await relay(*legs)
        assert all(reason.startswith(RELAYED) for reason in refused), refused
        assert a.peers() == [] and b.peers() == []
        now = trio.current_time()
        for host, other in ((a, b), (b, a)):  # neither blamed the other's id
            assert host.scoreboard.score(other.node_id, now) == 0
            assert not host.scoreboard.is_banned(other.node_id, now)
        peer = await a.dial("10.0.0.2:7546")  # and they connect to each other
        assert peer.node_id == b.node_id


async def test_a_relay_that_both_nodes_dial_is_refused(nursery, autojump_clock):
    """Both nodes dial the relay (say, it handed out both their addresses as its own): it is
    the TLS server of both connections, so both have its certificate's binding."""
    hosts = []
    for i in (1, 2):
        key = SigningKey(bytes([i]) * 32)
        host = Host(P2PConfig(port=None), key, Node(key))  # TLS 1.3, as a node runs
        await nursery.start(host.run)
        hosts.append(host)
    a, b = hosts
    refused: list[str] = []

    async def dial(host: Host, stream: trio.abc.Stream) -> None:
        with pytest.raises(DialError) as failed:
            await host.connect_stream(stream, "10.0.9.9:7546")  # the relay's address
        refused.append(str(failed.value))

    with trio.fail_after(60):
        legs = []
        for host in hosts:
            ours, theirs = memory_stream_pair()
            nursery.start_soon(dial, host, theirs)
            conn = await secure(ours, outbound=False)  # one certificate for both legs
            legs.append(await (await wrap_server_stream(nursery, conn.stream)).accept())
        await relay(*legs)
        while len(refused) < 2:  # noqa: ASYNC110 - virtual time
            await trio.sleep(0.01)
    assert all("both ends dialed" in reason for reason in refused), refused
    assert a.peers() == [] and b.peers() == []
    now = trio.current_time()
    assert a.scoreboard.score(b.node_id, now) == 0 and b.scoreboard.score(a.node_id, now) == 0


# ---- the rule ---------------------------------------------------------------------------------

def test_an_auth_signed_for_one_binding_or_end_does_not_verify_under_another():
    ka, kb = SigningKey(bytes([1]) * 32), SigningKey(bytes([2]) * 32)
    hello_a = make_hello(ka, CHAIN, GENESIS, 0, bytes(32))
    hello_b = make_hello(kb, CHAIN, GENESIS, 0, bytes(32))
    one, another = bytes(32), bytes([1]) * 32
    auth = make_auth(ka, CHAIN, hello_a, hello_b, one, True, "10.0.0.2:7546", b"")  # A dialed
    check_auth(auth, hello_b, hello_a, one, False)  # B checks A's Auth on their connection
    with pytest.raises(HandshakeError, match=RELAYED):
        check_auth(auth, hello_b, hello_a, another, False)  # sent on another connection
    with pytest.raises(HandshakeError, match="does not verify on this connection"):
        check_auth(replace(auth, binding=another), hello_b, hello_a, another, False)  # relabelled
    with pytest.raises(HandshakeError, match="both ends dialed"):
        check_auth(auth, hello_b, hello_a, one, True)  # B dialed too: someone between them
    with pytest.raises(HandshakeError, match="does not verify on this connection"):
        check_auth(replace(auth, dialed=False), hello_b, hello_a, one, True)  # relabelled
