"""One client connection of the API server: its outbox, its limits and its idle watch.

What a connection may hold and do, each bounded (values in :class:`ConnectionLimits`):

- Outbox: replies and notifications wait in order for the one writer task, at most
  ``outbox_messages`` of them and ``outbox_bytes`` in all (each message is encoded once and its
  length counted until the writer has sent it). A reply waits for room, so a client that does
  not read stops being read; a notification never waits: one that does not fit drops the
  connection (1008, "client too slow"). One message always fits in an empty outbox.
- Idle: a connection that has sent nothing for ``idle_timeout_s`` and holds no subscription is
  closed (1000, "idle"); one that holds subscriptions stays while the client reads. Any
  connection whose writer has been stuck on unread messages for ``idle_timeout_s`` is closed
  (1008, "client not reading"): subscriptions keep a connection only while its client reads.
- Subscriptions: at most ``max_subscriptions`` (``TOO_MANY_SUBSCRIPTIONS`` beyond). A
  subscription that sends more than it is asked for at a time (a replay of stored blocks) sends
  with :meth:`Connection.notify_paced`, which waits while the outbox is half full, so it goes at
  the client's reading pace and leaves room for the notifications that never wait. One that
  says how to resume (its last words) has them sent when the node shuts down, if the outbox is
  empty then (:meth:`Connection.send_last_words`).
- Requests: a client that has proven no key the ledger knows runs at most
  ``requests_per_s`` requests a second after a burst of ``request_burst`` (a message counts
  one more per ``BYTES_PER_REQUEST``: parsing a text message, or admitting the transactions
  of a binary frame, costs the node by the byte); the next request waits for
  its token (the client is slowed, never answered with an error; its further
  messages wait in the socket). A client that proved the key of an authority, an active
  device or the patient of one (:attr:`Connection.participant`) is not rate limited here; a
  key of the client's own making counts for nothing (anyone can make one).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from ..p2p.ratelimit import TokenBucket
from ..p2p.slots import address_key
from ..p2p.transport import ip_of
from .auth import ConnectionAuth
from .jsonrpc import TOO_MANY_SUBSCRIPTIONS, Refused, RpcError
from .jsonrpc import encode_notification as _encode_notification
from .wsframes import send_text

log = structlog.get_logger(__name__)

OUTBOX_MESSAGES = 64  # replies + notifications queued per connection
OUTBOX_BYTES = 8 * 1024 * 1024  # ... and their bytes (a full block's notification: ~0.7 MB)
IDLE_TIMEOUT_S = 300.0  # nothing received and no subscription: closed
MAX_SUBSCRIPTIONS = 8  # subscriptions per connection (each costs every block a send)
REQUESTS_PER_S = 200.0  # a non-participant connection's sustained rate (a load client: 100/s) ...
REQUEST_BURST = 1000  # ... after a burst of this many requests (a batch counts each)
AUDITED_READS_PER_S = 10.0  # reads of patients' records per connection, whoever proved what:
AUDITED_READ_BURST = 100  # each leaves a durable audit record (about 160 bytes, fsynced)
BYTES_PER_REQUEST = 64 * 1024  # a message pays one more request per this many bytes (parsing
# 1 MiB of JSON takes the node 20 to 45 ms; admitting a 1.8 MB binary frame of 10,000 readings
# from an unknown device, refused without a signature check so free to make, about 150 ms)


LastWords = Callable[[str], dict[str, Any]]  # reason -> a subscription_ended's params


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection may hold and do; see the module docstring."""

    outbox_messages: int = OUTBOX_MESSAGES
    outbox_bytes: int = OUTBOX_BYTES
    idle_timeout_s: float = IDLE_TIMEOUT_S
    max_subscriptions: int = MAX_SUBSCRIPTIONS
    requests_per_s: float = REQUESTS_PER_S
    request_burst: int = REQUEST_BURST


