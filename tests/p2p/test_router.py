"""The router: registered kinds reach their reactor; unregistered kinds and handshake
messages after the handshake cost the sender; a kind is registered once; a peer of an older
protocol version is refused, with both versions named on both sides."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import ClassVar

import pytest
import trio
from structlog.testing import capture_logs
from trio.testing import memory_stream_pair
from trio_websocket import ConnectionClosed, wrap_client_stream

from iomtnode.config import Config
from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.p2p import score
from iomtnode.p2p.handshake import make_hello
from iomtnode.p2p.messages import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Auth,
    PeerRecords,
    decode_message,
    encode_message,
    message,
)
from iomtnode.p2p.peer import Peer
from iomtnode.p2p.router import KindTakenError, Router
from iomtnode.store import BlockStore
from iomtnode.sync.messages import GetBlocks, Status

pytestmark = pytest.mark.timeout(30)

CHAIN = "iomt-test"
GENESIS = blake2b256(b"genesis")
HEAD = bytes(32)


def key(n: int) -> SigningKey:
    return SigningKey(bytes([n]) * 32)


class Reactor:
    """Records what the router gives it."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, object]] = []
        self.connected_ids: list[bytes] = []
        self.disconnected_ids: list[bytes] = []

    async def receive(self, peer: Peer, msg: object) -> None:
        await trio.lowlevel.checkpoint()  # a reactor may await (backpressure)
        self.received.append((peer.node_id, msg))

    def connected(self, peer: Peer) -> None:
        self.connected_ids.append(peer.node_id)

    def disconnected(self, peer: Peer) -> None:
        self.disconnected_ids.append(peer.node_id)


@pytest.fixture
async def routers(tmp_path, nursery) -> AsyncIterator[tuple[Router, Router]]:
    made = []
    with BlockStore.open(tmp_path / "a") as sa, BlockStore.open(tmp_path / "b") as sb:
        for n, store in ((1, sa), (2, sb)):
            router = Router(Config(p2p_listen="127.0.0.1:0"), key(n), store, CHAIN, GENESIS,
                            lambda: (0, HEAD))
            made.append(router)
        yield made[0], made[1]


async def start(nursery: trio.Nursery, a: Router, b: Router) -> Peer:
    """Run both hosts (no listener needed) and connect ``a`` to ``b`` in memory."""
    for router in (a, b):
        router.host.config = replace(router.host.config, port=None)
        await nursery.start(router.host.run)
    sa, sb = memory_stream_pair()
    nursery.start_soon(b.host.accept_stream, sb, "10.0.0.1:40000")
    return await a.host.connect_stream(sa, "10.0.0.2:7546")


async def eventually(predicate) -> None:
    with trio.fail_after(10):
        while not predicate():  # noqa: ASYNC110 (virtual time)
            await trio.sleep(0.01)


async def test_a_registered_kind_reaches_its_reactor(routers, nursery, autojump_clock):
    a, b = routers
    reactor = Reactor()
    b.register((Status,), reactor)
    peer = await start(nursery, a, b)
    await eventually(lambda: reactor.connected_ids == [a.host.node_id])
    peer.send(Status(7, HEAD))
    await eventually(lambda: reactor.received == [(a.host.node_id, Status(7, HEAD))])
    a.disconnect(b.host.node_id, "done")
    await eventually(lambda: reactor.disconnected_ids == [a.host.node_id])


async def test_an_unregistered_kind_costs_the_sender(routers, nursery, autojump_clock):
    a, b = routers
    reactor = Reactor()
    b.register((Status,), reactor)
    peer = await start(nursery, a, b)
    with capture_logs() as logs:
        peer.send(GetBlocks(1, 1))  # a declared kind, but no reactor here takes it
        await eventually(lambda: any(e["event"] == "peer_penalized" for e in logs))
    penalty = next(e for e in logs if e["event"] == "peer_penalized")
    assert penalty["reason"] == "unexpected GetBlocks"
    assert penalty["points"] == score.INVALID_MESSAGE
    assert reactor.received == []


async def test_a_handshake_message_after_the_handshake_costs_the_sender(
        routers, nursery, autojump_clock):
    a, b = routers
    peer = await start(nursery, a, b)
    with capture_logs() as logs:
        peer.send(Auth(bytes(64), bytes(32), False, "10.0.0.2:7546", b""))
        await eventually(lambda: any(e["event"] == "peer_penalized" for e in logs))
    assert "Auth after the handshake" in next(
        e for e in logs if e["event"] == "peer_penalized")["reason"]


