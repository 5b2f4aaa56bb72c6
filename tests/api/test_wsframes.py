"""A long reply goes out as one websocket message in bounded frames (wsproto
copied a 7.3 MB block reply four times as it framed it)."""

from __future__ import annotations

from functools import partial

import trio
import trio.testing
from trio_websocket import (
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
    wrap_server_stream,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from iomtnode.api.wsframes import FRAGMENT_CHARS, send_text

LONG = "".join(f'{{"n":{i}}},' for i in range(200_000))  # about 2.4 MB of ASCII JSON
TIMEOUT_S = 10


async def _frames_of(message: str) -> list[TextMessage]:
    """The text events a raw wsproto client receives when the server sends ``message``."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = WSConnection(ConnectionType.CLIENT)
    events: list[TextMessage] = []

    async def serve() -> None:
        request = await wrap_server_stream(nursery, server_stream)
        ws = await request.accept()
        await send_text(ws, message)

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            await client_stream.send_all(client.send(Request(host="node", target="/")))
            received = 0
            while received < len(message):
                client.receive_data(await client_stream.receive_some())
                for event in client.events():
                    if isinstance(event, TextMessage):
                        events.append(event)
                        received += len(event.data)
                    else:
                        assert isinstance(event, AcceptConnection)
            nursery.cancel_scope.cancel()
    return events


async def test_a_long_message_goes_in_frames_of_bounded_size() -> None:
    events = await _frames_of(LONG)
    assert "".join(e.data for e in events) == LONG
    assert [e.message_finished for e in events] == [False] * (len(events) - 1) + [True]
    frames = -(-len(LONG) // FRAGMENT_CHARS)
    assert len(events) >= frames > 1  # wsproto may split a frame as it arrives, never join
    assert max(len(e.data) for e in events) <= FRAGMENT_CHARS


async def test_a_short_message_goes_whole() -> None:
    events = await _frames_of('{"jsonrpc":"2.0","result":1,"id":1}')
    assert [(e.data, e.message_finished) for e in events] == [
        ('{"jsonrpc":"2.0","result":1,"id":1}', True)]


async def test_a_trio_websocket_client_reads_the_frames_as_one_message() -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await send_text(ws, LONG)
        await ws.send_message("next")

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0,
                                                 ssl_context=None))
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/",
                                          max_message_size=2 * len(LONG)) as ws:
                assert await ws.get_message() == LONG
                assert await ws.get_message() == "next"
            nursery.cancel_scope.cancel()
