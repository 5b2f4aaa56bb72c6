"""Each limit of the API server over real websockets on 127.0.0.1 (clients from 127.0.0.2 too).

Every test here fails when its limit is taken out of iomtnode/api/server.py or connection.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
)

from iomtnode.api.jsonrpc import TOO_MANY_SUBSCRIPTIONS
from iomtnode.api.server import ApiServer, ApiServerConfig, Connection, address_key
from iomtnode.api.tls import load_api_tls
from iomtnode.client import client_context, open_client, open_client_on
from iomtnode.core.challenge import challenge_digest
from iomtnode.core.crypto import Domain, SigningKey
from iomtnode.p2p.upgrade import MALFORMED_REQUEST

from .certs import make_cert

TIMEOUT_S = 10
CONFIG = ApiServerConfig(host="127.0.0.1", port=0, close_timeout_s=0.5)
KIB = 1024

def prove_a_key(conn: Connection, *, known: bool) -> None:
    """Prove a fresh key on ``conn`` as the ``authenticate`` method does; ``known``: whether
    the ledger knows it (an authority, an active device, a patient)."""
    key = SigningKey.generate()
    nonce = conn.auth.challenge()
    conn.auth.prove(key.public, key.sign(Domain.API_AUTH, "test-chain",
                                         challenge_digest(nonce, b"")), "test-chain",
                    known=lambda public: known)



async def add(a: int, b: int = 0) -> int:
    return a + b


async def pad(kib: int) -> str:
    return "x" * kib * KIB


async def tick(conn: Connection) -> str:
    """A subscription that pushes one notification a tick, forever."""
    async def push() -> None:
        n = 0
        while await conn.notify("tick", {"n": n}):
            n += 1
            await trio.sleep(0.05)

    conn.start_subscription(push)
    return "tick"


async def quiet(conn: Connection) -> str:
    """A subscription that sends nothing until it is cancelled."""
    conn.start_subscription(trio.sleep_forever)
    return "quiet"


async def once(conn: Connection) -> str:
    """A subscription that ends at once (its slot is free again)."""
    conn.start_subscription(trio.lowlevel.checkpoint)
    return "once"


async def prove(conn: Connection, known: bool = True) -> bool:
    """Prove a fresh key that the ledger knows (or, with ``known=False``, does not)."""
    prove_a_key(conn, known=known)
    return True


METHODS = {"add": add, "pad": pad, "tick": tick, "quiet": quiet, "once": once, "prove": prove}


async def start(nursery: trio.Nursery, config: ApiServerConfig = CONFIG,
                methods: dict[str, Any] = METHODS) -> tuple[ApiServer, int]:
    server = ApiServer(config, methods)
    return server, await nursery.start(server.run)


async def call(ws: WebSocketConnection, method: str, params: Any = None, id: Any = 1) -> Any:
    await ws.send_message(json.dumps({"jsonrpc": "2.0", "method": method, "id": id,
                                      "params": params or []}))
    while True:
        reply = json.loads(await ws.get_message())
        if "id" in reply:  # skip notifications
            return reply


@asynccontextmanager
async def connect_from(ip: str, port: int) -> AsyncIterator[WebSocketConnection]:
    """A websocket to the server on 127.0.0.1:``port`` from the local address ``ip``."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=ip)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, "127.0.0.1", "/api/v1")
            try:
                yield ws
            finally:
                await ws.aclose()
    except BaseExceptionGroup as group:  # trio-websocket's reader raises the rejection
        rejected = group.subgroup(ConnectionRejected)
        if rejected is None:
            raise
        while isinstance(rejected, BaseExceptionGroup):
            rejected = rejected.exceptions[0]
        raise rejected from None


async def closed_reason(ws: WebSocketConnection) -> Any:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    return closed.value.reason


async def test_connections_per_ip_are_capped_and_other_addresses_still_connect(nursery):
    server, port = await start(nursery, dataclasses.replace(CONFIG, max_connections_per_ip=3))
    with trio.fail_after(TIMEOUT_S), capture_logs() as logs:
        async with (connect_from("127.0.0.2", port), connect_from("127.0.0.2", port),
                    connect_from("127.0.0.2", port)):
            with pytest.raises(ConnectionRejected) as rejected:
                async with connect_from("127.0.0.2", port):
                    pass
            assert rejected.value.status_code == 503
            assert rejected.value.body == b"too many connections from this address\n"
            async with connect_from("127.0.0.1", port) as other:
                assert (await call(other, "add", [1]))["result"] == 1
        async with connect_from("127.0.0.2", port) as again:  # freed when they closed
            assert (await call(again, "add", [2]))["result"] == 2
    assert server.stats().connections_refused == 1
    assert [e["reason"] for e in logs if e["event"] == "api_handshake_rejected"] == [
        "max_connections_per_ip reached"]


