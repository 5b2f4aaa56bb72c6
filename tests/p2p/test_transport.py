"""The P2P transport: handshake, pings, backpressure, replacement, bans, counters.

Most tests connect hosts over in-memory streams with ``autojump_clock`` (timeouts pass in
virtual time); a few use real loopback sockets on port 0. A "raw" peer speaks the protocol by
hand over a websocket, to misbehave in ways a Host never would.
"""

from __future__ import annotations

import socket
from contextlib import AsyncExitStack, suppress
from dataclasses import replace

import pytest
import trio
from structlog.testing import capture_logs
from trio.testing import memory_stream_pair
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
    wrap_server_stream,
)

from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.p2p.handshake import make_auth, make_hello
from iomtnode.p2p.host import DialError, Host, P2PConfig
from iomtnode.p2p.messages import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Auth,
    Hello,
    decode_message,
    encode_message,
)
from iomtnode.p2p.peer import Peer
from iomtnode.p2p.records import decode_record, sign_record
from iomtnode.p2p.slots import MAX_PENDING as MAX_HANDSHAKES
from iomtnode.p2p.tls import TLS_HANDSHAKE_TIMEOUT_S, http_refusal
from iomtnode.p2p.transport import tune_socket
from iomtnode.sync.messages import Status

from .fakepeer import secure, ssl_context

pytestmark = pytest.mark.timeout(30)

CHAIN = "iomt-test"
GENESIS = blake2b256(b"genesis")
HEAD = bytes(32)
A_REMOTE = "10.0.0.1:40000"  # where the dialer appears to come from, in memory tests
B_ADDRESS = "10.0.0.2:7546"  # the address dialed, in memory tests


def key(n: int) -> SigningKey:
    return SigningKey(bytes([n]) * 32)


def record_of(k: SigningKey) -> bytes:
    return sign_record(k, ("10.0.0.1:7546",), 1, 0, CHAIN).raw


class Recorder:
    """A HostHandler that records what the host tells it."""

    def __init__(self, k: SigningKey, *, chain: str = CHAIN, genesis: bytes = GENESIS,
                 version: int = PROTOCOL_VERSION) -> None:
        self.key, self.chain, self.genesis, self.version = k, chain, genesis, version
        self.connected: list[Peer] = []
        self.messages: list[tuple[bytes, object]] = []
        self.disconnected: list[tuple[bytes, str]] = []

    def local_hello(self) -> Hello:
        return replace(make_hello(self.key, self.chain, self.genesis, 0, HEAD),
                       version=self.version)

    def local_record(self) -> bytes:
        return record_of(self.key)

    async def on_connected(self, peer: Peer) -> None:
        self.connected.append(peer)

    async def on_message(self, peer: Peer, msg: object) -> None:
        if isinstance(msg, Status) and msg.height == 666:
            raise RuntimeError("a bug in the handler")
        self.messages.append((peer.node_id, msg))

    def on_disconnected(self, peer: Peer, reason: str) -> None:
        self.disconnected.append((peer.node_id, reason))

    def reasons(self, node_id: bytes) -> list[str]:
        return [reason for n, reason in self.disconnected if n == node_id]


class _ChunkSend(trio.abc.SendStream):
    def __init__(self, channel: trio.MemorySendChannel[bytes]) -> None:
        self._channel = channel

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._channel.send(bytes(data))  # waits while the reader is behind

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self._channel.aclose()


class _ChunkReceive(trio.abc.ReceiveStream):
    def __init__(self, channel: trio.MemoryReceiveChannel[bytes]) -> None:
        self._channel = channel

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._channel.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return b""

    async def aclose(self) -> None:
        await self._channel.aclose()


def tight_stream_pair(chunks: int = 2) -> tuple[trio.StapledStream, trio.StapledStream]:
    """Like memory_stream_pair, but at most ``chunks`` writes in flight each way, so a reader
    that stops pushes back on the writer at once (and a cancelled write is clean)."""
    ab_tx, ab_rx = trio.open_memory_channel[bytes](chunks)
    ba_tx, ba_rx = trio.open_memory_channel[bytes](chunks)
    return (trio.StapledStream(_ChunkSend(ab_tx), _ChunkReceive(ba_rx)),
            trio.StapledStream(_ChunkSend(ba_tx), _ChunkReceive(ab_rx)))


