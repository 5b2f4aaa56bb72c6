"""Bad frames before the handshake is done cost the address they came from.

Until its ``Auth`` verifies, a connection names no node, so a frame that is not the message
expected in place of ``Hello`` or ``Auth`` (or one the websocket layer refuses) costs its IP
the points the same frame costs a peer (``docs/p2p.md``); the address is banned on the
attempt that takes its score below -100, and not one sooner, and its next sockets get 503
unread. Honest mismatches cost nobody. TLS on in-memory streams under a virtual clock.
"""

from __future__ import annotations

import pytest
import trio
from structlog.testing import capture_logs
from trio.testing import memory_stream_pair
from trio_websocket import WebSocketConnection, wrap_client_stream

from iomtnode.p2p import score
from iomtnode.p2p.handshake import make_hello
from iomtnode.p2p.host import Host
from iomtnode.p2p.messages import MAX_MESSAGE_BYTES, Auth, encode_message
from iomtnode.sync.messages import Status

from .fakepeer import secure
from .test_bad_frames import BAD_FRAMES, OFFENDER, frames_to_ban, ws_frame
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
    read_all,
    rec,
    start_host,
)

pytestmark = pytest.mark.timeout(60)

STRANGER = "10.0.5.9"  # where the connections that misbehave before their handshake come from


async def upgraded(nursery: trio.Nursery, b: Host, remote: str
                   ) -> tuple[WebSocketConnection, trio.abc.Stream, bytes]:
    """A websocket to ``b`` over TLS on a memory stream, upgraded, nothing sent yet."""
    sa, sb = memory_stream_pair()
    nursery.start_soon(b.accept_stream, sb, remote)
    conn = await secure(sa, B_ADDRESS)
    assert conn.binding is not None
    ws = await wrap_client_stream(nursery, conn.stream, B_ADDRESS, "/p2p/v1")
    return ws, conn.stream, conn.binding


async def refused_unread(nursery: trio.Nursery, b: Host, remote: str) -> bytes:
    """What ``b`` answers a socket from ``remote`` before reading anything from it."""
    sa, sb = memory_stream_pair()
    nursery.start_soon(b.accept_stream, sb, remote)
    return await read_all(sa)


async def honest_newcomer_connects(nursery: trio.Nursery, b: Host, height: int) -> None:
    c = await start_host(nursery, key(4))
    peer = await link(nursery, c, b)
    peer.send(Status(height, HEAD))
    await eventually(lambda: (c.node_id, Status(height, HEAD)) in rec(b).messages)


# (name, what the stranger sends first, points): in place of Hello
HANDSHAKE_FRAMES = [(name, frame, points) for name, frame, _, points in BAD_FRAMES
                    if not name.endswith("after the handshake")] + [
    ("Auth in place of Hello", encode_message(Auth(bytes(64), bytes(32), True, B_ADDRESS, b"")),
     score.INVALID_MESSAGE),
]


@pytest.mark.parametrize(("frame", "points"), [case[1:] for case in HANDSHAKE_FRAMES],
                         ids=[case[0] for case in HANDSHAKE_FRAMES])
async def test_a_bad_frame_in_place_of_hello_costs_the_address_until_it_is_banned(
        nursery, autojump_clock, frame, points):
    with trio.fail_after(60):
        b = await start_host(nursery, key(2))
        needed = frames_to_ban(points)
        with capture_logs() as logs:
            for attempt in range(1, needed + 1):
                ws, _, _ = await upgraded(nursery, b, f"{STRANGER}:{5000 + attempt}")
                await ws.send_message(frame)
                close = await closed_with(ws)
                assert close.code == 1008 and close.reason.startswith("bad handshake message: ")
                banned = b.scoreboard.is_address_banned(STRANGER, trio.current_time())
                assert banned == (attempt == needed), f"banned={banned} after {attempt}"
        [banned_event] = events(logs, "address_banned", b)
        assert banned_event["address"] == STRANGER and banned_event["seconds"] == score.BAN_S
        answer = await refused_unread(nursery, b, f"{STRANGER}:6000")  # any key, any frame
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"address banned" in answer
        assert b.scoreboard.bans(trio.current_time()) == {}  # no node id was named, none pays
        await honest_newcomer_connects(nursery, b, 12)


