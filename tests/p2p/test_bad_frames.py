"""Every frame that is not a valid message costs its sender, until it is banned.

After the handshake a peer that sends bad frames is penalised for each (``docs/p2p.md``:
undecodable frame 10 points, invalid message 20, banned below -100), disconnected and banned
by node id (``peer_banned``) on the frame that takes its score below -100, and not one frame
sooner; the node keeps serving an honest peer throughout. A frame the websocket layer refuses
(over 4 MiB, or broken framing) ends the connection, and costs the node id across
reconnections the same way. Most tests run over TLS on in-memory streams under a virtual clock;
the last ones over real loopback sockets.
"""

from __future__ import annotations

import math
import os

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from trio.testing import MockClock, memory_stream_pair
from trio_websocket import WebSocketConnection, wrap_client_stream

from iomtnode.core.crypto import SigningKey
from iomtnode.p2p import faults, score
from iomtnode.p2p.faults import Fault
from iomtnode.p2p.handshake import make_hello
from iomtnode.p2p.host import Host
from iomtnode.p2p.messages import MAX_MESSAGE_BYTES, encode_message
from iomtnode.p2p.peer import Peer
from iomtnode.sync.messages import Status

from .fakepeer import open_p2p, secure
from .test_transport import (
    B_ADDRESS,
    CHAIN,
    GENESIS,
    HEAD,
    closed_with,
    events,
    eventually,
    key,
    link,
    raw_handshake,
    rec,
    start_host,
)

pytestmark = pytest.mark.timeout(60)

OFFENDER = key(3)
_ARRAY_OF = bytes([0x91])  # a msgpack array of one item

# (name, frame, penalty kind, points): one of each way a frame can fail to be a message
BAD_FRAMES = [
    ("not msgpack (0xc1)", b"\xc1", "undecodable_frame", score.UNDECODABLE_FRAME),
    ("empty", b"", "undecodable_frame", score.UNDECODABLE_FRAME),
    ("truncated array", b"\x92\x03", "undecodable_frame", score.UNDECODABLE_FRAME),
    ("bytes after the value", b"\x92\x03\x05\x00", "undecodable_frame", score.UNDECODABLE_FRAME),
    ("a map", b"\x81\x01\x02", "undecodable_frame", score.UNDECODABLE_FRAME),
    ("a float", b"\x92\x03\xcb" + bytes(8), "undecodable_frame", score.UNDECODABLE_FRAME),
    ("an extension type", b"\x92\x03\xd4\x01\x00", "undecodable_frame", score.UNDECODABLE_FRAME),
    ("nested too deep", _ARRAY_OF * 20 + b"\x00", "undecodable_frame", score.UNDECODABLE_FRAME),
    ("a string over its limit", b"\x92\x03\xdb" + (70_000).to_bytes(4, "big") + b"a" * 70_000,
     "undecodable_frame", score.UNDECODABLE_FRAME),
    ("a text frame", "hello", "undecodable_frame", score.UNDECODABLE_FRAME),
    ("unknown kind", b"\x93\x63\x01\x02", "invalid_message", score.INVALID_MESSAGE),
    ("kind not an int", b"\x92\xa1x\x01", "invalid_message", score.INVALID_MESSAGE),
    ("no kind", b"\x90", "invalid_message", score.INVALID_MESSAGE),
    ("not an array", b"\x05", "invalid_message", score.INVALID_MESSAGE),
    ("a field missing", b"\x91\x03", "invalid_message", score.INVALID_MESSAGE),  # Ping()
    ("a field too many", b"\x93\x03\x01\x02", "invalid_message", score.INVALID_MESSAGE),
    ("a field of the wrong type", b"\x92\x03\xa1x", "invalid_message", score.INVALID_MESSAGE),
    ("a u64 below zero", b"\x92\x03\xff", "invalid_message", score.INVALID_MESSAGE),
    ("Hello after the handshake", encode_message(make_hello(OFFENDER, CHAIN, GENESIS, 0, HEAD)),
     "invalid_message", score.INVALID_MESSAGE),
]


