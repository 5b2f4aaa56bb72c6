"""The server side of a peer's websocket upgrade: the path and the connection limits are
checked before the websocket is accepted, so a refused peer learns why in an HTTP status.
A socket refused before anything is read from it (:func:`refuse_unread`) gets its 503 too."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from urllib.parse import urlsplit

import h11
import trio
import wsproto.utilities
from structlog.typing import FilteringBoundLogger
from trio_websocket import (
    ConnectionRejected,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from .hostconfig import P2P_PATH, RECEIVE_BUFFER_BYTES, RECEIVE_QUEUE_FRAMES
from .messages import MAX_MESSAGE_BYTES

REFUSAL_WRITE_S = 0.5  # seconds at most spent writing a refusal to a socket not read from
# What trio-websocket's reader task raises when the node a client dialed answers the HTTP
# upgrade with a malformed response: it tries to answer it with an HTTP rejection, which a
# client cannot send. Caught with ConnectionRejected, so a dial fails with a reason.
BAD_UPGRADE = (h11.LocalProtocolError, wsproto.utilities.LocalProtocolError)
REMOTE_ERRORS = (h11.RemoteProtocolError, wsproto.utilities.RemoteProtocolError)
MALFORMED_REQUEST = "malformed HTTP upgrade request (answered 400)"
CLOSED_BEFORE_REQUEST = "closed the connection before its upgrade request"


def upgrade_failure(group: BaseExceptionGroup[Exception]) -> str:
    """Why a dial's HTTP upgrade failed, from what its websocket reader task raised: a
    :class:`ConnectionRejected`, or one of :data:`BAD_UPGRADE`."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    if isinstance(exc, ConnectionRejected):
        body = (exc.body or b"").decode(errors="replace").strip()
        return f"rejected with HTTP {exc.status_code}: {body}"
    cause: BaseException | None = exc  # the remote's error, which the reader tried to answer
    while cause is not None and not isinstance(cause, REMOTE_ERRORS):
        cause = cause.__context__
    return "malformed answer to the HTTP upgrade" + ("" if cause is None else f": {cause}")[:200]


async def refuse_unread(stream: trio.abc.Stream, reason: str) -> None:
    """Answer HTTP 503 with ``reason`` without reading the request, and close ``stream``.

    A websocket client reads it as a rejection with the reason (trio-websocket raises
    ``ConnectionRejected``); one that does not read costs at most :data:`REFUSAL_WRITE_S`.
    """
    body = f"{reason}\n".encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    # the other side may be gone already: then there is nothing to tell it
    with trio.move_on_after(REFUSAL_WRITE_S), contextlib.suppress(
            trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.send_all(head + body)
    await trio.aclose_forcefully(stream)


class _CloseWatch(trio.abc.Stream):
    """``stream`` as trio-websocket holds it, until the upgrade request has arrived.

    :attr:`ended` is set, with :attr:`reason`, when trio-websocket closes it, which it does,
    before any request reaches us, after answering a malformed HTTP request with 400; and
    when the client ends the stream before a request (trio-websocket would wait for one
    until the handshake's timeout, the client's place among the handshakes held all along).
    Sending is ``stream``'s own method, bound on the instance (no extra call per frame);
    receiving is watched until :meth:`arrived`, then ``stream``'s own as well."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self.ended = trio.Event()
        self.reason = ""
        self.send_all = stream.send_all  # type: ignore[method-assign]
        self.receive_some = self._receive_before_request  # type: ignore[method-assign]
        self.wait_send_all_might_not_block = (  # type: ignore[method-assign]
            stream.wait_send_all_might_not_block)

    def arrived(self) -> None:
        """The request is in: receive straight from ``stream`` from now on."""
        self.receive_some = self._stream.receive_some  # type: ignore[method-assign]

    def _end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.reason = reason
            self.ended.set()

    async def _receive_before_request(self, max_bytes: int | None = None
                                      ) -> bytes | bytearray:
        try:
            data = await self._stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._end(CLOSED_BEFORE_REQUEST)
            raise
        if not data:
            self._end(CLOSED_BEFORE_REQUEST)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)  # not called: the instance holds stream's own

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()  # not called, as send_all

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)  # not called, as send_all

    async def aclose(self) -> None:
        self._end(MALFORMED_REQUEST)
        await self._stream.aclose()


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def upgrade_request(nursery: trio.Nursery, stream: trio.abc.Stream, *,
                          message_queue_size: int, max_message_size: int,
                          receive_buffer_size: int) -> WebSocketRequest | str:
    """trio-websocket's ``wrap_server_stream``: the client's upgrade request, or why there
    is none: :data:`MALFORMED_REQUEST` once trio-websocket has answered a request that is
    not a websocket upgrade with 400 and closed ``stream``, :data:`CLOSED_BEFORE_REQUEST`
    once the client has ended it (``wrap_server_stream`` alone would wait for a request that
    never comes)."""
    watched = _CloseWatch(stream)
    request: WebSocketRequest | None = None
    async with trio.open_nursery() as race:
        race.start_soon(_cancel_when, watched.ended, race.cancel_scope)
        request = await wrap_server_stream(nursery, watched,
                                           message_queue_size=message_queue_size,
                                           max_message_size=max_message_size,
                                           receive_buffer_size=receive_buffer_size)
        race.cancel_scope.cancel()
    if request is None:
        return watched.reason
    watched.arrived()
    return request


async def accept_upgrade(nursery: trio.Nursery, stream: trio.abc.Stream, remote: str,
                         refusal: Callable[[], str | None], log: FilteringBoundLogger
                         ) -> WebSocketConnection | None:
    """Accept the HTTP upgrade on ``stream``, or reject it: 404 for a wrong path, 503 with
    ``refusal()``'s reason when that is not None (asked once the request has arrived); a
    request that is not a websocket upgrade is answered 400 (by trio-websocket), logged, and
    ends the handshake at once."""
    request = await upgrade_request(nursery, stream, message_queue_size=RECEIVE_QUEUE_FRAMES,
                                    max_message_size=MAX_MESSAGE_BYTES,
                                    receive_buffer_size=RECEIVE_BUFFER_BYTES)
    if isinstance(request, str):
        if request == MALFORMED_REQUEST:
            log.info("peer_handshake_rejected", remote=remote, status=400, reason=request)
        else:
            log.debug("peer_handshake_abandoned", remote=remote, reason=request)
        return None
    path = urlsplit(request.path).path
    if path != P2P_PATH:
        log.debug("peer_handshake_rejected", remote=remote, path=path, status=404)
        await request.reject(404, body=f"no websocket endpoint at {path}\n".encode())
        return None
    if (over := refusal()) is not None:
        log.warning("peer_handshake_rejected", remote=remote, status=503, reason=over)
        await request.reject(503, body=f"{over}\n".encode())
        return None
    return await request.accept()
