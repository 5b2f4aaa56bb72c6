"""A TCP proxy that delays the bytes flowing toward its node (``tc netem`` is unavailable).

It runs inside a delayed node's namespace::

    ip netns exec P-node2 python -m iomtnode.localnet.delayproxy --delay-ms 50

and nftables (see :mod:`iomtnode.localnet.nft`) redirects the node's p2p connections to it:

- a peer's connection to the node arrives through prerouting: its local address is the
  node's own IP; the bytes peer -> node are delayed;
- the node's own connection to a peer arrives through the output hook: its local address is
  127.0.0.1; the bytes peer -> node (the replies) are delayed.

Either way the proxy reads the original destination (``SO_ORIGINAL_DST``), connects there
with ``SO_MARK`` set (the rules let marked connections pass) and copies both ways, holding
each chunk toward the node until ``delay`` after it arrived. Bytes keep their order.

Resource handling: at most ``MAX_CONNECTIONS`` proxied connections (more are closed at
once); per direction at most ``QUEUE_CHUNKS`` chunks of ``CHUNK_BYTES`` are held, then the
reader waits (TCP backpressure). Closing either end closes the pair.
"""

from __future__ import annotations

import socket
import struct
import sys

import structlog
import trio
import typer

from ..log import configure as configure_logging
from .nft import PROXY_MARK, PROXY_PORT

log = structlog.get_logger(__name__)

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h, at SOL_IP
SO_MARK = 36  # asm-generic/socket.h
MAX_CONNECTIONS = 256  # a localnet node has at most a few dozen p2p connections
CHUNK_BYTES = 65_536
QUEUE_CHUNKS = 64  # per direction: at most 4 MiB held back
CONNECT_TIMEOUT_S = 5.0  # upstream connect; the client is closed if it fails
MAX_DELAY_MS = 10_000.0  # beyond this a p2p peer would be declared dead anyway


def parse_original_dst(raw: bytes) -> tuple[str, int]:
    """``(ip, port)`` from the 16-byte ``struct sockaddr_in`` of ``SO_ORIGINAL_DST``."""
    port, addr = struct.unpack("!2xH4s8x", raw)
    return socket.inet_ntoa(addr), port


def is_outbound(local_ip: str) -> bool:
    """Whether a redirected connection came from the node itself (output hook: the
    redirect targets 127.0.0.1) rather than from a peer (prerouting: the node's IP)."""
    return local_ip.startswith("127.")


async def delayed_copy(src: trio.abc.ReceiveStream, dst: trio.abc.SendStream,
                       delay_s: float) -> None:
    """Copy ``src`` to ``dst``, each chunk sent ``delay_s`` after it was read; on EOF
    half-close ``dst``. Raises when either stream breaks."""
    send, receive = trio.open_memory_channel[tuple[float, bytes]](QUEUE_CHUNKS)

    async def read() -> None:
        async with send:
            while data := await src.receive_some(CHUNK_BYTES):
                await send.send((trio.current_time() + delay_s, data))

    async def write() -> None:
        async with receive:
            async for due, data in receive:
                await trio.sleep_until(due)
                await dst.send_all(data)
        if isinstance(dst, trio.abc.HalfCloseableStream):
            await dst.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        nursery.start_soon(write)


async def open_marked(address: tuple[str, int], mark: int) -> trio.SocketStream:
    """A TCP connection to ``address`` whose packets carry ``mark``."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        with trio.fail_after(CONNECT_TIMEOUT_S):
            await sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


class DelayProxy:
    """The proxy service: ``run`` listens on ``port`` until cancelled."""

    def __init__(self, delay_ms: float, *, port: int = PROXY_PORT, mark: int = PROXY_MARK,
                 host: str = "0.0.0.0") -> None:
        if not 0 <= delay_ms <= MAX_DELAY_MS:
            raise ValueError(f"delay_ms must be between 0 and {MAX_DELAY_MS}")
        self._delay_s = delay_ms / 1000
        self._port, self._mark, self._host = port, mark, host
        self._slots = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        listeners = await trio.open_tcp_listeners(self._port, host=self._host)
        port = listeners[0].socket.getsockname()[1]
        log.info("delay_proxy_listening", port=port, delay_ms=self._delay_s * 1000)
        task_status.started(port)
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, client: trio.SocketStream) -> None:
        async with client:
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                log.warning("delay_proxy_refused", reason="too many connections",
                            limit=MAX_CONNECTIONS)
                return
            try:
                await self._proxy(client)
            finally:
                self._slots.release()

    async def _proxy(self, client: trio.SocketStream) -> None:
        try:
            toward_node = is_outbound(client.socket.getsockname()[0])
            raw = client.socket.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            target = parse_original_dst(raw)
            upstream = await open_marked(target, self._mark)
        except (OSError, trio.TooSlowError) as exc:
            log.info("delay_proxy_upstream_failed", error=str(exc))
            return
        async with upstream:
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(delayed_copy, client, upstream,
                                       0.0 if toward_node else self._delay_s)
                    nursery.start_soon(delayed_copy, upstream, client,
                                       self._delay_s if toward_node else 0.0)
            except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as group:
                log.debug("delay_proxy_closed", reason=str(group.exceptions[0]))


def main(delay_ms: float = typer.Option(..., min=0, max=MAX_DELAY_MS,
                                        help="One-way delay toward the node, milliseconds."),
         port: int = typer.Option(PROXY_PORT, min=1, max=65535, help="Listen port.")) -> None:
    """Delay the TCP connections that nftables redirects here (see the module docs)."""
    configure_logging("info", json=True)
    try:
        trio.run(DelayProxy(delay_ms, port=port).run)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    typer.run(main)
