"""Bad input over a raw websocket to /p2p/v1 of a live node (on the in-memory network, under a
virtual clock): each is refused with a logged reason while the node keeps advancing and keeps
its honest peer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import structlog
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, wrap_client_stream

from iomtnode.core.crypto import SigningKey
from iomtnode.p2p.handshake import make_auth, make_hello
from iomtnode.p2p.messages import MAX_MESSAGE_BYTES, Auth, Hello, decode_message, encode_message
from iomtnode.p2p.transport import split_address

from .harness import Net, start_net
from .memnet import BoundStream

pytestmark = pytest.mark.timeout(90)


async def healthy(net, since_height: int) -> None:
    """The node advanced past ``since_height`` and still has its honest peer."""
    node = net.node(0)
    await net.wait(lambda: node.chain.height > since_height + 1, "height advancing")
    assert node.p2p.host.get(net.keys[1].public) is not None, "honest peer dropped"


def events(logs: list[dict], name: str) -> list[dict]:
    return [e for e in logs if e["event"] == name]


async def closed_reason(ws) -> str:
    with trio.fail_after(10):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            return exc.reason.reason or ""


@pytest.fixture
async def net(tmp_path, nursery):  # each test takes autojump_clock: pytest-trio needs it there
    return await start_net(Net(tmp_path, 2), nursery)


@contextlib.asynccontextmanager
async def raw_connection(net: Net, max_message_size: int = 2**20
                         ) -> AsyncIterator[tuple[WebSocketConnection, bytes]]:
    """A websocket to node 0's /p2p/v1, from outside the network's nodes, with no handshake;
    and the connection's channel binding."""
    host, port = split_address(net.p2p(0))
    async with trio.open_nursery() as nursery:
        stream = await net.network.connect("10.0.9.9", host, port)
        assert isinstance(stream, BoundStream)
        ws = await wrap_client_stream(nursery, stream, host, "/p2p/v1",
                                      max_message_size=max_message_size)
        try:
            yield ws, stream.binding
        finally:
            await ws.aclose()
            nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def raw_websocket(net: Net, max_message_size: int = 2**20
                        ) -> AsyncIterator[WebSocketConnection]:
    async with raw_connection(net, max_message_size) as (ws, _):
        yield ws


async def test_garbage_and_oversized_frames(net, autojump_clock):
    node = net.node(0)
    with structlog.testing.capture_logs() as logs:
        h0 = node.chain.height
        async with raw_websocket(net, max_message_size=2**24) as ws:
            await ws.send_message(b"\xc1\xc1 not msgpack")
            reason = await closed_reason(ws)
        assert reason  # the node said why it hung up
        async with raw_websocket(net) as ws:
            await ws.send_message(b"\x00" * (MAX_MESSAGE_BYTES + 1))
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as info:
                while True:
                    await ws.get_message()
            assert info.value.reason.code == 1009
        await healthy(net, h0)
    assert events(logs, "peer_handshake_failed") or events(logs, "peer_refused")


async def test_handshake_for_another_chain_is_refused_with_the_reason(net, autojump_clock):
    node = net.node(0)
    stranger = SigningKey.generate()
    with structlog.testing.capture_logs() as logs:
        h0 = node.chain.height
        async with raw_websocket(net) as ws:
            ours = make_hello(stranger, "other-chain", node.genesis.hash, 0, bytes(32))
            await ws.send_message(encode_message(ours))
            reason = await closed_reason(ws)
        assert "chain" in reason
        await healthy(net, h0)
    refused = events(logs, "peer_refused")
    assert refused and "other-chain" in refused[0]["reason"]


async def test_stalled_handshake_is_dropped(net, autojump_clock):
    node = net.node(0)
    with structlog.testing.capture_logs() as logs:
        h0 = node.chain.height
        async with raw_websocket(net) as ws:
            reason = await closed_reason(ws)  # we send nothing at all
        assert "timed out" in reason
        await healthy(net, h0)
    assert any("timed out" in e["reason"] for e in events(logs, "peer_handshake_failed"))


@pytest.mark.parametrize(("rebind", "refusal"), [
    (False, "signed for another connection"),  # replayed as it was
    (True, "does not verify on this connection"),  # its binding field set to this connection's
])
async def test_replayed_handshake_signature_is_refused(net, autojump_clock, rebind, refusal):
    node = net.node(0)
    attacker = SigningKey.generate()
    # Session 1: a real handshake; keep our Auth as an eavesdropper would.
    async with raw_connection(net) as (ws, binding):
        ours = make_hello(attacker, node.genesis.chain_id, node.genesis.hash, 0, bytes(32))
        await ws.send_message(encode_message(ours))
        theirs = decode_message(await ws.get_message())
        assert isinstance(theirs, Hello)
        captured = make_auth(attacker, node.genesis.chain_id, ours, theirs,
                             binding, True, "127.0.0.1:1", b"")
    with structlog.testing.capture_logs() as logs:
        h0 = node.chain.height
        # Session 2: same identity and nonce, the captured Auth replayed (no key needed).
        async with raw_connection(net) as (ws, binding):
            await ws.send_message(encode_message(ours))
            decode_message(await ws.get_message())  # a fresh nonce from the node
            binding = binding if rebind else captured.binding
            await ws.send_message(encode_message(
                Auth(captured.signature, binding, True, "127.0.0.1:1", b"")))
            reason = await closed_reason(ws)
        assert refusal in reason
        await healthy(net, h0)
    assert any(refusal in e["reason"] for e in events(logs, "peer_refused"))
    assert node.p2p.host.scoreboard.score(attacker.public, trio.current_time()) == 0


async def test_a_flood_of_connections_is_refused_but_peers_stay(net, autojump_clock):
    node = net.node(0)
    limit = node.p2p.host.config.max_inbound_per_ip
    refused = 0
    h0 = node.chain.height
    with structlog.testing.capture_logs() as logs:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(limit + 10):
                try:
                    await stack.enter_async_context(raw_websocket(net))
                except* (HandshakeError, OSError, ConnectionClosed):
                    refused += 1
            await healthy(net, h0)
    assert refused >= 9
    assert any(e.get("status") == 503 for e in events(logs, "peer_handshake_rejected"))
