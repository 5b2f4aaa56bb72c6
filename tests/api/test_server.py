"""The API server over real websockets on 127.0.0.1, each test under ``trio.fail_after``."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from iomtnode.api.jsonrpc import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, Refused, RpcError
from iomtnode.api.server import ApiServer, ApiServerConfig, ApiStats, Connection

TIMEOUT_S = 10
CONFIG = ApiServerConfig(host="127.0.0.1", port=0, close_timeout_s=1.0)


async def add(a: int, b: int = 0) -> int:
    return a + b


async def buggy() -> None:
    raise ZeroDivisionError("a bug")


async def refuse() -> None:
    raise RpcError(1001, "device revoked")


async def subscribe(conn: Connection, count: int) -> str:
    """Starts a task that sends ``count`` notifications."""

    async def push() -> None:
        for i in range(count):
            await conn.notify("tick", {"subscription": "s1", "n": i})

    conn.start_soon(push)
    return "s1"


async def subscribe_buggy(conn: Connection) -> str:
    async def push() -> None:
        await conn.notify("tick", {"n": 0})
        raise RuntimeError("a bug in a subscription task")

    conn.start_soon(push)
    return "s2"


METHODS = {"add": add, "buggy": buggy, "refuse": refuse, "subscribe": subscribe,
           "subscribe_buggy": subscribe_buggy}


async def echo_binary(frame: bytes, refused: Refused) -> bytes | None:
    if frame == b"silent":
        return None
    if frame == b"crash":
        raise ValueError("a bug in the binary handler")
    return b"ack:" + frame


async def start(nursery: trio.Nursery, config: ApiServerConfig = CONFIG, **kwargs: Any) -> str:
    """Starts a server in ``nursery``; returns its API url."""
    server = ApiServer(config, METHODS, **kwargs)
    port = await nursery.start(server.run)
    return f"ws://127.0.0.1:{port}/api/v1"


async def call(ws: WebSocketConnection, method: str, params: Any = None, id: Any = 1) -> Any:
    request = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        request["params"] = params
    await ws.send_message(json.dumps(request))
    return json.loads(await ws.get_message())


async def test_round_trip(nursery):
    with trio.fail_after(TIMEOUT_S):
        url = await start(nursery)
        async with open_websocket_url(url) as ws:
            assert await call(ws, "add", {"a": 2, "b": 40}, id=7) == {
                "jsonrpc": "2.0", "result": 42, "id": 7}
            assert (await call(ws, "refuse"))["error"] == {"code": 1001,
                                                           "message": "device revoked"}


async def test_the_same_connection_answers_after_every_kind_of_bad_input(nursery):
    bad_inputs: list[tuple[str | bytes, int]] = [
        ("{not json", PARSE_ERROR),
        ("[]", INVALID_REQUEST),
        ('{"jsonrpc":"2.0","id":1,"method":"nope"}', -32601),
        ('{"jsonrpc":"2.0","id":1,"method":"add","params":{"a":"x"}}', -32602),
        ('{"jsonrpc":"2.0","id":1,"method":"buggy"}', INTERNAL_ERROR),
        ('{"jsonrpc":"2.0","id":1,"method":"refuse"}', 1001),
        ('{"jsonrpc":"2.0","id":1,"method":"ban","params":{"token":"t"}}', -32004),
        ("x" * (1024 * 1024 + 1), -32001),  # over the JSON-RPC limit, under the frame limit
        (b"\x93\x01\x02\x03", INVALID_REQUEST),  # binary, and this server takes none
    ]

    async def ban() -> None: ...

    with trio.fail_after(TIMEOUT_S):
        server = ApiServer(CONFIG, METHODS, admin_methods={"ban": ban}, admin_token="right")
        port = await nursery.start(server.run)
        async with open_websocket_url(f"ws://127.0.0.1:{port}/api/v1") as ws:
            for i, (message, code) in enumerate(bad_inputs):
                await ws.send_message(message)
                reply = json.loads(await ws.get_message())
                assert reply["error"]["code"] == code, (message[:40], reply)
                assert (await call(ws, "add", [i]))["result"] == i


async def test_a_path_other_than_api_v1_is_rejected_with_404(nursery):
    with trio.fail_after(TIMEOUT_S):
        url = await start(nursery)
        base = url.removesuffix("/api/v1")
        for path in ("/", "/api/v2", "/api/v1/x", "/p2p/v1"):
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(base + path):
                    pass
            assert rejected.value.status_code == 404
        async with open_websocket_url(url + "?client=test") as ws:  # a query string is fine
            assert (await call(ws, "add", [1]))["result"] == 1


async def test_binary_frames_go_to_the_binary_handler_and_back_as_binary(nursery):
    with trio.fail_after(TIMEOUT_S):
        url = await start(nursery, binary_handler=echo_binary)
        async with open_websocket_url(url) as ws:
            await ws.send_message(b"\x92\x01\x90")
            assert await ws.get_message() == b"ack:\x92\x01\x90"
            await ws.send_message(b"silent")  # the handler may answer nothing
            assert (await call(ws, "add", [3]))["result"] == 3


async def test_binary_frames_without_a_handler_get_a_json_error(nursery):
    with trio.fail_after(TIMEOUT_S):
        url = await start(nursery)
        async with open_websocket_url(url) as ws:
            await ws.send_message(b"\x92\x01\x90")
            reply = json.loads(await ws.get_message())
            assert reply == {"jsonrpc": "2.0", "id": None, "error": {
                "code": INVALID_REQUEST, "message": "binary frames are not accepted here"}}


async def test_a_bug_in_the_binary_handler_closes_only_that_connection_with_1011(nursery):
    with trio.fail_after(TIMEOUT_S):
        url = await start(nursery, binary_handler=echo_binary)
        async with open_websocket_url(url) as other, open_websocket_url(url) as ws:
            with capture_logs() as logs:
                await ws.send_message(b"crash")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
            assert closed.value.reason.code == 1011
            assert any(e["event"] == "api_connection_failed" for e in logs)
            assert (await call(other, "add", [5]))["result"] == 5


async def test_a_frame_over_max_message_bytes_closes_with_1009_and_others_carry_on(nursery):
    config = dataclasses.replace(CONFIG, max_message_bytes=64 * 1024)
    with trio.fail_after(TIMEOUT_S):
        url = await start(nursery, config)
        async with open_websocket_url(url) as other, open_websocket_url(url) as ws:
            await ws.send_message("x" * (64 * 1024 + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1009
            assert "64" in closed.value.reason.reason or "65536" in closed.value.reason.reason
            assert (await call(other, "add", [5]))["result"] == 5
        async with open_websocket_url(url) as again:
            assert (await call(again, "add", [6]))["result"] == 6


async def test_subscription_notifications_follow_the_reply(nursery):
    with trio.fail_after(TIMEOUT_S):
        url = await start(nursery)
        async with open_websocket_url(url) as ws:
            assert (await call(ws, "subscribe", {"count": 3}))["result"] == "s1"
            ticks = [json.loads(await ws.get_message()) for _ in range(3)]
            assert ticks == [{"jsonrpc": "2.0", "method": "tick",
                              "params": {"subscription": "s1", "n": n}}
                             for n in range(3)]
            assert (await call(ws, "add", [1]))["result"] == 1  # still answering


async def test_a_bug_in_a_subscription_task_closes_its_connection_with_1011(nursery):
    with trio.fail_after(TIMEOUT_S):
        url = await start(nursery)
        async with open_websocket_url(url) as ws:
            with capture_logs() as logs:
                assert (await call(ws, "subscribe_buggy"))["result"] == "s2"
                with pytest.raises(ConnectionClosed) as closed:
                    while True:  # the queued notification may or may not make it out
                        await ws.get_message()
            assert closed.value.reason.code == 1011
            assert any(e["event"] == "api_connection_failed" for e in logs)
        async with open_websocket_url(url) as ws:
            assert (await call(ws, "add", [1]))["result"] == 1


async def test_a_client_that_does_not_read_notifications_is_dropped(nursery):
    # 400 notifications of 64 KiB (25 MiB) cannot all sit in the socket buffers and an
    # outbox of 4, so the server must drop the client rather than wait for it.
    config = dataclasses.replace(CONFIG, outbox_size=4, close_timeout_s=0.2)
    dropped = trio.Event()

    async def flood(conn: Connection) -> str:
        async def push() -> None:
            for n in range(400):
                if not await conn.notify("tick", {"n": n, "pad": "x" * 64 * 1024}):
                    dropped.set()
                    return

        conn.start_soon(push)
        return "flood"

    with trio.fail_after(TIMEOUT_S):
        server = ApiServer(config, METHODS | {"flood": flood})
        url = f"ws://127.0.0.1:{await nursery.start(server.run)}/api/v1"
        async with open_websocket_url(url, message_queue_size=1) as ws:
            with capture_logs() as logs:
                assert (await call(ws, "flood"))["result"] == "flood"
                await dropped.wait()  # not reading until the server gives up on us
            assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
                "api_client_too_slow"]
            received = 0
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.get_message()
                    received += 1
            assert received < 400
        async with open_websocket_url(url) as ws:  # the server is fine
            assert (await call(ws, "add", [1]))["result"] == 1


async def test_over_max_connections_the_handshake_is_rejected_with_503(nursery):
    config = dataclasses.replace(CONFIG, max_connections=2)
    with trio.fail_after(TIMEOUT_S):
        url = await start(nursery, config)
        async with open_websocket_url(url) as a, open_websocket_url(url) as b:
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(url):
                    pass
            assert rejected.value.status_code == 503
            assert (await call(a, "add", [1]))["result"] == 1
            assert (await call(b, "add", [2]))["result"] == 2
        async with open_websocket_url(url) as c:  # a freed slot is usable again
            assert (await call(c, "add", [3]))["result"] == 3


async def test_stats_count_connections_open_accepted_and_refused(nursery):
    server = ApiServer(dataclasses.replace(CONFIG, max_connections=1), METHODS)
    url = f"ws://127.0.0.1:{await nursery.start(server.run)}/api/v1"
    assert server.stats() == ApiStats(connections=0, connections_accepted=0,
                                      connections_refused=0)
    with trio.fail_after(TIMEOUT_S):
        async with open_websocket_url(url) as a:
            assert (await call(a, "add", [1]))["result"] == 1
            with pytest.raises(ConnectionRejected):
                async with open_websocket_url(url):
                    pass
            assert server.stats() == ApiStats(1, 1, 1)
        while server.stats().connections:  # noqa: ASYNC110 - the server sees the close later
            await trio.sleep(0.01)
    assert server.stats() == ApiStats(0, 1, 1)


async def test_many_concurrent_clients(nursery):
    clients, calls = 64, 20
    results: dict[int, list[int]] = {}

    async def client(n: int, url: str) -> None:
        async with open_websocket_url(url) as ws:
            results[n] = [(await call(ws, "add", [n, i], id=i))["result"] for i in range(calls)]

    with trio.fail_after(TIMEOUT_S):  # all from 127.0.0.1: the per-IP limit raised to fit
        url = await start(nursery, dataclasses.replace(CONFIG, max_connections_per_ip=clients))
        async with trio.open_nursery() as clients_nursery:
            for n in range(clients):
                clients_nursery.start_soon(client, n, url)
    assert results == {n: [n + i for i in range(calls)] for n in range(clients)}


async def test_stopping_the_server_closes_connections_with_1001():
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url = await start(nursery)
            async with open_websocket_url(url) as ws:
                assert (await call(ws, "add", [1]))["result"] == 1
                nursery.cancel_scope.cancel()
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == 1001


async def test_notify_from_outside_the_connection_and_after_it_closed(nursery):
    conns: list[Connection] = []

    async def remember(conn: Connection) -> int:
        conns.append(conn)
        return conn.id

    with trio.fail_after(TIMEOUT_S):
        server = ApiServer(CONFIG, {"remember": remember})
        url = f"ws://127.0.0.1:{await nursery.start(server.run)}/api/v1"
        async with open_websocket_url(url) as ws:
            await call(ws, "remember")
            [conn] = conns
            assert await conn.notify("block", {"height": 1})  # e.g. from the chain's task
            assert json.loads(await ws.get_message())["params"] == {"height": 1}

            async def late_task() -> None:
                await conn.notify("block", {"height": 5})

            conn.start_soon(late_task)  # outside any request: starts at once
            assert json.loads(await ws.get_message())["params"] == {"height": 5}
        while not conn.closed:
            await trio.lowlevel.checkpoint()
        assert not await conn.notify("block", {"height": 2})


async def test_clients_that_vanish_during_the_handshake_do_not_hurt_the_server(nursery):
    upgrade = (b"GET /api/v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")
    with trio.fail_after(TIMEOUT_S):
        url = await start(nursery)
        port = int(url.split(":")[2].split("/")[0])
        for data in (b"", b"GET /api/v1 HT", b"garbage\r\n\r\n", upgrade,
                     upgrade.replace(b"/api/v1", b"/nope")):
            for _ in range(5):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(data)
                await stream.aclose()
        async with open_websocket_url(url) as ws:
            assert (await call(ws, "add", [1]))["result"] == 1
