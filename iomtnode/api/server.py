"""The client API server: JSON-RPC 2.0 over websocket at ``/api/v1``, a thin trio shell.

Per connection there is one handler task reading messages and answering them in order (a slow
method delays only its own client), one writer task draining a bounded outbox, and the tasks
that methods start with ``Connection.start_soon`` (subscriptions). Text frames go to
:class:`~iomtnode.api.jsonrpc.Dispatcher`; binary frames (compact msgpack from devices) go to the
``binary_handler`` and its reply goes back as a binary frame.

Subscriptions: a method that declares a ``conn`` parameter receives the :class:`Connection` and
may start a task that pushes notifications, e.g.::

    async def subscribe_blocks(conn: Connection) -> str:
        async def forward() -> None:
            async for block in chain.subscribe():  # a bounded channel of the chain's
                await conn.notify("block", {"subscription": "blocks", "block": ...})
        conn.start_soon(forward)
        return "blocks"

Resource handling: at most ``max_connections`` connections (more are refused with HTTP 503); a
frame over ``max_message_bytes`` closes that connection with 1009; a client that does not read
its notifications fast enough is disconnected with 1008 instead of making the node wait.

Error handling: bad input is answered with a JSON-RPC error and the connection goes on. A bug
(an exception from the binary handler or from a task a method started) is logged with its
traceback (``api_connection_failed``) and closes that connection with 1011; other connections
and the node carry on.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import structlog
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from ..p2p.transport import TcpTransport, Transport
from .auth import ConnectionAuth
from .jsonrpc import INVALID_REQUEST, Dispatcher, Guard, Methods, RpcError, encode_error
from .jsonrpc import encode_notification as _encode_notification
from .tls import ApiTls, tls_handshake

log = structlog.get_logger(__name__)

API_PATH = "/api/v1"
BinaryHandler = Callable[[bytes], Awaitable[bytes | None]]
# On shutdown trio-websocket's reader task is cancelled with ours, so the client's closing reply
# can never be read: wait only long enough to write the 1001 frame, then close the socket.
SHUTDOWN_CLOSE_S = 0.1
RECEIVE_BUFFER_BYTES = 256 * 1024  # read from a client's socket at once (trio-websocket:
# 4 KiB, so a client's 0.5 MB batch of readings took 128 reads and frame-parser passes)
_BINARY_REFUSED = encode_error(RpcError(INVALID_REQUEST, "binary frames are not accepted here"))


@dataclass(frozen=True, slots=True)
class ApiServerConfig:
    """Where the API listens, and its limits."""

    host: str  # an address; with port 0 a name like "localhost" may bind ports that differ
    port: int  # 0: the OS picks one; ``run`` reports it
    max_message_bytes: int = 4 * 1024 * 1024  # trio-websocket's hard cap (len(): chars for text)
    max_connections: int = 256  # more handshakes are refused with HTTP 503
    message_queue_size: int = 4  # received frames buffered per connection before TCP backpressure
    outbox_size: int = 64  # replies + notifications queued per connection; full -> client dropped
    connect_timeout_s: float = 10.0  # a client must finish the HTTP handshake within this
    close_timeout_s: float = 5.0  # waiting for the closing handshake, then the socket is closed


@dataclass(frozen=True, slots=True)
class ApiStats:
    """The API server's figures at one moment (metrics)."""

    connections: int  # open now (handshake accepted or under way)
    connections_accepted: int  # since the start
    connections_refused: int  # since the start: max_connections reached (HTTP 503)