def received(peer: Peer) -> int:
    """Frames the node has read from ``peer`` since its handshake."""
    return sum(traffic.messages_in for traffic in peer.counters.snapshot().values())


def frames_to_ban(points: int) -> int:
    """How many penalties of ``points`` take a score of 0 below the ban threshold."""
    return math.floor(-score.BAN_THRESHOLD / points) + 1


async def offender(nursery: trio.Nursery, b: Host, remote: str = "10.0.0.9:5000"
                   ) -> tuple[WebSocketConnection, trio.abc.Stream]:
    """OFFENDER connected to ``b`` over TLS on a memory stream, handshake done; its websocket and
    the TLS stream under it (to write raw websocket frames)."""
    sa, sb = memory_stream_pair()
    nursery.start_soon(b.accept_stream, sb, remote)
    conn = await secure(sa, B_ADDRESS)
    assert conn.binding is not None
    ws = await wrap_client_stream(nursery, conn.stream, B_ADDRESS, "/p2p/v1")
    await raw_handshake(ws, conn.binding, OFFENDER)
    await eventually(lambda: b.get(OFFENDER.public) is not None)
    return ws, conn.stream


async def honest_peer_still_served(a: Host, b: Host, height: int) -> None:
    """``a`` (connected to ``b``) still gets a message through to ``b``."""
    peer = a.get(b.node_id)
    assert peer is not None and b.get(a.node_id) is not None
    peer.send(Status(height, HEAD))
    await eventually(lambda: (a.node_id, Status(height, HEAD)) in rec(b).messages)


@pytest.mark.parametrize(("frame", "reason", "points"), [case[1:] for case in BAD_FRAMES],
                         ids=[case[0] for case in BAD_FRAMES])
async def test_each_bad_frame_costs_its_sender_until_it_is_banned(
        nursery, autojump_clock, frame, reason, points):
    with trio.fail_after(60):
        a, b = await start_host(nursery, key(1)), await start_host(nursery, key(2))
        await link(nursery, a, b)
        ws, _ = await offender(nursery, b)
        peer = b.get(OFFENDER.public)
        assert peer is not None
        needed = frames_to_ban(points)
        with capture_logs() as logs:
            for sent in range(1, needed + 1):
                await ws.send_message(frame)
                await eventually(lambda n=sent: received(peer) == n)
                banned = b.scoreboard.is_banned(OFFENDER.public, trio.current_time())
                assert banned == (sent == needed), f"banned={banned} after {sent} frames"
            close = await closed_with(ws)
        assert close.code == 1008 and close.reason.startswith(f"banned: {reason}")
        assert b.get(OFFENDER.public) is None
        [misbehaved] = events(logs, "peer_misbehaved", b)  # logged once, not per frame
        assert misbehaved["reason"] == reason
        [banned_event] = events(logs, "peer_banned", b)
        assert banned_event["peer"] == OFFENDER.public.hex()[:16]
        assert banned_event["reason"].startswith(reason)
        await honest_peer_still_served(a, b, 7)


async def banned_offender_is_refused(nursery: trio.Nursery, b: Host) -> None:
    """OFFENDER, banned, comes back from a fresh address: refused in its handshake."""
    sa, sb = memory_stream_pair()
    nursery.start_soon(b.accept_stream, sb, "10.9.9.9:5000")
    conn = await secure(sa, B_ADDRESS)
    assert conn.binding is not None
    ws = await wrap_client_stream(nursery, conn.stream, B_ADDRESS, "/p2p/v1")
    hello = make_hello(OFFENDER, CHAIN, GENESIS, 0, HEAD)
    await ws.send_message(encode_message(hello))
    close = await closed_with(ws)
    assert (close.code, close.reason) == (1008, "node banned")


def ws_frame(first_byte: int, payload: bytes, *, masked: bool = True) -> bytes:
    """One raw websocket frame from a client (short payload), masked as RFC 6455 requires."""
    if not masked:
        return bytes([first_byte, len(payload)]) + payload
    mask = os.urandom(4)
    return (bytes([first_byte, 0x80 | len(payload)]) + mask
            + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))


