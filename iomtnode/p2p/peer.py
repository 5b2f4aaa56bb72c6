"""One connection to a peer: its handshake (:func:`authenticate`), then a :class:`Peer` with a
bounded send queue, one writer, one reader and pings.

A :class:`Peer` is made by :class:`~iomtnode.p2p.host.Host` once the handshake has passed, and
lives until :meth:`Peer.run` returns. Three tasks serve it:

- the reader takes frames in order, decodes them, answers :class:`Ping` itself, records
  :class:`Pong`, and hands every other message to the handler, one at a time (no task per
  message: a handler that takes its time delays only this peer, and TCP pushes back on it);
- the writer drains the send queue to the websocket; :meth:`Peer.send` never waits, and a peer
  whose queue is full is too slow and is disconnected ("send queue full");
- the pinger sends a :class:`Ping` every ``ping_interval_s``; a peer from which nothing at all
  arrived for ``missed_pings`` intervals is dropped ("ping timeout"). A handler must therefore
  not hold the reader for that long: long work belongs on a bounded channel of its own.

A frame that is not a valid message costs the peer points (through the host's scoreboard;
what each kind costs: :mod:`.faults`); the first of each kind is logged (``peer_misbehaved``),
and reading goes on unless the peer is banned for it, or the websocket layer ended the
connection on it (an oversized frame, broken framing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import structlog
import trio
from trio_websocket import CloseReason, ConnectionClosed, WebSocketConnection

from ..core.crypto import SigningKey
from . import faults, score
from .faults import Fault
from .handshake import check_auth, check_hello, make_auth
from .messages import Auth, Hello, Message, Ping, Pong, encode_message, message_name
from .transport import Connection

log = structlog.get_logger(__name__)

SEND_QUEUE_MESSAGES = 1024  # frames queued for one peer; full -> the peer is too slow, dropped
SEND_QUEUE_BYTES = 32 * 1024 * 1024  # ... and bytes queued for one peer (a few blocks)
PING_INTERVAL_S = 2.0  # a Ping this often ...
MISSED_PINGS = 3  # ... and a peer silent for this many intervals is dead
CLOSE_TIMEOUT_S = 2.0  # waiting for the peer's closing frame, then the stream is dropped
# On shutdown the websocket's reader task is cancelled with ours, so the peer's closing reply can
# never be read: wait only long enough to write our closing frame.
SHUTDOWN_CLOSE_S = 0.1

Encoded = tuple[str, bytes]  # (message kind name, frame): encode once, send to many
MessageHandler = Callable[["Peer", Message], Awaitable[None]]
Penalize = Callable[["Peer", int, str], bool]  # (peer, points, reason) -> banned


_M = TypeVar("_M", Hello, Auth)


async def authenticate(ws: WebSocketConnection, key: SigningKey, ours: Hello, record: bytes,
                       conn: Connection, admit: Callable[[bytes], object]) -> tuple[Hello, Auth]:
    """Run the handshake (see :mod:`.handshake`) on an open websocket over ``conn``; return the
    peer's Hello and Auth once both check out.

    The Auths are bound to ``conn.binding`` and each side's end of it (an unencrypted
    connection is refused after the version check). ``admit(node_id)`` runs before our Auth
    is sent and refuses a node by raising HandshakeError, so a node refused there never
    completes the handshake. ``conn.remote`` is sent as the address we observe of the peer.
    Raises HandshakeError (we refuse; the message is the reason; a
    :class:`~.faults.HandshakeFrameError` for a frame that is not the message expected) or
    ConnectionClosed (the peer closed, e.g. refused us).
    """
    await ws.send_message(encode_message(ours))
    theirs = await _receive(ws, Hello)
    check_hello(theirs, ours, conn.binding)
    assert conn.binding is not None  # check_hello refuses a connection without one
    admit(theirs.node_id)
    auth = make_auth(key, ours.chain_id, ours, theirs, conn.binding, conn.outbound, conn.remote,
                     record)
    await ws.send_message(encode_message(auth))
    their_auth = await _receive(ws, Auth)
    check_auth(their_auth, ours, theirs, conn.binding, conn.outbound)
    return theirs, their_auth


async def _receive(ws: WebSocketConnection, expected: type[_M]) -> _M:
    msg = faults.read_frame(await ws.get_message())
    if type(msg) is Fault:
        raise faults.HandshakeFrameError(msg)
    if not isinstance(msg, expected):
        raise faults.HandshakeFrameError(faults.unexpected(expected.__name__, message_name(msg)))
    return msg


def encode(msg: Message) -> Encoded:
    """``msg`` as a frame ready for :meth:`Peer.send`."""
    return message_name(msg), encode_message(msg)


def describe_close(reason: CloseReason | None) -> str:
    """A disconnect reason from a websocket close (``"connection closed (1008: banned)"``)."""
    if reason is None:
        return "connection closed"
    return f"connection closed ({reason.code}{': ' + reason.reason if reason.reason else ''})"


async def close_websocket(ws: WebSocketConnection, stream: trio.abc.AsyncResource, code: int,
                          reason: str | None, timeout_s: float) -> None:
    """Close ``ws`` with ``code`` and ``reason``, then drop ``stream``; never hangs.

    Waits at most ``timeout_s`` for the closing handshake (shielded from cancellation, so it also
    runs on the way out of a cancelled task), then closes the transport stream whatever state
    the websocket is in: a close on a dead or stalled link takes ``timeout_s`` and no longer.
    """
    with trio.move_on_after(timeout_s, shield=True):
        await ws.aclose(code, reason)
    await trio.aclose_forcefully(stream)


@dataclass(slots=True)
class Traffic:
    """Messages and bytes (frame sizes) of one kind, in and out."""

    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0


class Counters:
    """Traffic per message kind (``message_name``; ``"invalid"`` for frames that did not
    decode). The kinds are a small fixed set, so this stays small."""

    def __init__(self) -> None:
        self._kinds: dict[str, Traffic] = {}

    def received(self, kind: str, nbytes: int) -> None:
        traffic = self._kinds.setdefault(kind, Traffic())
        traffic.messages_in += 1
        traffic.bytes_in += nbytes

    def sent(self, kind: str, nbytes: int) -> None:
        traffic = self._kinds.setdefault(kind, Traffic())
        traffic.messages_out += 1
        traffic.bytes_out += nbytes

    def __getitem__(self, kind: str) -> Traffic:
        """A copy of the traffic of ``kind`` (zeros if none)."""
        return replace(self._kinds.get(kind, Traffic()))

    def snapshot(self) -> dict[str, Traffic]:
        """A copy of the traffic of every kind seen."""
        return {kind: replace(t) for kind, t in self._kinds.items()}


class Peer:
    """One authenticated connection to the node ``node_id``.

    ``remote`` is the address of the other end as this node sees it (``"ip:port"``, or the
    address dialed); ``observed_address`` is what the peer says it sees of this node;
    ``record`` is the peer's signed :class:`~iomtnode.p2p.records.PeerRecord` bytes from its
    Auth (unverified here: discovery decodes and checks it); ``hello`` is its Hello (its head at
    connect time). Times are ``trio.current_time()``.
    """

    def __init__(
        self,
        ws: WebSocketConnection,
        stream: trio.abc.AsyncResource,
        *,
        hello: Hello,
        remote: str,
        outbound: bool,
        observed_address: str,
        record: bytes,
        send_queue: int = SEND_QUEUE_MESSAGES,
        ping_interval_s: float = PING_INTERVAL_S,
        missed_pings: int = MISSED_PINGS,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
        totals: Counters | None = None,
        logger: Any = None,
    ) -> None:
        self.node_id = hello.node_id
        self.hello = hello
        self.remote = remote
        self.outbound = outbound
        self.observed_address = observed_address
        self.record = record
        self.connected_at = trio.current_time()
        self.last_received_at = self.connected_at  # the Auth just arrived
        self.rtt_s: float | None = None  # round trip of the latest answered Ping
        self.useful_at: dict[str, float] = {}  # slots.USEFUL_KINDS -> last delivered (eviction)
        self.counters = Counters()
        self.close_reason: str | None = None
        self.close_code = 1000
        self.log = (logger or log).bind(peer=self.short_id, remote=remote)
        self._ws = ws
        self._stream = stream
        self._totals = totals
        self._ping_interval_s = ping_interval_s
        self._missed_pings = missed_pings
        self._close_timeout_s = close_timeout_s
        self._outbox, self._outbox_rx = trio.open_memory_channel[Encoded](send_queue)
        self._scope = trio.CancelScope()
        self._ping_nonce = 0
        self._ping_sent_at = 0.0
        self._logged: set[str] = set()  # misbehaviour kinds already logged
        self.logged_reasons: set[str] = set()  # penalty kinds the host already logged
        self._queued_bytes = 0

    @property
    def short_id(self) -> str:
        return self.node_id.hex()[:16]

    @property
    def queued_bytes(self) -> int:
        """Bytes queued to this peer and not written yet."""
        return self._queued_bytes

    @property
    def closed(self) -> bool:
        """Whether the connection is closing or closed; sends are dropped then."""
        return self.close_reason is not None

    def alive(self, now: float, window_s: float) -> bool:
        """Whether a frame arrived from the peer within the last ``window_s`` seconds."""
        return not self.closed and now - self.last_received_at <= window_s

    def __repr__(self) -> str:
        direction = "out" if self.outbound else "in"
        return f"Peer({self.short_id}, {self.remote}, {direction})"

    def send(self, message: Message | Encoded) -> bool:
        """Queue ``message`` (a message, or an :data:`Encoded` pair made once for many peers).

        Never waits. Returns False if it was dropped: the peer is closing, or its send queue was
        full, in which case the peer is too slow and is disconnected ("send queue full").
        """
        if self.closed:
            return False
        frame = message if isinstance(message, tuple) else encode(message)
        if self._queued_bytes + len(frame[1]) > SEND_QUEUE_BYTES:
            self.log.warning("peer_too_slow", queued_bytes=self._queued_bytes)
            self.close("send queue full (bytes)", code=1008)
            return False
        try:
            self._outbox.send_nowait(frame)
        except trio.WouldBlock:
            self.log.warning("peer_too_slow", queued=self._outbox.statistics().current_buffer_used)
            self.close("send queue full", code=1008)
            return False
        self._queued_bytes += len(frame[1])
        return True

    def close(self, reason: str, *, code: int = 1000) -> None:
        """Close the connection soon with ``reason`` (sent to the peer); never waits.

        The first reason given wins. :meth:`run` then closes the websocket and returns.
        """
        if self.close_reason is None:
            self.close_reason, self.close_code = reason, code
            self._scope.cancel()

    async def run(self, on_message: MessageHandler, penalize: Penalize) -> str:
        """Serve the connection until it closes; return the reason it closed.

        ``on_message(peer, msg)`` gets every message but Ping and Pong, in order.
        ``penalize(peer, points, reason)`` charges a bad frame and returns True when the peer is
        banned for it (the caller has then closed it).

        Resource handling: before it returns (or raises, when cancelled) the websocket is closed
        within ``close_timeout_s`` and the stream dropped. Cancelled from outside (the node is
        stopping) the peer is told "node shutting down" (1001).

        Error handling: an exception from ``on_message`` is a bug; it is logged with its
        traceback (``peer_failed``) and closes this connection with 1011; it does not propagate,
        so one peer cannot take the node down.
        """
        timeout_s = self._close_timeout_s
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write)
                    nursery.start_soon(self._keep_alive)
                    await self._read(on_message, penalize)
        except Exception:
            self.log.exception("peer_failed")
            self.close("internal error", code=1011)
        finally:
            if self.close_reason is None:  # cancelled from outside
                self.close("node shutting down", code=1001)
                timeout_s = SHUTDOWN_CLOSE_S
            await close_websocket(self._ws, self._stream, self.close_code, self.close_reason,
                                  timeout_s)
        assert self.close_reason is not None
        return self.close_reason

    async def _read(self, on_message: MessageHandler, penalize: Penalize) -> None:
        while not self.closed:
            try:
                frame = await self._ws.get_message()
            except ConnectionClosed as exc:  # a frame the websocket refused costs its sender
                if (fault := faults.of_close(exc.reason)) is not None:
                    self._misbehaved(penalize, fault)
                self.close(describe_close(exc.reason))
                return
            now = self.last_received_at = trio.current_time()
            msg = faults.read_frame(frame)
            if type(msg) is Fault:
                self._count_in("invalid", len(frame))
                self._misbehaved(penalize, msg)
                continue
            self._count_in(message_name(msg), len(frame))
            match msg:
                case Ping(nonce=nonce):
                    self.send(Pong(nonce))
                case Pong(nonce=nonce):
                    if nonce == self._ping_nonce:
                        self.rtt_s = now - self._ping_sent_at
                case Hello() | Auth():
                    self._misbehaved(penalize, Fault("invalid_message", score.INVALID_MESSAGE,
                                                     f"{message_name(msg)} after the handshake"))
                case _:
                    await on_message(self, msg)

    def _misbehaved(self, penalize: Penalize, fault: Fault) -> None:
        if fault.reason not in self._logged:
            self._logged.add(fault.reason)
            self.log.warning("peer_misbehaved", reason=fault.reason, detail=fault.detail[:200])
        penalize(self, fault.points, fault.penalty_reason)

    async def _write(self) -> None:
        """The connection's one writer: sends queued frames in order."""
        async for kind, frame in self._outbox_rx:
            self._queued_bytes -= len(frame)
            try:
                await self._ws.send_message(frame)
            except ConnectionClosed as exc:
                self.close(describe_close(exc.reason))
                return
            self.counters.sent(kind, len(frame))
            if self._totals is not None:
                self._totals.sent(kind, len(frame))

    async def _keep_alive(self) -> None:
        """Ping every interval; close the peer once it has been silent for too long."""
        interval = self._ping_interval_s
        silence_s = interval * self._missed_pings
        next_ping = trio.current_time() + interval
        while True:
            await trio.sleep_until(min(next_ping, self.last_received_at + silence_s))
            now = trio.current_time()
            if now >= self.last_received_at + silence_s:
                self.close("ping timeout", code=1001)
                return
            if now >= next_ping:
                self._ping_nonce += 1
                self._ping_sent_at = now
                self.send(Ping(self._ping_nonce))
                next_ping = now + interval

    def _count_in(self, kind: str, nbytes: int) -> None:
        self.counters.received(kind, nbytes)
        if self._totals is not None:
            self._totals.received(kind, nbytes)