class Connection:
    """One client connection, as a method that declares a ``conn`` parameter sees it."""

    def __init__(self, conn_id: int, remote: str, outbox: trio.MemorySendChannel[str | bytes],
                 scope: trio.CancelScope, *, binding: bytes = b"") -> None:
        """``binding``: the connection's TLS channel binding (empty without TLS)."""
        self.id = conn_id
        self.remote = remote
        self.auth = ConnectionAuth(binding)  # the keys this connection has proven (api/auth.py)
        self._outbox = outbox
        self._scope = scope
        self._nursery: trio.Nursery | None = None  # set while the connection runs
        self._pending: list[Callable[[], Awaitable[None]]] | None = None  # during a request
        self.close_code = 1000
        self.close_reason: str | None = None

    @property
    def proven_keys(self) -> frozenset[bytes]:
        """The public keys this connection has proven (empty: an unauthenticated client)."""
        return self.auth.keys

    @property
    def closed(self) -> bool:
        """Whether the connection is closing or closed; notifications are dropped then."""
        return self._scope.cancel_called

    def start_soon(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn(*args)`` for as long as the connection lives; cancelled when it closes.

        Called by a method, it starts after the method's reply has been queued, so the client sees
        that reply (e.g. a subscription id) before any notification the task sends. An exception
        from it closes the connection with 1011 (see the module docstring). On a closed
        connection it is not started.
        """
        task = partial(fn, *args)
        if self._pending is not None:
            self._pending.append(task)
        elif self._nursery is not None and not self.closed:
            self._nursery.start_soon(task)

    async def _reply(self, reply: str | bytes | None) -> None:
        """Queue the reply to a request, then start the tasks its method asked for."""
        assert self._nursery is not None and self._pending is not None
        if reply is not None:
            await self._outbox.send(reply)  # a client that does not read its replies waits here
        for task in self._pending:
            self._nursery.start_soon(task)
        self._pending = None

    async def notify(self, method: str, params: Any) -> bool:
        """Queue the notification ``{"method": method, "params": params}``; never waits for the
        client. Returns False if it was dropped because the connection is closed or closing.

        If the outbox is full the client is too slow: the connection is closed with 1008 and
        every task started with ``start_soon`` is cancelled (the caller too, if it is one).
        """
        await trio.lowlevel.checkpoint()
        if self.closed:
            return False
        try:
            self._outbox.send_nowait(_encode_notification(method, params))
        except trio.WouldBlock:
            log.warning("api_client_too_slow", conn=self.id, method=method)
            self.close(1008, "client too slow: notification queue full")
            return False
        return True

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the connection soon with ``code`` and ``reason``; never waits."""
        if not self.closed:
            self.close_code, self.close_reason = code, reason
            self._scope.cancel()


class ApiServer:
    """Serves the client API; see the module docstring."""

    def __init__(
        self,
        config: ApiServerConfig,
        methods: Methods,
        *,
        admin_methods: Methods | None = None,
        admin_token: str | None = None,
        binary_handler: BinaryHandler | None = None,
        transport: Transport | None = None,
        guard: Guard | None = None,
        tls: ApiTls | None = None,
    ) -> None:
        """``transport`` (default: TCP) gives the listener's streams; ``guard`` says who may
        call each method (:mod:`.access`); with ``tls`` every connection speaks TLS 1.3."""
        self.config = config
        self._transport: Transport = TcpTransport() if transport is None else transport
        self._dispatcher = Dispatcher(methods, admin_methods=admin_methods,
                                      admin_token=admin_token, guard=guard)
        self._tls = tls
        self._binary_handler = binary_handler
        self._connections = 0
        self._accepted = 0
        self._refused = 0
        self._ids = itertools.count(1)

    def stats(self) -> ApiStats:
        """The server's figures now."""
        return ApiStats(self._connections, self._accepted, self._refused)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, call ``task_status.started(port)`` with the port bound, serve until cancelled.

        Never returns unless cancelled; open connections are closed with 1001 on the way out.
        """
        cfg = self.config
        async with trio.open_nursery() as nursery:
            port = await nursery.start(self._transport.listen, cfg.host, cfg.port, self._accept,
                                       nursery)
            log.info("api_listening", host=cfg.host, port=port, path=API_PATH)
            task_status.started(port)

    async def _accept(self, stream: trio.abc.Stream, remote: str) -> None:
        """One connection: the TLS and HTTP handshakes within ``connect_timeout_s``, then the
        client."""
        cfg = self.config
        try:
            async with trio.open_nursery() as nursery:  # for trio-websocket's reader task
                request = None
                with trio.move_on_after(cfg.connect_timeout_s):
                    if self._tls is not None:
                        secure = await tls_handshake(stream, self._tls, remote)
                        if secure is None:
                            return
                        stream = secure  # closed (forcefully) below, with the socket under it
                    request = await wrap_server_stream(
                        nursery, stream, message_queue_size=cfg.message_queue_size,
                        max_message_size=cfg.max_message_bytes,
                        receive_buffer_size=RECEIVE_BUFFER_BYTES)
                if request is not None:
                    await self._handle_request(request, remote)
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle_request(self, request: WebSocketRequest, remote: str) -> None:
        path = urlsplit(request.path).path
        try:
            if path != API_PATH:
                log.debug("api_handshake_rejected", remote=remote, path=path, status=404)
                await request.reject(404, body=f"no websocket endpoint at {path}\n".encode())
                return
            if self._connections >= self.config.max_connections:
                log.warning("api_handshake_rejected", remote=remote, status=503,
                            reason="max_connections reached", max=self.config.max_connections)
                self._refused += 1
                await request.reject(503, body=b"too many connections\n")
                return
            self._connections += 1
            try:
                ws = await request.accept()
                self._accepted += 1
                await self._serve(ws, next(self._ids), remote)
            finally:
                self._connections -= 1
        except ConnectionClosed:  # the client left during the handshake
            log.debug("api_handshake_failed", remote=remote, path=path)

    async def _serve(self, ws: WebSocketConnection, conn_id: int, remote: str) -> None:
        with structlog.contextvars.bound_contextvars(conn=conn_id, remote=remote):
            await self._serve_bound(ws, conn_id, remote)

    async def _serve_bound(self, ws: WebSocketConnection, conn_id: int, remote: str) -> None:
        log.debug("api_connection_opened")
        outbox, outbox_rx = trio.open_memory_channel[str | bytes](self.config.outbox_size)
        scope = trio.CancelScope()
        conn = Connection(conn_id, remote, outbox, scope,
                          binding=b"" if self._tls is None else self._tls.binding)
        code, reason = 1001, "server shutting down"  # unless the connection ends by itself
        close_timeout_s = SHUTDOWN_CLOSE_S
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    conn._nursery = nursery
                    nursery.start_soon(self._write, ws, outbox_rx, conn)
                    await self._read(ws, conn)
            code, reason = conn.close_code, conn.close_reason
            close_timeout_s = self.config.close_timeout_s
        except Exception:
            log.exception("api_connection_failed")
            code, reason = 1011, "internal error"
            close_timeout_s = self.config.close_timeout_s
        finally:
            conn.close(code, reason)  # late notify() calls are dropped, not queued
            closed_by_client = ws.closed  # or by trio-websocket itself (1009, 1006)
            with trio.move_on_after(close_timeout_s, shield=True):
                await ws.aclose(code, reason)
            if closed_by_client is not None:
                code, reason = closed_by_client.code, closed_by_client.reason
            log.debug("api_connection_closed", code=code, reason=reason,
                      by="client" if closed_by_client else "server")

    async def _read(self, ws: WebSocketConnection, conn: Connection) -> None:
        """Answer each message in order; end the connection when the client closes."""
        try:
            while True:
                message = await ws.get_message()
                conn._pending = []  # start_soon() from here on waits for the reply
                reply: str | bytes | None
                if isinstance(message, str):
                    reply = await self._dispatcher.handle_text(message, conn=conn)
                elif self._binary_handler is None:
                    reply = _BINARY_REFUSED
                else:
                    reply = await self._binary_handler(message)
                await conn._reply(reply)
        except ConnectionClosed as exc:
            log.debug("api_client_closed", close=str(exc.reason))
            conn.close()

    async def _write(self, ws: WebSocketConnection, outbox: trio.MemoryReceiveChannel[str | bytes],
                     conn: Connection) -> None:
        """The connection's one writer: sends queued replies and notifications in order."""
        try:
            async for message in outbox:
                await ws.send_message(message)
        except ConnectionClosed as exc:
            log.debug("api_send_failed", close=str(exc.reason))
            conn.close()