async def test_a_kind_is_registered_once(routers):
    a, _ = routers
    a.register((Status,), Reactor())
    with pytest.raises(KindTakenError, match="Status is handled by Reactor already"):
        a.register((GetBlocks, Status), Reactor())
    with pytest.raises(KindTakenError, match="PeerRecords is handled by PeerExchange"):
        a.register((PeerRecords,), Reactor())  # the router's own kinds are taken too


async def test_only_declared_kinds_can_be_registered(routers):
    a, _ = routers

    class NotAMessage:
        KIND = 99

    with pytest.raises(ValueError, match="not a declared message kind"):
        a.register((NotAMessage,), Reactor())


def test_a_kind_number_declares_one_type():
    with pytest.raises(ValueError, match="message kind 13 is Status already, not Impostor"):
        @message
        @dataclass(frozen=True, slots=True)
        class Impostor:
            KIND: ClassVar[int] = Status.KIND
            CHECKS: ClassVar[tuple] = ()
    assert MESSAGE_TYPES[Status.KIND] is Status


@pytest.mark.parametrize(("version", "reason"), [
    (3, f"protocol version 3, this node speaks {PROTOCOL_VERSION}"),  # it learns why
    (PROTOCOL_VERSION, f"the connection is not encrypted: protocol version {PROTOCOL_VERSION} "
                       "runs over TLS 1.3 only"),
])
async def test_a_peer_without_tls_is_refused_after_its_hello(routers, nursery, autojump_clock,
                                                             version, reason):
    """A version 3 node speaks websocket without TLS; nobody may speak a later version so."""
    assert PROTOCOL_VERSION >= 4
    _, b = routers
    plain = replace(make_hello(key(3), CHAIN, GENESIS, 0, HEAD), version=version)
    b.host.config = replace(b.host.config, port=None)
    await nursery.start(b.host.run)
    sa, sb = memory_stream_pair()
    nursery.start_soon(b.host.accept_stream, sb, "10.0.0.9:5000")
    with capture_logs() as logs:
        ws = await wrap_client_stream(nursery, sa, "10.0.0.2:7546", "/p2p/v1")
        await ws.send_message(encode_message(plain))
        decode_message(await ws.get_message())  # b's Hello
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1008
    assert closed.value.reason.reason == reason
    assert [e["reason"] for e in logs if e["event"] == "peer_refused"] == [reason]


async def test_a_closed_connection_replaced_before_its_task_ended_is_told_to_reactors(
        routers, nursery, autojump_clock):
    """The peer closed a connection (a duplicate it dropped) and its next one registered
    before the old one's task had unregistered it: the reactors were never told the old one
    was gone, so block sync waited 10 s for an answer to a request sent on it (a 3-1 split's
    heal, in a chaos run). Each connection a reactor was told of is now told gone."""
    a, b = routers
    reactor = Reactor()
    b.register((GetBlocks,), reactor)
    for router in (a, b):
        router.host.config = replace(router.host.config, port=None)
        await nursery.start(router.host.run)
    sa, sb = memory_stream_pair()
    stalling = Stalling(sb)
    nursery.start_soon(b.host.accept_stream, stalling, "10.0.0.1:40000")
    await a.host.connect_stream(sa, "10.0.0.2:7546")
    await eventually(lambda: reactor.connected_ids == [key(1).public])
    first = b.host.get(key(1).public)
    assert first is not None
    stalling.stalled = True  # its close frame cannot go out: its task stays in its close
    first.close("the peer dropped this duplicate")
    sa, sb = memory_stream_pair()
    nursery.start_soon(b.host.accept_stream, sb, "10.0.0.1:40001")
    await a.host.connect_stream(sa, "10.0.0.2:7546")
    await eventually(lambda: len(reactor.connected_ids) == 2)
    assert reactor.disconnected_ids == [key(1).public]  # the first, once
    assert b.host.get(key(1).public) is not first


class Stalling(trio.abc.Stream):
    """A stream whose sends hang once ``stalled`` (a peer that stopped reading)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner, self.stalled = inner, False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.stalled:
            await trio.sleep_forever()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()