# (name, raw websocket frame, close code): frames wsproto refuses, which end the connection
BROKEN_FRAMES = [
    ("text that is not UTF-8", ws_frame(0x81, b"\xff\xfe"), 1007),
    ("reserved bits set", ws_frame(0xF2, b"\x00"), 1002),
    ("an unknown opcode", ws_frame(0x83, b"\x00"), 1002),
    ("an unmasked client frame", ws_frame(0x82, b"\x00", masked=False), 1002),
    ("a continuation with nothing to continue", ws_frame(0x80, b"\x00"), 1002),
    ("a fragmented ping", ws_frame(0x09, b"\x00"), 1002),
]


@pytest.mark.parametrize(("raw", "code"), [case[1:] for case in BROKEN_FRAMES],
                         ids=[case[0] for case in BROKEN_FRAMES])
async def test_broken_framing_ends_the_connection_and_costs_the_node_id(
        nursery, autojump_clock, raw, code):
    with trio.fail_after(60):
        a, b = await start_host(nursery, key(1)), await start_host(nursery, key(2))
        await link(nursery, a, b)
        needed = frames_to_ban(score.INVALID_MESSAGE)
        with capture_logs() as logs:
            for attempt in range(1, needed + 1):  # each connection ends on its first frame
                ws, stream = await offender(nursery, b, f"10.0.{attempt}.9:5000")
                await stream.send_all(raw)
                await closed_with(ws)  # (the node drops the stream: this end reads 1006)
                await eventually(lambda: b.get(OFFENDER.public) is None)
                banned = b.scoreboard.is_banned(OFFENDER.public, trio.current_time())
                assert banned == (attempt == needed), f"banned={banned} after {attempt}"
        reasons = [e["reason"] for e in events(logs, "peer_penalized", b)]
        assert reasons and reasons[0].startswith(f"broken_frame: websocket framing broken "
                                                 f"(closed with {code}")
        [banned_event] = events(logs, "peer_banned", b)
        assert banned_event["peer"] == OFFENDER.public.hex()[:16]
        await banned_offender_is_refused(nursery, b)
        await honest_peer_still_served(a, b, 8)


async def test_oversized_frames_end_the_connection_and_cost_the_node_id(
        nursery, autojump_clock):
    with trio.fail_after(60):
        a, b = await start_host(nursery, key(1)), await start_host(nursery, key(2))
        await link(nursery, a, b)
        needed = frames_to_ban(score.INVALID_MESSAGE)
        with capture_logs() as logs:
            for attempt in range(1, needed + 1):
                ws, _ = await offender(nursery, b, f"10.0.{attempt}.9:5000")
                await ws.send_message(b"\x00" * (MAX_MESSAGE_BYTES + 1))
                close = await closed_with(ws)
                assert close.code == 1009
                await eventually(lambda: b.get(OFFENDER.public) is None)
                banned = b.scoreboard.is_banned(OFFENDER.public, trio.current_time())
                assert banned == (attempt == needed), f"banned={banned} after {attempt}"
        [misbehaved] = events(logs, "peer_misbehaved", b)[:1]
        assert misbehaved["reason"] == "oversized_frame"
        [banned_event] = events(logs, "peer_banned", b)
        assert banned_event["reason"].startswith("oversized_frame")
        await banned_offender_is_refused(nursery, b)
        await honest_peer_still_served(a, b, 9)


# ---- the rule, over random frames ------------------------------------------------------------

bad_frame = st.one_of(st.binary(max_size=48), st.text(max_size=8)).map(
    lambda frame: (frame, faults.read_frame(frame))).filter(lambda read: type(read[1]) is Fault)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.lists(bad_frame, min_size=1, max_size=12))
