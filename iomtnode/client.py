"""An async client of a node's API (JSON-RPC over websocket, plus msgpack binary frames).

One connection, one reader task: replies are matched to requests by id, notifications
(e.g. from ``subscribe_blocks``) go to a bounded channel. Used by the CLI, the simulator
and the tests.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    connect_websocket_url,
    wrap_client_stream,
)

from .core import codec

API_PATH = "/api/v1"
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0  # a close on a dead link can hang without a deadline
NOTIFICATION_QUEUE = 4096  # notifications buffered for a slow reader before dropping
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # replies can hold whole blocks
RECEIVE_BUFFER_BYTES = 256 * 1024  # read from the socket at once (trio-websocket: 4 KiB)


class ApiError(Exception):
    """A JSON-RPC error answer: ``code`` and ``message`` as the node sent them."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


class ApiClient:
    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, trio.MemorySendChannel[Any]] = {}
        self._notify_send, self.notifications = trio.open_memory_channel[dict[str, Any]](
            NOTIFICATION_QUEUE
        )

    async def _read(self) -> None:
        try:
            while True:
                message = await self._ws.get_message()
                if isinstance(message, bytes):
                    reply = codec.decode(message)
                    channel = self._waiting.pop(reply[0], None)
                else:
                    reply = json.loads(message)
                    if "id" not in reply:
                        # a reader this slow loses notifications, not the connection
                        with contextlib.suppress(trio.WouldBlock):
                            self._notify_send.send_nowait(reply)
                        continue
                    channel = self._waiting.pop(reply["id"], None)
                if channel is not None:
                    channel.send_nowait(reply)
        except ConnectionClosed:
            pass
        finally:
            for channel in self._waiting.values():
                channel.close()
            self._notify_send.close()

    async def call(self, method: str, **params: Any) -> Any:
        """Call ``method``; return its result or raise :class:`ApiError`."""
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[Any](1)
        self._waiting[request_id] = send
        await self._ws.send_message(json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        ))
        try:
            reply = await receive.receive()
        except trio.EndOfChannel:
            raise ConnectionError("the node closed the connection") from None
        if "error" in reply:
            err = reply["error"]
            raise ApiError(err["code"], err["message"], err.get("data"))
        return reply["result"]

    async def submit_binary(self, txs: list[bytes]) -> list[list[Any]]:
        """Submit raw transactions in one msgpack frame; one [0, id] or [code, msg] each."""
        request_id = next(self._ids)
        send, receive = trio.open_memory_channel[Any](1)
        self._waiting[request_id] = send
        await self._ws.send_message(codec.encode([request_id, txs]))
        try:
            reply = await receive.receive()
        except trio.EndOfChannel:
            raise ConnectionError("the node closed the connection") from None
        return reply[1]


@asynccontextmanager
async def open_client(url: str) -> AsyncIterator[ApiClient]:
    """Connect to a node's API at ``url`` (ws://host:port/api/v1); closes on exit."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            ws = await connect_websocket_url(nursery, url, max_message_size=MAX_MESSAGE_BYTES,
                                             receive_buffer_size=RECEIVE_BUFFER_BYTES)
        async with _serve(nursery, ws) as client:
            yield client


@asynccontextmanager
async def open_client_on(stream: trio.abc.Stream, host: str) -> AsyncIterator[ApiClient]:
    """As :func:`open_client`, on ``stream``, already connected to the API listener at
    ``host`` (a test's in-memory network, say); closes on exit."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            ws = await wrap_client_stream(nursery, stream, host, API_PATH,
                                          max_message_size=MAX_MESSAGE_BYTES,
                                          receive_buffer_size=RECEIVE_BUFFER_BYTES)
        async with _serve(nursery, ws) as client:
            yield client


@asynccontextmanager
async def _serve(nursery: trio.Nursery, ws: WebSocketConnection) -> AsyncIterator[ApiClient]:
    client = ApiClient(ws)
    nursery.start_soon(client._read)
    try:
        yield client
    finally:
        with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await ws.aclose()
        nursery.cancel_scope.cancel()