async def test_when_full_a_new_address_evicts_the_most_crowded_addresses_silent_client(nursery):
    config = dataclasses.replace(CONFIG, max_connections=4, max_connections_per_ip=4)
    _, port = await start(nursery, config)
    with trio.fail_after(TIMEOUT_S), capture_logs() as logs:
        async with (connect_from("127.0.0.2", port) as silent, connect_from("127.0.0.2", port) as a,
                    connect_from("127.0.0.2", port) as b, connect_from("127.0.0.3", port) as c):
            # a key of its own making does not protect a connection (anyone can make one)
            assert (await call(silent, "prove", [False]))["result"] is True
            for ws in (a, b, c):
                assert (await call(ws, "add", [1]))["result"] == 1  # heard after ``silent``
            async with connect_from("127.0.0.4", port) as newcomer:  # full: it makes room
                assert (await call(newcomer, "add", [2]))["result"] == 2
                reason = await closed_reason(silent)
                assert (reason.code, reason.reason) == (
                    1013, "evicted: the server is full and this address holds the most "
                          "connections")
                # 127.0.0.2 now holds 2, 127.0.0.3 holds 1: not two more, so no room for it
                with pytest.raises(ConnectionRejected) as rejected:
                    async with connect_from("127.0.0.3", port):
                        pass
                assert rejected.value.status_code == 503
                for ws in (a, b, c):
                    assert (await call(ws, "add", [3]))["result"] == 3
    evicted = [e for e in logs if e["event"] == "api_connection_evicted"]
    assert [(e["address"], e["held"], e["newcomer"]) for e in evicted] == [
        ("127.0.0.2", 3, "127.0.0.4")]


async def test_handshakes_under_way_count_against_the_per_ip_cap(nursery):
    _, port = await start(nursery, dataclasses.replace(CONFIG, max_connections_per_ip=2))
    with trio.fail_after(TIMEOUT_S):
        silent = [await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
                  for _ in range(2)]  # TCP connected, no HTTP request ever sent
        with pytest.raises(ConnectionRejected):
            async with connect_from("127.0.0.2", port):
                pass
        for stream in silent:
            await stream.aclose()


async def test_an_idle_connection_is_closed_with_a_reason(nursery):
    _, port = await start(nursery, dataclasses.replace(CONFIG, idle_timeout_s=0.3))
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1") as ws:
            assert (await call(ws, "add", [1]))["result"] == 1
            start_s = trio.current_time()
            reason = await closed_reason(ws)
            assert trio.current_time() - start_s >= 0.25
            assert (reason.code, reason.reason) == (1000, "idle: nothing received for 0.3 s")


async def test_a_subscription_keeps_a_reading_client_connected_past_the_idle_timeout(nursery):
    _, port = await start(nursery, dataclasses.replace(CONFIG, idle_timeout_s=0.2))
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1") as ws:
            assert (await call(ws, "quiet"))["result"] == "quiet"  # nothing to read, ever
            await trio.sleep(0.6)  # three idle timeouts
            assert (await call(ws, "add", [5]))["result"] == 5


async def test_notifications_past_the_outbox_byte_bound_drop_the_client(nursery):
    # 1,000 slots cannot fill with 400 notifications: only the byte bound can stop them
    config = dataclasses.replace(CONFIG, outbox_size=1000, outbox_bytes=512 * KIB)
    peak: list[int] = []
    dropped = trio.Event()

    async def flood(conn: Connection) -> str:
        async def push() -> None:
            for n in range(400):
                if not await conn.notify("tick", {"n": n, "pad": "x" * 64 * KIB}):
                    dropped.set()
                    return
                peak.append(conn.queued_bytes)

        conn.start_soon(push)
        return "flood"

    _, port = await start(nursery, config, METHODS | {"flood": flood})
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1",
                                      message_queue_size=1) as ws:
            with capture_logs() as logs:
                assert (await call(ws, "flood"))["result"] == "flood"
                await dropped.wait()
                await closed_reason(ws)  # 1008, or 1007 if the close cut a frame short
            assert max(peak) <= 512 * KIB
            warned = [e for e in logs if e["event"] == "api_client_too_slow"]
            assert warned[0]["reason"] == f"client too slow: over {512 * KIB} bytes queued"


