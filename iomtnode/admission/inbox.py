"""The admission service's one inbox, and the progress that consensus and block relay wait on.

Every transaction that reaches this node, from its clients (the API) or from its peers
(tx gossip), is put here as raw bytes with its source, and taken by the one admission
task (:class:`~.service.Admission`) in arrival order. The inbox is bounded by
:data:`INBOX_TXS` transactions: a peer's reader waits for room (which pushes back on the
peer through TCP), and so does a client's call; :meth:`Inbox.put_nowait` (the node's own
evidence reports) is refused instead.

Progress: :meth:`Inbox.mark` counts the transactions received from peers until now, and
:meth:`Inbox.admitted` tells whether the admission task has handled (admitted or refused)
them all. A proposal or a relayed block whose transactions are missing from the mempool
may find them here, queued: consensus and block relay wait on this before fetching them
(:class:`Progress`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from ..core import errors as e
from ..core.tx import SignedTx

INBOX_TXS = 16_384  # transactions waiting to be taken (~3 MB of readings); then senders wait

Admitted = SignedTx | e.RuleError  # per transaction: admitted, or the reason it was not


class Progress(Protocol):
    """How far admission has handled what peers pushed (:class:`Inbox`)."""

    def mark(self) -> int: ...

    def admitted(self, mark: int) -> bool: ...

    def backlog(self) -> int: ...

    async def wait_admitted(self, mark: int) -> None: ...

    async def wait_progress(self) -> None: ...


@dataclass(slots=True)
class FromPeer:
    """Transactions a peer pushed or sent on request."""

    peer: Any  # the peer connection (``node_id``), for relay and penalties
    raws: Sequence[bytes]


@dataclass(slots=True)
class FromClient:
    """A client's transactions (or the node's own): ``reply`` gets, once all are handled,
    per transaction the admitted one (durable already) or the RuleError that refused it."""

    raws: Sequence[bytes]
    reading_only: bool
    reply: Callable[[list[Admitted]], None]
    results: list[Admitted] = field(default_factory=list)


Item = FromPeer | FromClient


class InboxFullError(Exception):
    """The inbox holds :data:`INBOX_TXS` transactions: try again later."""


class Inbox:
    """Bounded, in order, from every source; see the module doc."""

    def __init__(self, capacity_txs: int = INBOX_TXS) -> None:
        self.capacity_txs = capacity_txs
        self._send, self._receive = trio.open_memory_channel[Item](math.inf)  # bounded by txs
        self._queued = 0  # transactions put and not taken yet
        self._room = trio.Event()  # set (and replaced) when the admission task takes
        self._received = 0  # peers' transactions put until now (see mark)
        self._handled = 0  # ... of which the admission task has handled this many, in order
        self._progressed = trio.Event()  # set (and replaced) after each admission step

    # putting (any task) ----------------------------------------------------------------

    async def put(self, item: Item) -> None:
        """Queue ``item`` for admission, waiting while :data:`INBOX_TXS` are queued."""
        while self._queued >= self.capacity_txs:
            await self._room.wait()
        self._put(item)

    def put_nowait(self, item: Item) -> None:
        """Queue ``item`` now, or raise :class:`InboxFullError`."""
        if self._queued >= self.capacity_txs:
            raise InboxFullError(f"admission inbox holds {self._queued} transactions")
        self._put(item)

    def _put(self, item: Item) -> None:
        self._queued += len(item.raws)
        if isinstance(item, FromPeer):
            self._received += len(item.raws)
        self._send.send_nowait(item)

    @property
    def queued(self) -> int:
        """Transactions put and not taken by the admission task yet."""
        return self._queued

    # the admission task ----------------------------------------------------------------

    async def take(self) -> list[Item]:
        """Everything queued, in order (waits for the first item); makes room."""
        items = [await self._receive.receive()]
        while True:
            try:
                items.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        self._queued -= sum(len(item.raws) for item in items)
        self._room.set()
        self._room = trio.Event()
        return items

    def handled(self, from_peers: int) -> None:
        """One admission step is done, with ``from_peers`` of peers' transactions."""
        self._handled += from_peers
        self._progressed.set()
        self._progressed = trio.Event()

    # progress (consensus and block relay wait on it) -----------------------------------

    def mark(self) -> int:
        """How many transactions peers pushed until now."""
        return self._received

    def admitted(self, mark: int) -> bool:
        """Whether the transactions peers pushed until ``mark`` are all handled (admitted
        or refused): a proposal's transaction that came before is in the mempool by now."""
        return self._handled >= mark

    def backlog(self) -> int:
        """Peers' transactions queued for admission and not handled yet."""
        return self._received - self._handled

    async def wait_admitted(self, mark: int) -> None:
        """Return once the transactions peers pushed until ``mark`` are all handled."""
        while self._handled < mark:
            await self._progressed.wait()

    async def wait_progress(self) -> None:
        """Return after the admission task's next step (from any source)."""
        await self._progressed.wait()
