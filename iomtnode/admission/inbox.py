"""The admission service's one inbox, and the progress that consensus and block relay wait on.

Every transaction that reaches this node, from its clients (the API), from the node itself
(its evidence reports) or from its peers (tx gossip), is put here as raw bytes with its
source, and taken by the one admission task (:class:`~.service.Admission`) one step at a
time. The inbox keeps a lane per kind of source, each bounded in transactions and each in
arrival order:

- peers' (:data:`INBOX_TXS`): a peer's reader waits for room, which pushes back on the
  peer through TCP;
- clients' (:data:`CLIENT_TXS`): a client's call waits for room;
- the node's own (:data:`OWN_TXS`): :meth:`Inbox.put_own` never waits (its callers must
  not block); it is refused only when the lane is full.

A step (:meth:`Inbox.take`) takes everything the node's own and the clients' lanes hold,
then peers' transactions to fill the step up to a whole number of chunks (at most one
chunk of them): so a client's call waits for at most one chunk of peers' transactions
however many are queued, peers' transactions still go in full chunks (one verification hop
each) under load, and peers are never starved by clients.

Progress: :meth:`Inbox.mark` counts the transactions received from peers until now, and
:meth:`Inbox.admitted` tells whether the admission task has handled (admitted or refused)
them all. A proposal or a relayed block whose transactions are missing from the mempool
may find them here, queued: consensus and block relay wait on this before fetching them
(:class:`Progress`). Clients' and the node's own transactions move no mark.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Protocol

import trio
import trio.lowlevel

from ..core import errors as e
from ..core.tx import SignedTx
from ..p2p.peer import Peer

INBOX_TXS = 16_384  # peers' transactions waiting (~3 MB of readings); then their readers wait
# clients' transactions waiting (~3 MB; a call of the API's largest batch, 10,000, fits
# while fewer are queued); then their calls wait
CLIENT_TXS = 16_384
# The node's own transactions waiting (its evidence reports): each equivocation is
# reported once, and the lane is emptied at every step, so it fills only if more than this
# many new equivocations are seen between two steps (milliseconds apart).
OWN_TXS = 1_024

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

    peer: Peer  # the peer connection (``node_id``), for relay and penalties
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
Step = list[tuple[Item, bytes]]  # one step's transactions, each with its source


class InboxFullError(Exception):
    """The node's own lane holds :data:`OWN_TXS` transactions: try again later."""


class Inbox:
    """Bounded lanes, each in order; see the module doc."""

    def __init__(self, capacity_txs: int = INBOX_TXS, *, client_txs: int = CLIENT_TXS,
                 own_txs: int = OWN_TXS) -> None:
        self.capacity_txs = capacity_txs  # peers' lane
        self.client_txs = client_txs
        self.own_txs = own_txs
        self._own: deque[FromClient] = deque()
        self._clients: deque[FromClient] = deque()
        self._peers: deque[FromPeer] = deque()
        self._taken = 0  # of the first item in ``_peers``, the transactions taken already
        self._own_queued = 0  # transactions put and not taken yet, per lane
        self._client_queued = 0
        self._peer_queued = 0
        self._arrived = trio.Event()  # set (and replaced) when an item is put
        self._client_room = trio.Event()  # set (and replaced) when a step takes clients'
        self._peer_room = trio.Event()  # ... peers'
        self._received = 0  # peers' transactions put until now (see mark)
        self._handled = 0  # ... of which the admission task has handled this many, in order
        self._progressed = trio.Event()  # set (and replaced) after each admission step

    # putting (any task) ----------------------------------------------------------------

    async def put(self, item: Item) -> None:
        """Queue ``item`` for admission, waiting while its lane is full."""
        if isinstance(item, FromPeer):
            while self._peer_queued >= self.capacity_txs:
                await self._peer_room.wait()
            self._peers.append(item)
            self._peer_queued += len(item.raws)
            self._received += len(item.raws)
        else:
            while self._client_queued >= self.client_txs:
                await self._client_room.wait()
            self._clients.append(item)
            self._client_queued += len(item.raws)
        self._arrive()

    def put_own(self, item: FromClient) -> None:
        """Queue the node's own transactions now, or raise :class:`InboxFullError`."""
        if self._own_queued >= self.own_txs:
            raise InboxFullError(f"the node's own lane holds {self._own_queued} transactions")
        self._own.append(item)
        self._own_queued += len(item.raws)
        self._arrive()

    def _arrive(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    @property
    def queued(self) -> int:
        """Transactions put and not taken by the admission task yet."""
        return self._own_queued + self._client_queued + self._peer_queued

    # the admission task ----------------------------------------------------------------

    async def take(self, chunk_txs: int) -> Step:
        """One step (waits for the first item): the node's own and clients' transactions
        queued, then peers' in arrival order filling the step to a whole number of
        ``chunk_txs`` (between 1 and ``chunk_txs`` of them); makes room."""
        if not (self._own or self._clients or self._peers):
            await self._arrived.wait()
        else:
            await trio.lowlevel.checkpoint()  # the admission loop lets others run
        step: Step = []
        if self._own or self._clients:
            for lane in (self._own, self._clients):
                for item in lane:
                    step.extend(zip(repeat(item), item.raws))
                lane.clear()
            self._own_queued = 0
            if self._client_queued:
                self._client_queued = 0
                self._client_room.set()
                self._client_room = trio.Event()
        want = chunk_txs - len(step) % chunk_txs
        peers, taken = self._peers, len(step)
        while want and peers:
            item = peers[0]
            stop = min(len(item.raws), self._taken + want)
            if self._taken == 0 and stop == len(item.raws):
                step.extend(zip(repeat(item), item.raws))
            else:
                step.extend(zip(repeat(item), item.raws[self._taken:stop]))
            want -= stop - self._taken
            if stop == len(item.raws):
                peers.popleft()
                self._taken = 0
            else:
                self._taken = stop
        if len(step) > taken:
            self._peer_queued -= len(step) - taken
            self._peer_room.set()
            self._peer_room = trio.Event()
        return step

    def handled(self, from_peers: int) -> None:
        """One admission chunk is done, with ``from_peers`` of peers' transactions."""
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
        """Return after the admission task's next chunk (from any source)."""
        await self._progressed.wait()