async def test_a_bad_frame_in_place_of_auth_costs_the_address(nursery, autojump_clock):
    with trio.fail_after(60):
        b = await start_host(nursery, key(2))
        for attempt in range(1, frames_to_ban(score.UNDECODABLE_FRAME) + 1):
            ws, _, _ = await upgraded(nursery, b, f"{STRANGER}:{5000 + attempt}")
            await ws.send_message(encode_message(make_hello(OFFENDER, CHAIN, GENESIS, 0, HEAD)))
            await ws.get_message()  # b's Hello
            await ws.send_message(b"\xc1")
            assert (await closed_with(ws)).reason.startswith("bad handshake message: undecodable")
        assert b.scoreboard.is_address_banned(STRANGER, trio.current_time())
        assert not b.scoreboard.is_banned(OFFENDER.public, trio.current_time())  # a claim only
        await honest_newcomer_connects(nursery, b, 13)


@pytest.mark.parametrize("raw", [ws_frame(0x81, b"\xff\xfe"), ws_frame(0xF2, b"\x00"),
                                 "oversized"], ids=["not UTF-8", "reserved bits", "oversized"])
async def test_a_frame_the_websocket_refuses_in_the_handshake_costs_the_address(
        nursery, autojump_clock, raw):
    with trio.fail_after(60):
        b = await start_host(nursery, key(2))
        for attempt in range(1, frames_to_ban(score.INVALID_MESSAGE) + 1):
            assert not b.scoreboard.is_address_banned(STRANGER, trio.current_time())
            ws, stream, _ = await upgraded(nursery, b, f"{STRANGER}:{5000 + attempt}")
            if raw == "oversized":
                await ws.send_message(b"\x00" * (MAX_MESSAGE_BYTES + 1))
            else:
                await stream.send_all(raw)
            await closed_with(ws)
            await eventually(lambda: b.slots.pending_total == 0)  # b is done with it
        assert b.scoreboard.is_address_banned(STRANGER, trio.current_time())
        await honest_newcomer_connects(nursery, b, 14)


async def test_with_address_bans_off_bad_handshakes_are_refused_and_nothing_is_banned(
        nursery, autojump_clock):
    with trio.fail_after(60):
        b = await start_host(nursery, key(2), address_ban_s=0.0)
        for attempt in range(1, 2 * frames_to_ban(score.UNDECODABLE_FRAME)):
            ws, _, _ = await upgraded(nursery, b, f"{STRANGER}:{5000 + attempt}")
            await ws.send_message(b"\xc1")
            assert (await closed_with(ws)).code == 1008
            await trio.sleep(1.0)  # within the address's connection rate
        assert b.scoreboard.address_bans(trio.current_time()) == {}
        await honest_newcomer_connects(nursery, b, 15)


async def test_honest_mismatches_in_the_handshake_cost_nobody(nursery, autojump_clock):
    # a node of another chain or genesis, or one whose Auth does not verify (a relay's), is
    # refused with its reason, however often: none of it is a frame no node would send
    with trio.fail_after(120):
        b = await start_host(nursery, key(2))
        for attempt in range(1, 3 * frames_to_ban(score.INVALID_MESSAGE)):
            ws, _, binding = await upgraded(nursery, b, f"{STRANGER}:{5000 + attempt}")
            if attempt % 3 == 0:
                await raw_handshake(ws, binding, OFFENDER, tamper=True)
            else:
                other = "another-chain" if attempt % 3 == 1 else CHAIN
                genesis = GENESIS if attempt % 3 == 1 else bytes(32)
                await ws.send_message(encode_message(make_hello(OFFENDER, other, genesis, 0,
                                                                HEAD)))
            assert (await closed_with(ws)).code == 1008
            await trio.sleep(1.0)  # within the address's connection rate
        now = trio.current_time()
        assert b.scoreboard.address_score(STRANGER, now) == 0.0
        assert not b.scoreboard.is_address_banned(STRANGER, now)
        assert not b.scoreboard.is_banned(OFFENDER.public, now)
