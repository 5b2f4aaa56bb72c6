"""A peer's end of the p2p transport by hand, for tests that speak the protocol themselves
(to misbehave, relay, or check what a node sends): TLS 1.3 as a node speaks it, then the
websocket, with the connection's channel binding for :func:`~iomtnode.p2p.handshake.make_auth`.
"""

from __future__ import annotations

import functools
import ssl

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

from iomtnode.p2p.hostconfig import P2P_PATH
from iomtnode.p2p.tls import TlsTransport, client_context
from iomtnode.p2p.transport import Connection, TcpTransport


@functools.cache
def _tls() -> TlsTransport:
    return TlsTransport(TcpTransport())


def ssl_context() -> ssl.SSLContext:
    """For ``open_websocket_url("wss://...", ssl_context=ssl_context())``: any certificate."""
    return client_context()


async def secure(stream: trio.abc.Stream, remote: str = "10.0.0.2:7546", *,
                 outbound: bool = True) -> Connection:
    """``stream`` secured as a node would: TLS client (``outbound``) or server, with its
    binding. A server end presents this process's one fake-peer certificate."""
    return await _tls().secure(stream, remote, outbound=outbound)


async def open_p2p(nursery: trio.Nursery, host: str, port: int, *, path: str = P2P_PATH,
                   **ws_options: int) -> tuple[WebSocketConnection, bytes]:
    """A websocket to a node's p2p port over TLS (TCP), upgraded, no handshake yet; and the
    connection's channel binding."""
    stream = await trio.open_tcp_stream(host, port)
    try:
        conn = await secure(stream, f"{host}:{port}")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    ws = await wrap_client_stream(nursery, conn.stream, host, path, **ws_options)
    return ws, conn.binding or b""