class Connection:
    """One client connection, as a method that declares a ``conn`` parameter sees it.

    ``proven_keys`` are the keys the client has proved on this connection (an ``authenticate``
    method adds them); a connection that proved none the ledger knows (:attr:`participant`)
    is rate limited.
    """

    def __init__(self, conn_id: int, remote: str, limits: ConnectionLimits,
                 scope: trio.CancelScope, *, binding: bytes = b"",
                 refused: Refused | None = None) -> None:
        """``binding``: the connection's TLS channel binding (empty without TLS);
        ``refused``: what the refusals of its requests are told to (the server's refusal log
        for its address; None: they are not logged)."""
        self.id = conn_id
        self.remote = remote
        self.address = address_key(ip_of(remote))  # what per-address limits count by
        self.refused = refused
        self.auth = ConnectionAuth(binding)  # the keys this connection has proven (api/auth.py)
        self.close_code = 1000
        self.close_reason: str | None = None
        self._limits = limits
        self._scope = scope
        self._outbox, self._outbox_rx = trio.open_memory_channel[str | bytes](
            limits.outbox_messages)
        self._nursery: trio.Nursery | None = None  # set while the connection runs
        self._pending: list[Callable[[], Awaitable[None]]] | None = None  # during a request
        now = trio.current_time()
        self._bucket = TokenBucket(limits.requests_per_s, limits.request_burst, now)
        self._audited = TokenBucket(AUDITED_READS_PER_S, AUDITED_READ_BURST, now)
        self._throttled = False  # logged once per connection
        self._audited_throttled = False  # ... and this too
        self._subscriptions = 0
        self._last_words: dict[int, LastWords] = {}  # by subscription, while it runs
        self._subscription_ids = itertools.count()
        self._queued_bytes = 0  # in the outbox or being written
        self._sent = trio.lowlevel.ParkingLot()  # the writer finished a message
        self._last_heard = now  # a message arrived
        self._last_progress = now  # the writer finished a message, or the outbox filled from 0

    @property
    def proven_keys(self) -> frozenset[bytes]:
        """The public keys this connection has proven (empty: an anonymous client)."""
        return self.auth.keys

    @property
    def participant(self) -> bool:
        """Whether the client proved a key the ledger knew (an authority, an active device,
        the patient of one): such a connection is not rate limited, and not evicted."""
        return self.auth.participant

    @property
    def closed(self) -> bool:
        """Whether the connection is closing or closed; notifications are dropped then."""
        return self._scope.cancel_called

    @property
    def queued_bytes(self) -> int:
        """Bytes of replies and notifications not yet written to the client."""
        return self._queued_bytes

    @property
    def heard_at(self) -> float:
        """When the last message arrived (trio time; the connection's start before any)."""
        return self._last_heard

    @property
    def subscriptions(self) -> int:
        """Subscriptions running now."""
        return self._subscriptions

    def start_soon(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``fn(*args)`` for as long as the connection lives; cancelled when it closes.

        Called by a method, it starts after the method's reply has been queued, so the client sees
        that reply (e.g. a subscription id) before any notification the task sends. An exception
        from it closes the connection with 1011 (see the server's docstring). On a closed
        connection it is not started.
        """
        task = partial(fn, *args)
        if self._pending is not None:
            self._pending.append(task)
        elif self._nursery is not None and not self.closed:
            self._nursery.start_soon(task)

    def check_subscription_room(self) -> None:
        """Raise ``RpcError(TOO_MANY_SUBSCRIPTIONS)`` if the connection holds its limit."""
        limit = self._limits.max_subscriptions
        if self._subscriptions >= limit:
            raise RpcError(TOO_MANY_SUBSCRIPTIONS, f"this connection holds {limit} "
                           f"subscriptions, the limit; use another connection",
                           {"limit": limit})

    def start_subscription(self, fn: Callable[..., Awaitable[None]], *args: Any,
                           last_words: LastWords | None = None) -> None:
        """As :meth:`start_soon`, for a task that pushes notifications: it counts against the
        connection's subscriptions until it returns, and keeps the connection open while the
        client reads. Raises as :meth:`check_subscription_room` (nothing is started then).
        ``last_words(reason)``: the params of the ``subscription_ended`` notification to send
        if the node shuts down while the task runs (see :meth:`send_last_words`)."""
        self.check_subscription_room()
        self._subscriptions += 1
        key = next(self._subscription_ids)
        if last_words is not None:
            self._last_words[key] = last_words

        async def subscription() -> None:
            try:
                await fn(*args)
                self._last_words.pop(key, None)  # it ended by itself (cancelled: kept)
            finally:
                self._subscriptions -= 1

        self.start_soon(subscription)

    async def admit_request(self, cost: int = 1) -> None:
        """Wait until this connection may run ``cost`` more requests (its rate limit)."""
        if self.auth.participant:
            return
        wait_s = self._bucket.take(trio.current_time(), cost)
        if wait_s > 0:
            if not self._throttled:
                self._throttled = True
                log.warning("api_client_throttled", rate_per_s=self._bucket.rate,
                            burst=self._bucket.burst)
            await trio.sleep(wait_s)

    async def admit_audited_read(self) -> None:
        """Wait until this connection may make one more audited read (every connection,
        participants too: each read, served or refused, costs the node a durable record)."""
        wait_s = self._audited.take(trio.current_time(), 1)
        if wait_s > 0:
            if not self._audited_throttled:
                self._audited_throttled = True
                log.info("api_audited_reads_throttled", rate_per_s=AUDITED_READS_PER_S,
                         burst=AUDITED_READ_BURST)
            await trio.sleep(wait_s)

    async def run(self, ws: WebSocketConnection, read: Callable[[], Awaitable[None]]) -> None:
        """Run the connection inside its cancel scope: the writer to ``ws``, the idle watch,
        the tasks methods start, and ``read`` (the server's loop over the client's messages,
        which calls :meth:`received` and :meth:`answer` for each). Returns when they all have:
        once the connection is closed."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.write, ws)
            nursery.start_soon(self.watch_idle)
            await read()

    async def received(self, message: str | bytes) -> None:
        """A message arrived: wait for the rate limit (a message, text or binary, counts one
        request more per ``BYTES_PER_REQUEST``); tasks started from now on wait for
        :meth:`answer`."""
        self._last_heard = trio.current_time()
        await self.admit_request(1 + len(message) // BYTES_PER_REQUEST)
        self._pending = []

    def _count(self, size: int) -> None:
        if not self._queued_bytes:
            self._last_progress = trio.current_time()
        self._queued_bytes += size

    async def answer(self, reply: str | bytes | None) -> None:
        """Queue the reply to the message :meth:`received` last, then start the tasks its
        method asked for."""
        assert self._nursery is not None and self._pending is not None
        if reply is not None:
            size = len(reply)  # replies are ASCII JSON or bytes: characters are bytes
            while self._queued_bytes and self._queued_bytes + size > self._limits.outbox_bytes:
                await self._sent.park()  # a client that does not read its replies waits here
            self._count(size)
            await self._outbox.send(reply)  # ... or here, at the count limit
        for task in self._pending:
            self._nursery.start_soon(task)
        self._pending = None

    async def notify(self, method: str, params: Any) -> bool:
        """Queue the notification ``{"method": method, "params": params}``; never waits for the
        client. Returns False if it was dropped because the connection is closed or closing.

        If the outbox is full (in messages or bytes) the client is too slow: the connection is
        closed with 1008 and every task started with ``start_soon`` is cancelled (the caller
        too, if it is one).
        """
        await trio.lowlevel.checkpoint()
        if self.closed:
            return False
        message = _encode_notification(method, params)
        limit = self._limits.outbox_bytes
        if self._queued_bytes and self._queued_bytes + len(message) > limit:
            return self._too_slow(method, f"client too slow: over {limit} bytes queued")
        try:
            self._outbox.send_nowait(message)
        except trio.WouldBlock:
            return self._too_slow(method, "client too slow: notification queue full")
        self._count(len(message))
        return True

    async def notify_paced(self, method: str, params: Any) -> bool:
        """Queue the notification ``{"method": method, "params": params}`` once the outbox is
        less than half full, in messages and in bytes (or empty): a sender of many (a replay)
        goes at the client's pace and leaves the other half to :meth:`notify`, which never
        waits. Returns False if the connection is closed or closing. A client that stops
        reading is closed by the idle watch (1008, "client not reading")."""
        await trio.lowlevel.checkpoint()
        message = _encode_notification(method, params)
        limits = self._limits
        while not self.closed and (
                self._outbox.statistics().current_buffer_used
                >= max(1, limits.outbox_messages // 2)
                or (self._queued_bytes
                    and self._queued_bytes + len(message) > limits.outbox_bytes // 2)):
            await self._sent.park()
        if self.closed:
            return False
        self._outbox.send_nowait(message)  # under half full: there is room
        self._count(len(message))
        return True

    async def send_last_words(self, ws: WebSocketConnection, reason: str) -> None:
        """The node is shutting down and the connection's tasks are done: send each running
        subscription's ``subscription_ended`` (see :meth:`start_subscription`) straight to
        ``ws``, if nothing is queued before them (a client that has read everything learns
        where to resume; one that has not resumes from the last block it read)."""
        if self._queued_bytes or not self._last_words:
            return
        words = [say(reason) for say in self._last_words.values()]
        self._last_words.clear()
        try:
            for params in words:
                await ws.send_message(_encode_notification("subscription_ended", params))
        except ConnectionClosed as exc:
            log.debug("api_last_words_not_sent", close=str(exc.reason))

    def _too_slow(self, method: str, reason: str) -> bool:
        log.warning("api_client_too_slow", method=method, reason=reason,
                    queued_bytes=self._queued_bytes, limit_bytes=self._limits.outbox_bytes,
                    limit_messages=self._limits.outbox_messages)
        self.close(1008, reason)
        return False

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the connection soon with ``code`` and ``reason``; never waits."""
        if not self.closed:
            self.close_code, self.close_reason = code, reason
            self._scope.cancel()

    async def write(self, ws: WebSocketConnection) -> None:
        """The connection's one writer: sends queued replies and notifications in order."""
        try:
            async for message in self._outbox_rx:
                await send_text(ws, message)  # a long one in frames: see .wsframes
                self._queued_bytes -= len(message)
                self._last_progress = trio.current_time()
                self._sent.unpark_all()
        except ConnectionClosed as exc:
            log.debug("api_send_failed", close=str(exc.reason))
            self.close()

    def idle_reason(self, now: float) -> str | None:
        """Why the connection is to be closed at ``now`` as idle or not reading, or ``None``."""
        timeout_s = self._limits.idle_timeout_s
        if self._queued_bytes and now - self._last_progress >= timeout_s:
            return f"client not reading: nothing written for {timeout_s:g} s"
        if not self._subscriptions and now - self._last_heard >= timeout_s:
            return f"idle: nothing received for {timeout_s:g} s"
        return None

    async def watch_idle(self) -> None:
        """Close the connection when :meth:`idle_reason` says so; never returns otherwise.
        Wakes at the next time a rule could apply, and at least once per idle timeout (a
        subscriber's outbox may fill in between): a connection is closed within twice the
        timeout of when a rule began to hold."""
        timeout_s = self._limits.idle_timeout_s
        while True:
            now = trio.current_time()
            reason = self.idle_reason(now)
            if reason is not None:
                stuck = self._queued_bytes > 0  # a client not reading: warned, 1008
                (log.warning if stuck else log.info)(
                    "api_connection_idle", reason=reason, subscriptions=self._subscriptions,
                    queued_bytes=self._queued_bytes)
                self.close(1008 if stuck else 1000, reason)
                return
            wake = now + timeout_s
            if self._queued_bytes:
                wake = min(wake, self._last_progress + timeout_s)
            if not self._subscriptions:
                wake = min(wake, self._last_heard + timeout_s)
            await trio.sleep_until(wake)