async def start_host(nursery: trio.Nursery, k: SigningKey, recorder: Recorder | None = None,
                     **config: object) -> Host:
    config.setdefault("port", None)  # memory tests need no listener
    host = Host(P2PConfig(**config), k, recorder or Recorder(k))  # type: ignore[arg-type]
    await nursery.start(host.run)
    return host


def rec(host: Host) -> Recorder:
    assert isinstance(host.handler, Recorder)
    return host.handler


async def link(nursery: trio.Nursery, a: Host, b: Host, pair=memory_stream_pair) -> Peer:
    """``a`` dials ``b`` over an in-memory stream; returns a's Peer."""
    sa, sb = pair()
    nursery.start_soon(b.accept_stream, sb, A_REMOTE)
    return await a.connect_stream(sa, B_ADDRESS)


async def eventually(predicate, timeout_s: float = 10.0) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():  # noqa: ASYNC110 (a condition on several objects; virtual time)
            await trio.sleep(0.01)


async def raw_client(nursery: trio.Nursery, host: Host, pair=memory_stream_pair,
                     remote: str = "10.0.0.9:5000") -> tuple[WebSocketConnection, bytes]:
    """A websocket to ``host`` over TLS with the HTTP upgrade done and nothing else; and the
    connection's channel binding."""
    sa, sb = pair()
    nursery.start_soon(host.accept_stream, sb, remote)
    conn = await secure(sa, B_ADDRESS)
    assert conn.binding is not None
    return await wrap_client_stream(nursery, conn.stream, B_ADDRESS, "/p2p/v1"), conn.binding


async def raw_handshake(ws: WebSocketConnection, binding: bytes, k: SigningKey, *,
                        hello: Hello | None = None, auth: Auth | None = None,
                        tamper: bool = False, dialed: bool = True) -> tuple[Hello, Auth]:
    """Our half of the handshake by hand (either role: ``dialed``) on a connection with
    channel ``binding``; returns what we sent."""
    ours = hello or make_hello(k, CHAIN, GENESIS, 0, HEAD)
    await ws.send_message(encode_message(ours))
    theirs = decode_message(await ws.get_message())
    assert isinstance(theirs, Hello)
    if auth is None:
        auth = make_auth(k, CHAIN, ours, theirs, binding, dialed, B_ADDRESS, record_of(k))
    if tamper:
        auth = replace(auth, signature=bytes([auth.signature[0] ^ 1]) + auth.signature[1:])
    await ws.send_message(encode_message(auth))
    return ours, auth


