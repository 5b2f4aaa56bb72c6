"""A client cancelled from outside (Ctrl-C, a load run ending its block follower) closes at
once: it waited CLOSE_TIMEOUT_S for a close reply that its reader, cancelled with it, could
never read (2 s per connection: ``iomtnode dev`` took 2.4 s to stop)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, wrap_server_stream

from iomtnode.client import CLOSE_TIMEOUT_S, open_client_on

pytestmark = pytest.mark.timeout(30)


async def serve(nursery: trio.Nursery, stream: trio.abc.Stream) -> None:
    """A websocket server that accepts and reads until the connection ends."""
    ws = await (await wrap_server_stream(nursery, stream)).accept()
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed:  # the client went
        return


async def closing_time(cancel_from_outside: bool) -> float:
    """Virtual seconds from leaving the client's block to its connection being closed."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, nursery, server_stream)
        with trio.CancelScope() as scope:
            async with open_client_on(client_stream, "node"):
                left = trio.current_time()
                if cancel_from_outside:
                    scope.cancel()
                    await trio.sleep_forever()
        closed = trio.current_time() - left
        nursery.cancel_scope.cancel()
    return closed


async def test_a_client_cancelled_from_outside_closes_at_once(autojump_clock):
    assert await closing_time(cancel_from_outside=True) < CLOSE_TIMEOUT_S / 10


async def test_a_client_leaving_its_block_still_closes_with_the_handshake(autojump_clock):
    assert await closing_time(cancel_from_outside=False) < CLOSE_TIMEOUT_S / 10