async def test_replies_wait_for_room_in_the_outbox_bytes(nursery):
    # a client that sends requests for 256 KiB replies and never reads: the outbox holds at
    # most its bound (plus the reply the writer is sending), and the handler stops reading
    config = dataclasses.replace(CONFIG, outbox_bytes=1024 * KIB)
    seen: list[int] = []

    async def big(conn: Connection) -> str:
        seen.append(conn.queued_bytes)
        return "x" * 256 * KIB

    _, port = await start(nursery, config, METHODS | {"big": big})
    with trio.fail_after(TIMEOUT_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with trio.open_nursery() as client:
            ws = await wrap_client_stream(client, stream, "127.0.0.1", "/api/v1",
                                          message_queue_size=1)
            request = json.dumps({"jsonrpc": "2.0", "method": "big", "id": 1})
            with trio.move_on_after(1.0):
                for _ in range(200):  # 50 MiB of replies if they were all made
                    await ws.send_message(request)
            await trio.sleep(0.3)
            assert max(seen) <= 1024 * KIB + 256 * KIB + 64
            assert len(seen) < 100  # the server stopped taking requests
            client.cancel_scope.cancel()


async def test_subscriptions_per_connection_are_capped(nursery):
    _, port = await start(nursery, dataclasses.replace(CONFIG, max_subscriptions=2))
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1") as ws:
            assert (await call(ws, "once"))["result"] == "once"  # ends at once: frees its slot
            await trio.sleep(0.05)
            assert (await call(ws, "quiet"))["result"] == "quiet"
            assert (await call(ws, "quiet"))["result"] == "quiet"
            error = (await call(ws, "quiet"))["error"]
            assert error["code"] == TOO_MANY_SUBSCRIPTIONS
            assert error["message"] == ("this connection holds 2 subscriptions, the limit; "
                                        "use another connection")
            assert error["data"] == {"limit": 2}
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1") as other:
            assert (await call(other, "quiet"))["result"] == "quiet"  # per connection


async def test_anonymous_requests_are_rate_limited_and_participants_keys_are_not(nursery):
    config = dataclasses.replace(CONFIG, requests_per_s=20.0, request_burst=5)
    _, port = await start(nursery, config)
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1") as ws:
            began = trio.current_time()
            with capture_logs() as logs:
                for i in range(15):  # 5 at once, then 10 at 20/s
                    assert (await call(ws, "add", [i]))["result"] == i
            assert trio.current_time() - began >= 0.45
            assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
                "api_client_throttled"]  # once per connection
            batch = json.dumps([{"jsonrpc": "2.0", "method": "add", "params": [i], "id": i}
                                for i in range(10)])
            began = trio.current_time()
            await ws.send_message(batch)  # each request of a batch pays
            assert len(json.loads(await ws.get_message())) == 10
            assert trio.current_time() - began >= 0.45
            # a text message pays one request per 64 KiB too: 4 of 200 KiB are 16 requests
            padded = " " * 200 * KIB + json.dumps({"jsonrpc": "2.0", "method": "add",
                                                   "params": [1], "id": 1})
            began = trio.current_time()
            for _ in range(4):
                await ws.send_message(padded)
                assert json.loads(await ws.get_message())["result"] == 1
            assert trio.current_time() - began >= 0.7
            began = trio.current_time()  # ... and so does a binary frame (its transactions)
            for _ in range(4):
                await ws.send_message(b"\x00" * 200 * KIB)
                assert json.loads(await ws.get_message())["error"]["code"] == -32600
            assert trio.current_time() - began >= 0.7
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1") as ws:
            assert (await call(ws, "prove", [False]))["result"] is True  # a key nobody knows
            began = trio.current_time()
            for i in range(15):  # 5 at once (less the prove), then 10 at 20/s
                assert (await call(ws, "add", [i]))["result"] == i
            assert trio.current_time() - began >= 0.45
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1") as ws:
            assert (await call(ws, "prove"))["result"] is True  # a key the ledger knows
            began = trio.current_time()
            for i in range(30):
                assert (await call(ws, "add", [i]))["result"] == i
            assert trio.current_time() - began < 0.45