async def closed_with(ws: WebSocketConnection) -> CloseReason:
    """Read until the other side closes; its close code and reason."""
    while True:
        try:
            await ws.get_message()
        except ConnectionClosed as exc:
            assert exc.reason is not None
            return exc.reason


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything ``stream`` receives until the other side closes it."""
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


def events(logs: list[dict], event: str, host: Host) -> list[dict]:
    return [e for e in logs if e["event"] == event and e.get("node") == host.node_id.hex()[:16]]


# ---- handshake -------------------------------------------------------------------------------

async def test_handshake_connects_both_sides(nursery, autojump_clock):
    with trio.fail_after(60):
        a, b = await start_host(nursery, key(1)), await start_host(nursery, key(2))
        pa = await link(nursery, a, b)
        assert (pa.node_id, pa.outbound, pa.remote) == (b.node_id, True, B_ADDRESS)
        assert pa.observed_address == A_REMOTE  # what b sees of a
        await eventually(lambda: b.get(a.node_id) is not None)
        pb = b.get(a.node_id)
        assert (pb.outbound, pb.remote, pb.observed_address) == (False, A_REMOTE, B_ADDRESS)
        assert decode_record(pb.record, CHAIN).node_id == a.node_id
        assert rec(a).connected == [pa] and rec(b).connected == [pb]
        assert a.peers() == [pa] and b.peers() == [pb]
        pa.send(Status(5, HEAD))
        await eventually(lambda: rec(b).messages == [(a.node_id, Status(5, HEAD))])


@pytest.mark.parametrize(("override", "reason"), [
    ({"chain": "another-chain"}, "chain"),
    ({"genesis": blake2b256(b"another genesis")}, "genesis"),
    ({"version": PROTOCOL_VERSION + 1}, "protocol version"),
])
async def test_handshake_refused_on_another_network(nursery, autojump_clock, override, reason):
    with trio.fail_after(60):
        a = await start_host(nursery, key(1), Recorder(key(1), **override))
        b = await start_host(nursery, key(2))
        with capture_logs() as logs, pytest.raises(DialError, match=reason):
            await link(nursery, a, b)
        await eventually(lambda: events(logs, "peer_refused", b))
        assert reason in events(logs, "peer_refused", b)[0]["reason"]  # logged on both sides
        assert events(logs, "peer_refused", a)
        assert a.peers() == [] and b.peers() == [] and rec(b).connected == []


async def test_a_connection_to_oneself_is_refused(nursery, autojump_clock):
    with trio.fail_after(60):
        a = await start_host(nursery, key(1))
        with pytest.raises(DialError, match="itself"):
            await link(nursery, a, a)
        assert a.peers() == []


async def test_a_tampered_auth_is_refused_with_the_reason(nursery, autojump_clock):
    with trio.fail_after(60):
        b = await start_host(nursery, key(2))
        ws, cb = await raw_client(nursery, b)
        await raw_handshake(ws, cb, key(3), tamper=True)
        close = await closed_with(ws)
        assert close.code == 1008 and "does not verify" in close.reason
        assert b.peers() == []


async def test_an_auth_replayed_from_an_earlier_session_is_refused(nursery, autojump_clock):
    with trio.fail_after(60):
        b = await start_host(nursery, key(2))
        ws, cb = await raw_client(nursery, b)
        hello, auth = await raw_handshake(ws, cb, key(3))  # a genuine session: captured
        await eventually(lambda: b.get(key(3).public) is not None)
        await ws.aclose()
        await eventually(lambda: b.get(key(3).public) is None)
        ws, cb = await raw_client(nursery, b)  # the replay: same Hello and Auth, no key
        await raw_handshake(ws, cb, key(3), hello=hello, auth=auth)
        close = await closed_with(ws)
        # the same server: the same binding (its certificate's); the nonce refuses it
        assert close.code == 1008 and "does not verify" in close.reason
        assert b.peers() == []


async def test_a_stalled_handshake_is_dropped_after_the_timeout(nursery, autojump_clock):
    with trio.fail_after(60):
        b = await start_host(nursery, key(2), handshake_timeout_s=5.0)
        ws, _ = await raw_client(nursery, b)  # upgraded, then silent
        start = trio.current_time()
        close = await closed_with(ws)
        assert 5.0 <= trio.current_time() - start < 5.5
        assert close.reason == "handshake timed out"
        for first in (b"", b"\x16\x03\x01"):  # not even TLS; a TLS handshake that stalls
            sa, sb = memory_stream_pair()
            await sa.send_all(first)
            start = trio.current_time()
            with capture_logs() as logs:
                await b.accept_stream(sb, "10.0.0.9:1")
            assert TLS_HANDSHAKE_TIMEOUT_S <= trio.current_time() - start < 3.5
            assert [e["reason"] for e in events(logs, "peer_handshake_failed", b)] == [
                f"TLS handshake timed out ({TLS_HANDSHAKE_TIMEOUT_S} s)"]
            assert await sa.receive_some() == b""  # the stream was closed


async def test_dialing_a_node_without_tls_fails_with_the_reason(nursery, autojump_clock):
    with trio.fail_after(60):
        a = await start_host(nursery, key(1))
        sa, sb = memory_stream_pair()

        async def plain_server() -> None:  # a version 3 node: plain HTTP, no TLS
            await sb.receive_some()  # our ClientHello, taken for a bad request
            await sb.send_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")

        nursery.start_soon(plain_server)
        with pytest.raises(DialError, match=r"HTTP 400: Bad Request .*protocol version 4"):
            await a.connect_stream(sa, B_ADDRESS)


async def test_stalled_tls_handshakes_count_as_handshakes_in_progress(nursery, autojump_clock):
    with trio.fail_after(60):
        a, b = await start_host(nursery, key(1)), await start_host(nursery, key(2))
        stalled = []
        for i in range(MAX_HANDSHAKES + 1):  # TLS begun, then silent (one per /24): each holds
            # a handshake slot
            sa, sb = memory_stream_pair()
            await sa.send_all(b"\x16\x03\x01")
            nursery.start_soon(b.accept_stream, sb, f"10.{i}.0.1:1")
            stalled.append(sa)
        await trio.sleep(1)
        with pytest.raises(DialError, match=f"503: more than {MAX_HANDSHAKES} handshakes"):
            await link(nursery, a, b)
        await trio.sleep(TLS_HANDSHAKE_TIMEOUT_S)  # they timed out and freed their slots
        await link(nursery, a, b)


# ---- liveness and backpressure ---------------------------------------------------------------

async def test_a_peer_that_stops_answering_is_dropped_after_missed_pings(nursery, autojump_clock):
    with trio.fail_after(60):
        a, b = await start_host(nursery, key(1)), await start_host(nursery, key(2))
        await link(nursery, a, b)  # answers pings: stays
        ws, cb = await raw_client(nursery, b)
        await raw_handshake(ws, cb, key(3))  # then never reads again
        await eventually(lambda: b.get(key(3).public) is not None)
        start = trio.current_time()
        await trio.sleep(5.9 - (trio.current_time() - start))
        assert b.get(key(3).public) is not None  # 2 pings unanswered: still there
        await trio.sleep(0.2)
        assert b.get(key(3).public) is None  # 3 intervals of silence: dropped
        await eventually(lambda: rec(b).reasons(key(3).public) == ["ping timeout"])
        await trio.sleep(30)
        assert b.get(a.node_id) is not None and a.get(b.node_id) is not None
        assert b.get(a.node_id).rtt_s is not None  # pongs were recorded
        assert rec(a).disconnected == []


async def test_a_slow_peer_is_dropped_while_a_fast_one_keeps_receiving(nursery, autojump_clock):
    with trio.fail_after(60):
        a, b = await start_host(nursery, key(1)), await start_host(nursery, key(2), send_queue=8)
        await link(nursery, a, b)
        ws, cb = await raw_client(nursery, b, pair=tight_stream_pair)
        await raw_handshake(ws, cb, key(3))  # then never reads again
        await eventually(lambda: len(b.peers()) == 2)
        for height in range(100):
            b.broadcast(Status(height, HEAD))
            await trio.sleep(0.01)
        assert b.get(key(3).public) is None
        await eventually(lambda: rec(b).reasons(key(3).public) == ["send queue full"])
        await eventually(lambda: len(rec(a).messages) == 100)
        assert [m.height for _, m in rec(a).messages] == list(range(100))
        assert b.get(a.node_id) is not None


# ---- one connection per node id --------------------------------------------------------------

@pytest.mark.parametrize(("delay_s", "replaced"), [(0.5, False), (3.0, True)])
async def test_an_opposite_connection_replaces_a_silent_old_one_only(nursery, autojump_clock,
                                                                     delay_s, replaced):
    with trio.fail_after(60):
        lo, hi = sorted([key(1), key(2)], key=lambda k: k.public)
        b = await start_host(nursery, lo)
        # the old connection: b dialed (the lower id: kept while alive) a raw node with hi's key
        sa, sb = memory_stream_pair()
        nursery.start_soon(b.connect_stream, sb, "10.0.0.1:7546")
        conn = await secure(sa, outbound=False)
        ws, cb = await (await wrap_server_stream(nursery, conn.stream)).accept(), conn.binding
        await raw_handshake(ws, cb, hi, dialed=False)  # ... which then goes silent
        await eventually(lambda: b.get(hi.public) is not None)
        old = b.get(hi.public)
        await trio.sleep(delay_s)
        a = await start_host(nursery, hi)  # the same node, dialing b
        if replaced:
            await link(nursery, a, b)
            await eventually(lambda: b.get(hi.public) is not old)
            assert b.get(hi.public).outbound is False and old.closed
            assert rec(b).reasons(hi.public) == ["replaced by a new connection"]
        else:
            with pytest.raises(DialError, match="duplicate connection"):
                await link(nursery, a, b)
            assert b.get(hi.public) is old


async def test_a_new_connection_in_the_same_direction_replaces_the_old(nursery, autojump_clock):
    with trio.fail_after(60):
        a, b = await start_host(nursery, key(1)), await start_host(nursery, key(2))
        old = await link(nursery, a, b)
        new = await link(nursery, a, b)  # e.g. a moved and dialed again
        await eventually(lambda: old.closed and len(rec(b).connected) == 2)
        assert a.peers() == [new] and b.peers() == [rec(b).connected[1]]
        assert rec(b).reasons(a.node_id) == ["replaced by a new connection"]
        await trio.sleep(10)
        assert a.peers() == [new] and len(b.peers()) == 1


@pytest.mark.parametrize("a_key", [1, 2])
async def test_simultaneous_dials_converge_to_one_connection(nursery, autojump_clock, a_key):
    with trio.fail_after(60):
        a = await start_host(nursery, key(a_key))
        b = await start_host(nursery, key(3 - a_key))

        async def dial(x: Host, y: Host) -> None:
            with suppress(DialError):  # the loser of the tie-break
                await link(nursery, x, y)

        async with trio.open_nursery() as both:
            both.start_soon(dial, a, b)
            both.start_soon(dial, b, a)
        await trio.sleep(10)
        assert len(a.peers()) == 1 and len(b.peers()) == 1
        a_is_lower = a.node_id < b.node_id
        assert a.get(b.node_id).outbound is a_is_lower  # the one the lower id dialed
        assert b.get(a.node_id).outbound is not a_is_lower


# ---- bans, refusals, scores ------------------------------------------------------------------

async def test_banned_and_refused_ids_are_refused(nursery, autojump_clock):
    with trio.fail_after(600):
        a, b = await start_host(nursery, key(1)), await start_host(nursery, key(2))
        b.ban(a.node_id, 60, "testing")
        assert b.is_refused(a.node_id)
        with pytest.raises(DialError, match="refused by peer: node banned"):
            await link(nursery, a, b)
        await trio.sleep(61)
        await link(nursery, a, b)  # the ban expired
        b.set_refused({a.node_id})  # a partition: disconnects now ...
        await eventually(lambda: a.get(b.node_id) is None)
        assert rec(b).reasons(a.node_id) == ["refused by this node's operator"]
        assert "refused by this node's operator" in rec(a).reasons(b.node_id)[0]
        with pytest.raises(DialError, match="refused"):  # ... and refuses later
            await link(nursery, a, b)
        b.set_refused(set())
        await link(nursery, a, b)


async def test_inbound_slots_are_enforced_at_the_http_upgrade(nursery, autojump_clock):
    with trio.fail_after(60):
        a, c = await start_host(nursery, key(1)), await start_host(nursery, key(3))
        d = await start_host(nursery, key(4))
        b = await start_host(nursery, key(2), max_peers=2, outbound_slots=1)
        await link(nursery, a, b)  # b's one inbound slot; a alone, it is protected
        with pytest.raises(DialError, match=r"rejected with HTTP 503: inbound slots full "
                                            r"\(1 of 1, max_peers 2\) and no peer to evict"):
            await link(nursery, c, b)
        assert [p.node_id for p in b.peers()] == [a.node_id]
        await link(nursery, b, d)  # the reserved outbound slot is b's to use
        assert {p.node_id for p in b.peers()} == {a.node_id, d.node_id}


async def test_a_dial_for_one_node_answered_by_another_replaces_nothing(nursery,
                                                                        autojump_clock):
    with trio.fail_after(60):
        a, b = await start_host(nursery, key(1)), await start_host(nursery, key(2))
        live = await link(nursery, a, b)
        sa, sb = memory_stream_pair()  # a record of key 3 names b's address: b answers
        nursery.start_soon(b.accept_stream, sb, A_REMOTE)
        with pytest.raises(DialError, match="answered by another node") as failed:
            await a.connect_stream(sa, B_ADDRESS, key(3).public)
        assert failed.value.wrong_node
        assert a.get(b.node_id) is live and not live.closed  # the live link is kept
        assert rec(a).reasons(b.node_id) == [] and rec(b).reasons(a.node_id) == []


async def test_a_full_handshake_queue_makes_room_for_another_netgroup(nursery, autojump_clock):
    with trio.fail_after(60):
        a, b = await start_host(nursery, key(1)), await start_host(nursery, key(2))
        silent = []
        for group in range(8):  # 8 netgroups x 8 silent sockets: the 64 handshakes in all
            for i in range(8):
                sa, sb = memory_stream_pair()
                nursery.start_soon(b.accept_stream, sb, f"10.{group + 1}.0.{i % 2}:{1000 + i}")
                silent.append(sa)
        await eventually(lambda: b.slots.pending_total == 64)
        with capture_logs() as logs:
            peer = await link(nursery, a, b)  # from a netgroup with none in progress
        assert peer.node_id == b.node_id and b.get(a.node_id) is not None
        [evicted] = [e["evicted"] for e in events(logs, "peer_handshake_evicted", b)]
        assert evicted.startswith("10.") and not evicted.startswith("10.0.")  # a silent one
        assert b.slots.pending_total == 63  # one silent socket gave up its place


async def test_garbage_frames_lower_the_score_until_banned(nursery, autojump_clock):
    with trio.fail_after(60):
        b = await start_host(nursery, key(2))
        ws, cb = await raw_client(nursery, b)
        await raw_handshake(ws, cb, key(3))
        await eventually(lambda: b.get(key(3).public) is not None)
        with capture_logs() as logs:
            await ws.send_message(b"\x93\x63\x01\x02")  # msgpack, but no such message kind
            await eventually(lambda: b.scoreboard.score(key(3).public, trio.current_time()) < 0)
            for _ in range(10):
                await ws.send_message(b"\xc1")  # never valid msgpack
            close = await closed_with(ws)
        assert close.code == 1008 and close.reason.startswith("banned: undecodable_frame")
        assert b.scoreboard.is_banned(key(3).public, trio.current_time())
        misbehaved = [e["reason"] for e in events(logs, "peer_misbehaved", b)]
        assert misbehaved == ["invalid_message", "undecodable_frame"]  # once per reason
        [banned] = events(logs, "peer_banned", b)
        assert (banned["address"], banned["address_banned"]) == ("10.0.0.9", True)
        ws, cb = await raw_client(nursery, b, remote="10.0.1.9:5000")  # its key, from elsewhere
        await raw_handshake(ws, cb, key(3))
        assert (await closed_with(ws)).reason == "node banned"
        sa, sb = memory_stream_pair()  # any key from its address: refused before a word
        nursery.start_soon(b.accept_stream, sb, "10.0.0.9:5001")
        assert (await read_all(sa)).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b.scoreboard.is_address_banned("10.0.0.9", trio.current_time())


async def test_a_ban_from_an_ipv6_address_refuses_its_whole_64(nursery, autojump_clock):
    # over IPv6 the next address of the same /64 is free to its owner: it was admitted with a
    # new key right after the ban (reproduced against a real node on fd00::/64)
    with trio.fail_after(60):
        b = await start_host(nursery, key(2))
        ws, cb = await raw_client(nursery, b, remote="[2001:db8::9]:5000")
        await raw_handshake(ws, cb, key(3))
        await eventually(lambda: b.get(key(3).public) is not None)
        for _ in range(11):
            await ws.send_message(b"\xc1")  # never valid msgpack
        assert (await closed_with(ws)).reason.startswith("banned: undecodable_frame")
        sa, sb = memory_stream_pair()  # a new key from the same /64: refused before a word
        nursery.start_soon(b.accept_stream, sb, "[2001:db8::1234:0:0:a]:5001")
        assert (await read_all(sa)).startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        ws, cb = await raw_client(nursery, b, remote="[2001:db8:0:1::9]:5002")  # another /64
        await raw_handshake(ws, cb, key(4))
        await eventually(lambda: b.get(key(4).public) is not None)


async def test_with_address_bans_off_the_ban_log_says_the_address_was_not_banned(
        nursery, autojump_clock):
    # a localnet (address_ban_s = 0) bans the key only: the log must not read as if its
    # address were banned too
    with trio.fail_after(60):
        b = await start_host(nursery, key(2), address_ban_s=0.0)
        ws, cb = await raw_client(nursery, b)
        await raw_handshake(ws, cb, key(3))
        await eventually(lambda: b.get(key(3).public) is not None)
        with capture_logs() as logs:
            await ws.send_message(b"\x93\x63\x01\x02")  # msgpack, but no such message kind
            await eventually(lambda: b.scoreboard.score(key(3).public, trio.current_time()) < 0)
            for _ in range(10):
                await ws.send_message(b"\xc1")  # never valid msgpack
            close = await closed_with(ws)
        assert close.code == 1008 and close.reason.startswith("banned: undecodable_frame")
        [banned] = events(logs, "peer_banned", b)
        assert (banned["address"], banned["address_banned"]) == ("10.0.0.9", False)
        assert not b.scoreboard.is_address_banned("10.0.0.9", trio.current_time())


async def test_a_handler_bug_closes_that_peer_only(nursery, autojump_clock):
    with trio.fail_after(60):
        a, b, c = [await start_host(nursery, key(n)) for n in (1, 2, 3)]
        pa, pc = await link(nursery, a, b), await link(nursery, c, b)
        with capture_logs() as logs:
            pa.send(Status(666, HEAD))  # the recorder raises on this one
            await eventually(lambda: rec(b).reasons(a.node_id) == ["internal error"])
        assert events(logs, "peer_failed", b)
        assert "1011" in rec(a).reasons(b.node_id)[0]
        pc.send(Status(1, HEAD))
        await eventually(lambda: (c.node_id, Status(1, HEAD)) in rec(b).messages)


async def test_counters_count_messages_and_bytes_per_kind(nursery, autojump_clock):
    with trio.fail_after(60):
        a, b = await start_host(nursery, key(1)), await start_host(nursery, key(2))
        pa = await link(nursery, a, b)
        for _ in range(3):
            pa.send(Status(1, HEAD))
        await eventually(lambda: len(rec(b).messages) == 3)
        size = len(encode_message(Status(1, HEAD)))
        received, sent = b.get(a.node_id).counters["Status"], pa.counters["Status"]
        assert (received.messages_in, received.bytes_in) == (3, 3 * size)
        assert (sent.messages_out, sent.bytes_out) == (3, 3 * size)
        assert a.counters()["Status"].messages_out == 3
        assert b.counters()["Status"].bytes_in == 3 * size
        await trio.sleep(2.5)
        assert b.counters()["Ping"].messages_out >= 1 and b.counters()["Pong"].messages_in >= 1
        assert b.counters()["Ping"].messages_in >= 1 and b.counters()["Pong"].messages_out >= 1


async def test_stopping_a_host_tells_its_peers(nursery, autojump_clock):
    with trio.fail_after(60):
        b = await start_host(nursery, key(2))
        async with trio.open_nursery() as inner:
            a = await start_host(inner, key(1))
            await link(nursery, a, b)  # a's side of it runs in a's nursery
            inner.cancel_scope.cancel()
        await eventually(lambda: b.get(a.node_id) is None)
        assert rec(b).reasons(a.node_id) == ["connection closed (1001: node shutting down)"]
        assert rec(a).reasons(b.node_id) == ["node shutting down"]


# ---- real sockets ----------------------------------------------------------------------------

async def start_listening(nursery: trio.Nursery, k: SigningKey, **config: object) -> Host:
    return await start_host(nursery, k, host="127.0.0.1", port=0, **config)


async def test_two_hosts_dial_and_talk_over_loopback(nursery):
    with trio.fail_after(10):
        a, b = await start_listening(nursery, key(1)), await start_listening(nursery, key(2))
        pa = await a.dial(f"127.0.0.1:{b.listen_port}")
        await eventually(lambda: b.get(a.node_id) is not None)
        pb = b.get(a.node_id)
        assert pb.remote.startswith("127.0.0.1:") and pa.observed_address == pb.remote
        pa.send(Status(1, HEAD))
        pb.send(Status(2, HEAD))
        await eventually(lambda: rec(b).messages and rec(a).messages)
        assert rec(b).messages == [(a.node_id, Status(1, HEAD))]
        assert rec(a).messages == [(b.node_id, Status(2, HEAD))]
        with pytest.raises(DialError, match="cannot connect"):
            await a.dial("127.0.0.1:1")


async def test_tcp_sockets_get_keepalive_and_user_timeout():
    with trio.fail_after(10):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        async with listeners[0], await trio.open_tcp_stream(
                "127.0.0.1", listeners[0].socket.getsockname()[1]) as stream:
            tune_socket(stream, 7000)
            assert stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            if hasattr(socket, "TCP_USER_TIMEOUT"):
                assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 7000


async def test_an_oversized_frame_closes_with_1009_and_others_carry_on(nursery):
    with trio.fail_after(10):
        b, c = await start_listening(nursery, key(2)), await start_listening(nursery, key(3))
        pc = await c.dial(f"127.0.0.1:{b.listen_port}")
        async with open_websocket_url(f"wss://127.0.0.1:{b.listen_port}/p2p/v1",
                                      ssl_context=ssl_context()) as ws:
            await ws.send_message(b"\x00" * (MAX_MESSAGE_BYTES + 1))
            close = await closed_with(ws)
        assert close.code == 1009
        pc.send(Status(7, HEAD))
        await eventually(lambda: (c.node_id, Status(7, HEAD)) in rec(b).messages)
        assert b.get(c.node_id) is not None


async def test_a_flood_from_one_ip_is_refused_while_a_peer_keeps_working(nursery):
    with trio.fail_after(10):
        a = await start_listening(nursery, key(1))
        b = await start_listening(nursery, key(2), max_inbound_per_ip=3)
        d = await start_listening(nursery, key(4))
        address = f"127.0.0.1:{b.listen_port}"
        pa = await a.dial(address)  # 1 inbound from 127.0.0.1
        async with AsyncExitStack() as stack:
            for _ in range(2):  # 3 inbound: the limit (these stall in the handshake)
                await stack.enter_async_context(open_websocket_url(f"wss://{address}/p2p/v1",
                                                                  ssl_context=ssl_context()))
            for _ in range(5):  # beyond: HTTP 503
                with pytest.raises(ConnectionRejected) as rejected:
                    async with open_websocket_url(f"wss://{address}/p2p/v1",
                                                                  ssl_context=ssl_context()):
                        pass
                assert rejected.value.status_code == 503
            with pytest.raises(DialError, match="rejected with HTTP 503: more than 3"):
                await d.dial(address)
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(f"wss://{address}/elsewhere",
                                              ssl_context=ssl_context()):
                    pass
            assert rejected.value.status_code == 404
            raw = [await trio.open_tcp_stream("127.0.0.1", b.listen_port) for _ in range(6)]
            # 2 + 2 silent sockets are 4 handshakes in progress (MAX_PENDING_PER_IP); beyond,
            # sockets are closed unread
            answer = await read_all(raw[-1])
            assert answer.startswith(b"HTTP/1.1 503") and b"handshakes in progress" in answer
            pa.send(Status(1, HEAD))
            b.get(a.node_id).send(Status(2, HEAD))
            await eventually(lambda: rec(a).messages and rec(b).messages)
            for stream in raw:
                await stream.aclose()


async def test_rebind_moves_the_listener(nursery):
    with trio.fail_after(10):
        a, b = await start_listening(nursery, key(1)), await start_listening(nursery, key(2))
        old_port = b.listen_port
        await a.dial(f"127.0.0.1:{old_port}")
        new_port = await b.rebind("127.0.0.1", 0)
        assert new_port == b.listen_port != old_port
        await eventually(lambda: rec(a).reasons(b.node_id))
        assert "moved" in rec(a).reasons(b.node_id)[0]
        assert rec(b).reasons(a.node_id) == ["moved"]
        with pytest.raises(DialError, match="cannot connect"):
            await a.dial(f"127.0.0.1:{old_port}")
        await a.dial(f"127.0.0.1:{new_port}")
        await eventually(lambda: b.get(a.node_id) is not None)


def test_a_refusal_in_clear_before_tls_is_read_as_its_reason():
    assert http_refusal(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\nno room\n"
                        ) == "rejected with HTTP 503: no room"
    assert http_refusal(b"\x15\x03\x03\x00\x02\x02\x46") is None  # a TLS alert
    assert http_refusal(b"HTTP/1.1 abc") is None