def test_random_bad_frames_ban_exactly_when_their_points_pass_the_threshold(frames):
    expected = sum(fault.points for _, fault in frames)

    async def scenario() -> None:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                b = await start_host(nursery, key(2))
                ws, _ = await offender(nursery, b)
                peer = b.get(OFFENDER.public)
                assert peer is not None
                for sent, (frame, _) in enumerate(frames, 1):
                    await ws.send_message(frame)
                    await eventually(lambda n=sent: received(peer) == n)
                    if peer.closed:
                        break
                now = trio.current_time()
                spent = sum(fault.points for _, fault in frames[:sent])
                assert b.scoreboard.is_banned(OFFENDER.public, now) == (spent > 100)
                assert peer.closed == (expected > 100)  # banned on the frame that passed 100
                if expected > 100:
                    assert spent - frames[sent - 1][1].points <= 100 < spent
                nursery.cancel_scope.cancel()

    trio.run(scenario, clock=MockClock(autojump_threshold=0))


def test_every_frame_is_a_message_or_a_fault():
    # the one decision point returns; it never raises, whatever arrives
    for frame in (b"", b"\xc1", "text", b"\x91\x03", b"\x92\x03\x01"):
        read = faults.read_frame(frame)
        assert type(read) is Fault or type(read).__name__ == "Ping"


def test_only_the_websocket_layers_own_closes_are_charged():
    from trio_websocket import CloseReason
    assert faults.of_close(CloseReason(1009, faults.OVERSIZED_CLOSE_REASON)) is not None
    assert faults.of_close(CloseReason(1009, "Exceeded maximum message size: 8 bytes")) is None
    assert faults.of_close(CloseReason(1002, "Invalid opcode")) is not None
    assert faults.of_close(CloseReason(1007, "Invalid UTF-8")) is not None
    for code, reason in ((1000, None), (1001, "node shutting down"), (1008, "banned: x"),
                         (1011, "internal error"), (1006, None)):
        assert faults.of_close(CloseReason(code, reason)) is None
    assert faults.of_close(None) is None


# ---- real sockets ----------------------------------------------------------------------------

async def real_offender(nursery: trio.Nursery, b: Host) -> WebSocketConnection:
    ws, binding = await open_p2p(nursery, "127.0.0.1", b.listen_port or 0)
    await raw_handshake(ws, binding, OFFENDER)
    await eventually(lambda: b.get(OFFENDER.public) is not None)
    return ws


async def start_listening(nursery: trio.Nursery, k: SigningKey, **config: object) -> Host:
    # address bans off: every connection here comes from 127.0.0.1, the honest one's too
    return await start_host(nursery, k, host="127.0.0.1", port=0, address_ban_s=0.0, **config)


async def test_over_real_sockets_garbage_frames_ban_the_sender(nursery):
    with trio.fail_after(20):
        a, b = await start_listening(nursery, key(1)), await start_listening(nursery, key(2))
        await a.dial(f"127.0.0.1:{b.listen_port}")
        ws = await real_offender(nursery, b)
        with capture_logs() as logs:
            for _ in range(frames_to_ban(score.UNDECODABLE_FRAME)):
                await ws.send_message(b"\xc1")
            close = await closed_with(ws)
        assert close.code == 1008 and close.reason.startswith("banned: undecodable_frame")
        assert events(logs, "peer_banned", b)
        await honest_peer_still_served(a, b, 10)


async def test_over_real_sockets_oversized_frames_ban_the_sender(nursery):
    with trio.fail_after(30):
        a, b = await start_listening(nursery, key(1)), await start_listening(nursery, key(2))
        await a.dial(f"127.0.0.1:{b.listen_port}")
        with capture_logs() as logs:
            for _ in range(frames_to_ban(score.INVALID_MESSAGE)):
                ws = await real_offender(nursery, b)
                await ws.send_message(b"\x00" * (MAX_MESSAGE_BYTES + 1))
                assert (await closed_with(ws)).code == 1009
                await eventually(lambda: b.get(OFFENDER.public) is None)
        assert b.scoreboard.is_banned(OFFENDER.public, trio.current_time())
        [banned_event] = events(logs, "peer_banned", b)
        assert banned_event["reason"].startswith("oversized_frame")
        await honest_peer_still_served(a, b, 11)
