"""An in-memory network: real nodes in one process reach each other over memory streams.

:class:`MemoryNetwork` hands each node a :class:`MemoryTransport` (``Node(..., transport=)``):
listening registers ``host:port`` on the network (port 0: the next free one), dialing an
address connects a ``trio.testing.memory_stream_pair`` to its listener. No socket is opened, so
the nodes run under ``autojump_clock``: a virtual clock that jumps whenever every task waits.
Addresses are names; an unknown one refuses the connection as TCP would.

Nothing is encrypted, but each connection has a channel binding as a TLS connection would: a
random value both of its ends get (:class:`BoundStream`) and no other connection has, so the
handshake is bound to it and a relay between two nodes (two connections) fails as over TLS.
"""

from __future__ import annotations

import errno
import itertools
import os

import trio
from trio.testing import memory_stream_pair

from iomtnode.p2p.messages import CHANNEL_BINDING_BYTES
from iomtnode.p2p.transport import Connection, StreamHandler

FIRST_PORT = 40_000  # ports the network hands out (listeners and dialing ends)


class MemoryNetwork:
    """Listeners by ``(host, port)``; see the module docstring."""

    def __init__(self) -> None:
        self._listeners: dict[tuple[str, int], tuple[StreamHandler, trio.Nursery]] = {}
        self._ports = itertools.count(FIRST_PORT)

    def listening(self) -> set[str]:
        """The ``"host:port"`` of every listener now."""
        return {f"{host}:{port}" for host, port in self._listeners}

    def transport(self, ip: str = "127.0.0.1") -> MemoryTransport:
        """A transport whose dials come from ``ip`` (what the listener sees as remote)."""
        return MemoryTransport(self, ip)

    async def connect(self, source_ip: str, host: str, port: int) -> trio.abc.Stream:
        """A stream to the listener at ``host:port``, from ``source_ip``; OSError if none."""
        await trio.lowlevel.checkpoint()
        listener = self._listeners.get((host, port))
        if listener is None:
            raise OSError(errno.ECONNREFUSED, f"nothing listens at {host}:{port}")
        handler, nursery = listener
        ours, theirs = memory_stream_pair()
        binding = os.urandom(CHANNEL_BINDING_BYTES)
        remote = f"{source_ip}:{next(self._ports)}"
        nursery.start_soon(handler, BoundStream(theirs, binding), remote)
        return BoundStream(ours, binding)

    async def listen(self, host: str, port: int, handler: StreamHandler,
                     handler_nursery: trio.Nursery, *,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        key = (host, port or next(self._ports))
        if key in self._listeners:
            raise OSError(errno.EADDRINUSE, f"{host}:{key[1]} is in use")
        self._listeners[key] = (handler, handler_nursery)
        try:
            task_status.started(key[1])
            await trio.sleep_forever()
        finally:
            del self._listeners[key]


class MemoryTransport:
    """One node's end of a :class:`MemoryNetwork` (a :class:`~iomtnode.p2p.transport.Transport`)."""

    def __init__(self, network: MemoryNetwork, ip: str) -> None:
        self.network = network
        self.ip = ip

    async def listen(self, host: str, port: int, handler: StreamHandler,
                     handler_nursery: trio.Nursery, *,
                     task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await self.network.listen(host, port, handler, handler_nursery, task_status=task_status)

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await self.network.connect(self.ip, host, port)

    async def secure(self, stream: trio.abc.Stream, remote: str, *,
                     outbound: bool) -> Connection:
        """A connection of this network is "secured" with the binding both its ends hold."""
        await trio.lowlevel.checkpoint()
        assert isinstance(stream, BoundStream), "not a stream of this network"
        return Connection(stream, stream.binding, remote, outbound)


class BoundStream(trio.abc.Stream):
    """One end of a memory connection, with the connection's channel ``binding``."""

    def __init__(self, stream: trio.abc.Stream, binding: bytes) -> None:
        self.binding = binding
        self._stream = stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()
