"""The client API server: JSON-RPC 2.0 over websocket at ``/api/v1``, a thin trio shell.

Per connection there is one handler task reading messages and answering them in order (a slow
method delays only its own client), one writer task draining a bounded outbox, one task
watching for idleness, and the tasks that methods start with ``Connection.start_subscription``.
Text frames go to :class:`~iomtnode.api.jsonrpc.Dispatcher`; binary frames (compact msgpack
from devices) go to the ``binary_handler`` and its reply goes back as a binary frame.

Subscriptions: a method that declares a ``conn`` parameter receives the :class:`Connection` and
may start a task that pushes notifications, e.g.::

    async def subscribe_blocks(conn: Connection) -> str:
        async def forward() -> None:
            async for block in chain.subscribe():  # a bounded channel of the chain's
                await conn.notify_paced("block", {...})  # waits for the client to read
        conn.start_subscription(forward)  # TOO_MANY_SUBSCRIPTIONS over the connection's limit
        return "blocks"

(:mod:`.subscriptions` has the node's.) When the node shuts down, each subscription's last
words (``subscription_ended``, with where to resume) are sent before the 1001 close if the
client has read everything before them.

Resource handling: at most ``max_connections`` connections (more are refused with HTTP 503) and
``max_connections_per_ip`` from one address (an IPv6 /64 counts as one), counted from the TCP
accept so that handshakes under way count too (more are answered 503 and closed before
anything is read); the HTTP handshake must be done within ``connect_timeout_s``. When full, a
client from an address holding at least two fewer connections than the most crowded address
makes room: that address's longest-silent connection that proved no key the ledger knows
is closed (1013). A frame over
``max_message_bytes`` closes that connection with 1009. Each connection's outbox, idle time,
subscriptions and request rate are bounded as :mod:`iomtnode.api.connection` says: a client
that does not read is disconnected with 1008 instead of making the node wait or hold its
replies.

Error handling: bad input is answered with a JSON-RPC error and the connection goes on; each
refused request (text or binary) is counted and logged once, with the client's address key,
in a bounded number of lines per address (:mod:`.refusals`). A bug
(an exception from the binary handler or from a task a method started) is logged with its
traceback (``api_connection_failed``) and closes that connection with 1011; other connections
and the node carry on.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import structlog
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
)

from ..log import OncePer
from ..p2p.transport import TcpTransport, Transport, ip_of
from ..p2p.upgrade import MALFORMED_REQUEST, upgrade_request
from .connection import (
    IDLE_TIMEOUT_S,
    MAX_SUBSCRIPTIONS,
    OUTBOX_BYTES,
    OUTBOX_MESSAGES,
    REQUEST_BURST,
    REQUESTS_PER_S,
    Connection,
    ConnectionLimits,
    address_key,
)
from .jsonrpc import INVALID_REQUEST, Dispatcher, Guard, Methods, Refused, RpcError, encode_error
from .refusals import RefusalLog
from .tls import ApiTls, tls_handshake

__all__ = ["ApiServer", "ApiServerConfig", "ApiStats", "BinaryHandler", "Connection"]

log = structlog.get_logger(__name__)

API_PATH = "/api/v1"
BinaryHandler = Callable[[bytes, Refused | None], Awaitable[bytes | None]]  # (frame, told of
# its refusals)
# On shutdown trio-websocket's reader task is cancelled with ours, so the client's closing reply
# can never be read: wait only long enough to write the 1001 frame, then close the socket.
SHUTDOWN_CLOSE_S = 0.1
RECEIVE_BUFFER_BYTES = 256 * 1024  # read from a client's socket at once (trio-websocket:
# 4 KiB, so a client's 0.5 MB batch of readings took 128 reads and frame-parser passes)
MAX_CONNECTIONS = 256  # open connections at most
MAX_CONNECTIONS_PER_IP = 32  # ... from one IP address (handshakes under way count)
EVICTED_CODE = 1013  # "try again later": closed to make room when the server is full
REFUSE_WRITE_S = 1.0  # writing the 503 to a connection over the per-IP limit, at most
REFUSAL_LOG_INTERVAL_S = 10.0  # one api_handshake_rejected line per address and status per this
MAX_LOGGED_ADDRESSES = 4096  # addresses whose last 503 line is remembered
_REFUSED_PER_IP = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                   b"Content-Length: 39\r\n\r\ntoo many connections from this address\n")
_NO_BINARY = RpcError(INVALID_REQUEST, "binary frames are not accepted here")
_BINARY_REFUSED = encode_error(_NO_BINARY)


@dataclass(frozen=True, slots=True)
class ApiServerConfig:
    """Where the API listens, and its limits."""

    host: str  # an address; with port 0 a name like "localhost" may bind ports that differ
    port: int  # 0: the OS picks one; ``run`` reports it
    max_message_bytes: int = 4 * 1024 * 1024  # trio-websocket's hard cap (len(): chars for text)
    max_connections: int = MAX_CONNECTIONS  # more handshakes are refused with HTTP 503
    max_connections_per_ip: int = MAX_CONNECTIONS_PER_IP  # more TCP connections: 503, closed
    message_queue_size: int = 4  # received frames buffered per connection before TCP backpressure
    outbox_size: int = OUTBOX_MESSAGES  # replies + notifications queued per connection ...
    outbox_bytes: int = OUTBOX_BYTES  # ... and their bytes (see api/connection.py)
    idle_timeout_s: float = IDLE_TIMEOUT_S  # nothing received, no subscription: closed
    max_subscriptions: int = MAX_SUBSCRIPTIONS  # per connection
    requests_per_s: float = REQUESTS_PER_S  # per connection without a participant, after ...
    request_burst: int = REQUEST_BURST  # ... a burst of this many requests
    connect_timeout_s: float = 10.0  # a client must finish the HTTP handshake within this
    close_timeout_s: float = 5.0  # waiting for the closing handshake, then the socket is closed

    def connection_limits(self) -> ConnectionLimits:
        """What each connection may hold and do."""
        return ConnectionLimits(self.outbox_size, self.outbox_bytes, self.idle_timeout_s,
                                self.max_subscriptions, self.requests_per_s, self.request_burst)


@dataclass(frozen=True, slots=True)
class ApiStats:
    """The API server's figures at one moment (metrics)."""

    connections: int  # open now (handshake accepted or under way)
    connections_accepted: int  # since the start
    connections_refused: int  # since the start: max_connections or the per-IP limit reached
    requests_refused: Mapping[int, int] = field(default_factory=dict)  # since the start, by
    # JSON-RPC error code (api/refusals.py)


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
        self._per_ip: Counter[str] = Counter()  # TCP connections open now, by address
        self._open: dict[str, dict[int, Connection]] = {}  # served now, by address
        self._accepted = 0
        self._refused = 0
        self._ids = itertools.count(1)
        self._refusals = RefusalLog()
        self._refusal_lines = OncePer(REFUSAL_LOG_INTERVAL_S, MAX_LOGGED_ADDRESSES)  # 400, 503

    def stats(self) -> ApiStats:
        """The server's figures now."""
        return ApiStats(self._connections, self._accepted, self._refused,
                        self._refusals.counts())

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, call ``task_status.started(port)`` with the port bound, serve until cancelled.

        Never returns unless cancelled; open connections are closed with 1001 on the way out.
        """
        cfg = self.config
        async with trio.open_nursery() as nursery:
            await nursery.start(self._refusals.run)
            port = await nursery.start(self._transport.listen, cfg.host, cfg.port, self._accept,
                                       nursery)
            log.info("api_listening", host=cfg.host, port=port, path=API_PATH)
            task_status.started(port)

    async def _accept(self, stream: trio.abc.Stream, remote: str) -> None:
        """One connection: the TLS and HTTP handshakes within ``connect_timeout_s``, then the
        client."""
        cfg = self.config
        ip = address_key(ip_of(remote))
        try:
            if self._per_ip[ip] >= cfg.max_connections_per_ip:
                await self._refuse_per_ip(stream, remote, ip)
                return
            self._per_ip[ip] += 1
            try:
                async with trio.open_nursery() as nursery:  # for trio-websocket's reader task
                    request = None
                    with trio.move_on_after(cfg.connect_timeout_s):
                        if self._tls is not None:
                            secure = await tls_handshake(stream, self._tls, remote)
                            if secure is None:
                                return
                            stream = secure  # closed (forcefully) below, with the socket under it
                        request = await upgrade_request(
                            nursery, stream, message_queue_size=cfg.message_queue_size,
                            max_message_size=cfg.max_message_bytes,
                            receive_buffer_size=RECEIVE_BUFFER_BYTES)
                        if isinstance(request, str):  # why there is no request
                            if request == MALFORMED_REQUEST:
                                self._log_rejected(log.info, remote, ip, 400, reason=request)
                            nursery.cancel_scope.cancel()
                            return
                    if request is not None:
                        await self._handle_request(request, remote, ip)
                    nursery.cancel_scope.cancel()
            finally:
                self._per_ip[ip] -= 1
                if not self._per_ip[ip]:
                    del self._per_ip[ip]
        finally:
            await trio.aclose_forcefully(stream)

    def _log_rejected(self, emit: Callable[..., Any], remote: str, ip: str, status: int,
                      **fields: Any) -> None:
        """``api_handshake_rejected`` through ``emit`` (a level of ``log``), at most once per
        address and status every REFUSAL_LOG_INTERVAL_S, with how many were not logged since."""
        unlogged = self._refusal_lines.unlogged(f"{status} {ip}", trio.current_time())
        if unlogged is not None:
            emit("api_handshake_rejected", remote=remote, status=status, unlogged=unlogged,
                 **fields)

    async def _refuse_per_ip(self, stream: trio.abc.Stream, remote: str, ip: str) -> None:
        """Answer 503 without reading the request (it costs the node one write), then close."""
        self._log_rejected(log.warning, remote, ip, 503, reason="max_connections_per_ip reached",
                           max=self.config.max_connections_per_ip)
        self._refused += 1
        with trio.move_on_after(REFUSE_WRITE_S):
            try:
                await stream.send_all(_REFUSED_PER_IP)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.debug("api_refusal_not_sent", remote=remote)

    async def _handle_request(self, request: WebSocketRequest, remote: str, ip: str) -> None:
        path = urlsplit(request.path).path
        try:
            if path != API_PATH:
                log.debug("api_handshake_rejected", remote=remote, path=path, status=404)
                await request.reject(404, body=f"no websocket endpoint at {path}\n".encode())
                return
            if self._connections >= self.config.max_connections and not self._evict_for(ip):
                self._log_rejected(log.warning, remote, ip, 503, reason="max_connections reached",
                                   max=self.config.max_connections)
                self._refused += 1
                await request.reject(503, body=b"too many connections\n")
                return
            self._connections += 1
            try:
                ws = await request.accept()
                self._accepted += 1
                await self._serve(ws, next(self._ids), remote, ip)
            finally:
                self._connections -= 1
        except ConnectionClosed:  # the client left during the handshake
            log.debug("api_handshake_failed", remote=remote, path=path)

    def _evict_for(self, ip: str) -> bool:
        """When full, make room for a client from ``ip``: close the longest-silent connection
        without a participant's key (:attr:`Connection.participant`) of the address that holds
        the most, if it holds at least two more than ``ip`` does (so a new address gets in
        while any address holds two or more, and eviction never favours an address over one
        as large). Returns whether it did."""
        live = {address: [c for c in conns.values() if not c.closed]
                for address, conns in self._open.items()}  # (only when full: 256 at most)
        crowded = max(live, key=lambda address: len(live[address]), default=None)
        if crowded is None or len(live[crowded]) < len(live.get(ip, ())) + 2:
            return False
        anonymous = [c for c in live[crowded] if not c.participant]  # a fresh key is no one
        if not anonymous:
            return False
        victim = min(anonymous, key=lambda c: c.heard_at)
        log.warning("api_connection_evicted", victim=victim.id, address=crowded,
                    held=len(live[crowded]), newcomer=ip)
        victim.close(EVICTED_CODE, "evicted: the server is full and this address holds the "
                                   "most connections")
        return True

    async def _serve(self, ws: WebSocketConnection, conn_id: int, remote: str, ip: str) -> None:
        with structlog.contextvars.bound_contextvars(conn=conn_id, remote=remote):
            scope = trio.CancelScope()
            conn = Connection(conn_id, remote, self.config.connection_limits(), scope,
                              binding=b"" if self._tls is None else self._tls.binding,
                              refused=self._refusals.client(ip))
            self._open.setdefault(ip, {})[conn_id] = conn
            try:
                await self._serve_bound(ws, conn, scope)
            finally:
                del self._open[ip][conn_id]
                if not self._open[ip]:
                    del self._open[ip]

    async def _serve_bound(self, ws: WebSocketConnection, conn: Connection,
                           scope: trio.CancelScope) -> None:
        log.debug("api_connection_opened")
        code, reason = 1001, "server shutting down"  # unless the connection ends by itself
        close_timeout_s = SHUTDOWN_CLOSE_S
        try:
            with scope:
                await conn.run(ws, partial(self._read, ws, conn))
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
                if code == 1001 and closed_by_client is None:
                    await conn.send_last_words(ws, reason or "server shutting down")
                await ws.aclose(code, reason)
            if closed_by_client is not None:
                code, reason = closed_by_client.code, closed_by_client.reason
            log.debug("api_connection_closed", code=code, reason=reason,
                      by="client" if closed_by_client else "server")

    async def _read(self, ws: WebSocketConnection, conn: Connection) -> None:
        """Answer each message in order; end the connection when the client closes."""
        refused = conn.refused
        try:
            while True:
                message = await ws.get_message()
                await conn.received(message)  # the rate limit; a batch pays for the rest inside
                reply: str | bytes | None
                if isinstance(message, str):
                    reply = await self._dispatcher.handle_text(
                        message, conn=conn, admit=conn.admit_request, refused=refused)
                elif self._binary_handler is None:
                    if refused is not None:
                        refused(None, _NO_BINARY)
                    reply = _BINARY_REFUSED
                else:
                    reply = await self._binary_handler(message, refused)
                await conn.answer(reply)
        except ConnectionClosed as exc:
            log.debug("api_client_closed", close=str(exc.reason))
            conn.close()
