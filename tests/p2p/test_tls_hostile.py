"""Hostile TLS clients against a node's accept path: whatever a client does before, in or
right after the TLS handshake, the connection ends with a logged reason, nothing escapes to
the host's nursery, and every handshake slot and connection count is given back."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
from structlog.testing import capture_logs
from trio.testing import memory_stream_pair
from trio_websocket import wrap_client_stream

from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.p2p.handshake import make_hello
from iomtnode.p2p.host import Host
from iomtnode.p2p.hostconfig import DialError
from iomtnode.p2p.messages import encode_message
from iomtnode.p2p.tls import client_context, make_certificate, server_context
from iomtnode.p2p.upgrade import CLOSED_BEFORE_REQUEST, MALFORMED_REQUEST

from .fakepeer import secure
from .test_transport import start_host

pytestmark = pytest.mark.timeout(60)

REMOTE = "10.0.0.9:5000"


def _tls12_client() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


async def _garbage_record(stream: trio.abc.Stream) -> None:
    await stream.send_all(b"\x16\x03\x01\x00\x05hello" + bytes(200))


async def _hello_then_close(stream: trio.abc.Stream) -> None:
    await stream.send_all(b"\x16\x03\x01")
    await stream.aclose()


async def _tls12(stream: trio.abc.Stream) -> None:
    tls = trio.SSLStream(stream, _tls12_client())
    with pytest.raises(trio.BrokenResourceError):
        await tls.do_handshake()


async def _tls_then_close(stream: trio.abc.Stream) -> None:
    conn = await secure(stream)
    await trio.aclose_forcefully(conn.stream)


async def _tls_then_bad_http(stream: trio.abc.Stream) -> None:
    conn = await secure(stream)
    await conn.stream.send_all(b"GET /p2p/v1 HTTP/9.9\r\n\x00\x01\r\n\r\n")
    await trio.sleep(6)


async def _tls_then_bad_records(stream: trio.abc.Stream) -> None:
    await secure(stream)
    await stream.send_all(b"\x17\x03\x03\x00\x20" + bytes(32))  # under TLS: fails its MAC
    await trio.sleep(6)


async def _hello_then_bad_records(stream: trio.abc.Stream) -> None:
    tls = trio.SSLStream(stream, client_context())
    await tls.do_handshake()
    async with trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, tls, "10.0.0.2", "/p2p/v1")
        k = SigningKey(blake2b256(b"hostile"))
        await ws.send_message(encode_message(make_hello(k, "iomt-test", blake2b256(b"genesis"),
                                                        0, bytes(32))))
        await ws.get_message()  # its Hello
        await stream.send_all(b"\x17\x03\x03\x00\x20" + bytes(32))
        await trio.sleep(6)
        nursery.cancel_scope.cancel()


async def _plain_garbage(stream: trio.abc.Stream) -> None:
    await stream.send_all(b"\x00" * 5000)
    await trio.sleep(6)


@pytest.mark.parametrize("client", [_garbage_record, _hello_then_close, _tls12,
                                    _tls_then_close, _tls_then_bad_http, _tls_then_bad_records,
                                    _hello_then_bad_records, _plain_garbage])
async def test_a_hostile_tls_client_costs_no_slot_and_no_crash(nursery, autojump_clock, client):
    # one connection per IP: a count left behind shows in connection_refusal below
    host = await start_host(nursery, SigningKey(blake2b256(b"node")), max_inbound_per_ip=1)
    for _ in range(3):  # more than once: nothing is left behind by the first
        await trio.sleep(1)  # within the address's connection rate (see .acceptrate)
        sa, sb = memory_stream_pair()
        async with trio.open_nursery() as inner:
            inner.start_soon(client, sa)
            with trio.fail_after(10):
                await host.accept_stream(sb, REMOTE)  # returns; raises nothing
            inner.cancel_scope.cancel()
        assert host.slots.pending_total == 0
        assert host.slots.pending("10.0.0.9") == 0
        assert host.slots.connection_refusal("10.0.0.9") is None
        assert host.peers() == []


async def accept_beside(nursery: trio.Nursery,
                        client: Callable[[trio.abc.Stream], Awaitable[None]]
                        ) -> tuple[Host, list[dict], float]:
    """A host accepting one stream whose other end, once TLS is up, ``client`` drives: the
    host, what it logged and how long the accept took."""
    host = await start_host(nursery, SigningKey(blake2b256(b"node")))
    sa, sb = memory_stream_pair()

    async def tls_client() -> None:
        await client((await secure(sa)).stream)

    start = trio.current_time()
    with capture_logs() as logs:
        async with trio.open_nursery() as inner:
            inner.start_soon(tls_client)
            with trio.fail_after(10):
                await host.accept_stream(sb, REMOTE)
    return host, logs, trio.current_time() - start


@pytest.mark.parametrize("request_bytes", [b"GET /p2p/v1 HTTP/9.9\r\n\x00\x01\r\n\r\n",
                                           b"GET /p2p/v1 HTTP/1.1\r\nHost: x\r\n\r\n"])
async def test_a_malformed_upgrade_ends_the_handshake_at_once_with_its_reason(
        nursery, autojump_clock, request_bytes):
    answers = []

    async def client(stream: trio.abc.Stream) -> None:
        await stream.send_all(request_bytes)
        answers.append(await stream.receive_some())

    host, logs, took = await accept_beside(nursery, client)
    assert took < 1  # not held until the handshake timeout (5 s)
    assert answers[0].startswith(b"HTTP/1.1 400")
    assert [(e["status"], e["reason"]) for e in logs
            if e["event"] == "peer_handshake_rejected"] == [(400, MALFORMED_REQUEST)]
    assert not [e for e in logs if e["event"] == "peer_handshake_failed"]
    assert host.slots.pending_total == 0


@pytest.mark.parametrize("sent", [b"", b"GET /p2p/v1 HTTP/1.1\r\n"])
async def test_a_client_that_leaves_before_its_request_frees_its_place_at_once(
        nursery, autojump_clock, sent):
    """The TLS handshake done, the client ends the stream before (or midway through) its
    upgrade request: the handshake ends then, not at its 5 s timeout, its place given back."""
    async def client(stream: trio.abc.Stream) -> None:
        await stream.send_all(sent)
        await stream.aclose()  # TLS close_notify, then the socket closed

    host, logs, took = await accept_beside(nursery, client)
    assert took < 1  # not held until the handshake timeout (5 s)
    assert [e["reason"] for e in logs
            if e["event"] == "peer_handshake_abandoned"] == [CLOSED_BEFORE_REQUEST]
    assert not [e for e in logs if e["event"] in ("peer_handshake_failed",
                                                  "peer_handshake_rejected")]
    assert host.slots.pending_total == 0


async def _server_garbage(stream: trio.abc.Stream) -> None:
    await stream.receive_some()
    await stream.send_all(b"\x16\x03\x03\x00\x05hello" + bytes(200))


async def _server_tls12(stream: trio.abc.Stream) -> None:
    context = server_context(*make_certificate())
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(trio.BrokenResourceError):
        await trio.SSLStream(stream, context, server_side=True).do_handshake()


async def _server_tls_then_bad_http(stream: trio.abc.Stream) -> None:
    conn = await secure(stream, outbound=False)
    await conn.stream.receive_some()
    await conn.stream.send_all(b"HTTP/1.1 101 \x00\x01\r\n\r\n")
    await trio.sleep(6)


async def _server_tls_then_bad_records(stream: trio.abc.Stream) -> None:
    await secure(stream, outbound=False)
    await stream.send_all(b"\x17\x03\x03\x00\x20" + bytes(32))
    await trio.sleep(6)


@pytest.mark.parametrize(("server", "reason"), [
    (_server_garbage, "TLS handshake failed"), (_server_tls12, "TLS handshake"),
    # trio-websocket's reader raised h11's LocalProtocolError here: out of Host.dial, past
    # the dialer (it expects DialError), into the node's nursery
    (_server_tls_then_bad_http, "malformed answer to the HTTP upgrade: Bad HTTP message"),
    (_server_tls_then_bad_records, "handshake timed out|connection closed")])
async def test_a_hostile_tls_server_fails_the_dial_with_a_reason(nursery, autojump_clock, server,
                                                                 reason):
    host = await start_host(nursery, SigningKey(blake2b256(b"node")))
    sa, sb = memory_stream_pair()
    async with trio.open_nursery() as inner:
        inner.start_soon(server, sb)
        with trio.fail_after(10), pytest.raises(DialError, match=reason):
            await host.connect_stream(sa, "10.0.0.2:7546")
        inner.cancel_scope.cancel()
    assert host.peers() == []