@pytest.mark.parametrize(("ip", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),  # a /64 is one party's: counted as one
    ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4 through a dual-stack socket
    ("node3", "node3"),  # an in-memory transport's names
])
def test_connections_are_counted_per_ipv4_address_and_per_ipv6_64(ip, key):
    assert address_key(ip) == key


async def test_tls_handshakes_under_way_count_per_ip_and_end_at_the_connect_timeout(
        nursery, tmp_path):
    cert = make_cert(tmp_path)
    config = dataclasses.replace(CONFIG, max_connections_per_ip=2, connect_timeout_s=0.5)
    server = ApiServer(config, METHODS, tls=load_api_tls(cert.cert, cert.key))
    port = await nursery.start(server.run)
    with trio.fail_after(TIMEOUT_S):
        began = trio.current_time()
        stalled = [await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
                   for _ in range(2)]  # TCP connected, no TLS ClientHello ever sent
        over = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
        assert (await over.receive_some(100)).startswith(b"HTTP/1.1 503")  # before any TLS
        await over.aclose()
        async with open_client(f"wss://127.0.0.1:{port}/api/v1", ca=cert.cert) as other:
            assert await other.call("add", a=1) == 1  # another address is still served
        for stream in stalled:  # closed by the server at the connect timeout
            assert await stream.receive_some(100) == b""
            await stream.aclose()
        assert trio.current_time() - began >= 0.45
        stream = trio.SSLStream(  # their slots are free again
            await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2"),
            client_context(cert.cert), server_hostname="127.0.0.1")
        await stream.do_handshake()
        async with open_client_on(stream, "127.0.0.1") as again:
            assert await again.call("add", a=2) == 2


async def test_a_request_that_is_no_websocket_upgrade_is_refused_at_once_and_logged(nursery):
    _, port = await start(nursery, dataclasses.replace(CONFIG, max_connections_per_ip=1))
    with trio.fail_after(TIMEOUT_S), capture_logs() as logs:
        for _ in range(3):  # its place is given back at once: the others get their 400 too
            stream = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.3")
            await stream.send_all(b"GET /api/v1 HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await stream.receive_some()
            while await stream.receive_some():  # the node closes the connection
                pass
            await stream.aclose()
            assert answer.startswith(b"HTTP/1.1 400")
        while not (refused := [(e["status"], e["reason"]) for e in logs  # noqa: ASYNC110
                               if e["event"] == "api_handshake_rejected"]):
            await trio.sleep(0.01)
    assert refused == [(400, MALFORMED_REQUEST)]  # one line per address per 10 s


async def test_refused_connections_from_one_address_are_logged_once_per_interval(nursery):
    """A client over its address's connection cap, reconnecting in a loop, gets its 503 each
    time but costs the node's log one line per REFUSAL_LOG_INTERVAL_S, then the count."""
    from iomtnode.api.server import REFUSAL_LOG_INTERVAL_S

    server, port = await start(nursery, dataclasses.replace(CONFIG, max_connections_per_ip=1))
    with trio.fail_after(TIMEOUT_S), capture_logs() as logs:
        async with connect_from("127.0.0.5", port):
            for _ in range(20):
                with pytest.raises(ConnectionRejected) as rejected:
                    async with connect_from("127.0.0.5", port):
                        pass
                assert rejected.value.status_code == 503
    assert server.stats().connections_refused == 20
    lines = [e for e in logs if e["event"] == "api_handshake_rejected"]
    assert [(e["status"], e["unlogged"]) for e in lines] == [(503, 0)]
    assert REFUSAL_LOG_INTERVAL_S >= 1.0


async def test_a_client_that_leaves_before_its_request_frees_its_place_at_once(nursery):
    """A connection ended before (or midway through) its upgrade request gives its place
    among the address's connections back then, not at the connect timeout (10 s)."""
    _, port = await start(nursery, dataclasses.replace(CONFIG, max_connections_per_ip=1))
    with trio.fail_after(2):  # well below the connect timeout
        for sent in (b"", b"GET /api/v1 HTTP/1.1\r\n"):
            stream = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.4")
            await stream.send_all(sent)
            await stream.send_eof()
            assert await stream.receive_some() == b""  # the node closed its end: no answer
            await stream.aclose()
        async with open_client(f"ws://127.0.0.1:{port}/api/v1") as client:  # the place is free
            assert await client.call("add", a=3) == 3
