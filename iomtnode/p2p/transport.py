"""How a node listens and dials: a :class:`Transport` hands out trio Streams and secures them.

The host (and the client API) run their protocols on any ``trio.abc.Stream``; the transport
decides where the streams come from, and :meth:`Transport.secure` turns one into a
:class:`Connection` for the p2p handshake: the stream to speak on (encrypted) and its channel
binding, a value both ends of this one connection share and no other connection has, which
the handshake signs (:mod:`.handshake`). The host never knows how a transport secures.

:class:`TcpTransport` is the network's plain TCP: keepalive and ``TCP_USER_TIMEOUT`` on every
socket when asked, so the kernel notices a dead link too; it secures nothing (the client API
runs on it). :class:`~.tls.TlsTransport` is the peers' transport: TCP with TLS 1.3. A test
gives its nodes another transport (memory streams between nodes in one process, with a random
binding shared by both ends; see ``tests/node/memnet.py``), so N real nodes run under a
virtual clock.

Addresses are ``"host:port"`` strings; a transport reports the port it bound (port 0: one it
picked) and names the other end of an accepted stream ``"ip:port"``.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from ..config import parse_hostport

KEEPALIVE_IDLE_S = 5  # TCP keepalive: first probe after this much silence ...
KEEPALIVE_INTERVAL_S = 2  # ... then one probe this often ...
KEEPALIVE_PROBES = 3  # ... and the link is dead after this many unanswered

StreamHandler = Callable[[trio.abc.Stream, str], Awaitable[None]]  # (stream, remote "ip:port")


@dataclass(frozen=True, slots=True)
class Connection:
    """A connection secured for the p2p handshake (see :meth:`Transport.secure`)."""

    stream: trio.abc.Stream  # speak on this one (the transport's stream may sit below it)
    binding: bytes | None  # the channel binding; None: the connection is not encrypted
    remote: str  # the other end: "ip:port" of an accepted connection, the address dialed
    outbound: bool  # this end dialed (for TLS: it is the client, the other end the server)


class ChannelError(Exception):
    """Securing a connection failed or timed out; the message says why."""


class ListenError(OSError):
    """Binding a listener failed: the message names the address and the reason (the
    kernel's own error names neither which listener nor which address)."""


class Transport(Protocol):
    """Where streams come from: listen on an address, dial one."""

    async def listen(self, host: str, port: int, handler: StreamHandler,
                     handler_nursery: trio.Nursery, *,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind ``host:port``, call ``task_status.started(port bound)``, then start
        ``handler(stream, remote)`` in ``handler_nursery`` for every connection, until
        cancelled (the connections outlive the listener).

        Resource handling: the listener is closed before this returns.
        Error handling: binding fails with :class:`ListenError` (an OSError naming
        ``host:port``) before ``started``.
        """

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """A stream to the listener at ``host:port``; raises OSError if unreachable."""

    async def secure(self, stream: trio.abc.Stream, remote: str, *,
                     outbound: bool) -> Connection:
        """``stream`` (from :meth:`listen`'s handler, or :meth:`connect` when ``outbound``)
        secured for the handshake, in bounded time.

        Error handling: raises :class:`ChannelError` with the reason; the caller closes
        ``stream``.
        """


class TcpTransport:
    """TCP sockets; with ``tcp_user_timeout_ms`` every socket gets keepalive and that
    ``TCP_USER_TIMEOUT`` (see :func:`tune_socket`)."""

    def __init__(self, tcp_user_timeout_ms: int | None = None) -> None:
        self.tcp_user_timeout_ms = tcp_user_timeout_ms

    async def listen(self, host: str, port: int, handler: StreamHandler,
                     handler_nursery: trio.Nursery, *,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise ListenError(exc.errno, f"cannot listen on {format_address(host, port)}: "
                                         f"{exc.strerror or exc}") from exc
        try:
            task_status.started(listeners[0].socket.getsockname()[1])

            async def accepted(stream: trio.SocketStream) -> None:
                try:
                    self._tune(stream)
                    ip, remote_port, *_ = stream.socket.getpeername()
                except OSError:  # reset before we got to it
                    await trio.aclose_forcefully(stream)
                    return
                await handler(stream, format_address(ip, remote_port))

            await trio.serve_listeners(accepted, listeners, handler_nursery=handler_nursery)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        stream = await trio.open_tcp_stream(host, port)
        self._tune(stream)
        return stream

    async def secure(self, stream: trio.abc.Stream, remote: str, *,
                     outbound: bool) -> Connection:
        """Plain TCP is not encrypted: the connection has no channel binding."""
        await trio.lowlevel.checkpoint()
        return Connection(stream, None, remote, outbound)

    def _tune(self, stream: trio.SocketStream) -> None:
        if self.tcp_user_timeout_ms is not None:
            tune_socket(stream, self.tcp_user_timeout_ms)


def tune_socket(stream: trio.SocketStream, user_timeout_ms: int) -> None:
    """Turn on TCP keepalive and set ``TCP_USER_TIMEOUT`` where the platform has them."""
    sock = stream.socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_PROBES), ("TCP_USER_TIMEOUT", user_timeout_ms)):
        if hasattr(socket, name):  # Linux has all four; others have some
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` of a peer to dial -> ``(host, port)``; raises
    ValueError (a port of 0 cannot be dialed)."""
    host, port = parse_hostport(address)
    if port == 0:
        raise ValueError(f"an address to dial needs a port, got {address!r}")
    return host, port


def format_address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def ip_of(remote: str) -> str:
    """The IP (or host) part of ``"ip:port"``; anything else is taken whole."""
    try:
        return split_address(remote)[0]
    except ValueError:
        return remote
