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

Each lane lets an item (a peer's message, a client's call) in while fewer transactions
than its bound are queued, so it may hold one item more than its bound: at most
``MAX_TXS_PER_MESSAGE - 1`` transactions more in the peers' lane, ``MAX_BATCH_TXS - 1`` in
the clients' (an item larger than the bound still gets in, once the lane has room).

A step (:meth:`Inbox.take`) takes everything the node's own lane holds, then at most one
chunk of the clients' transactions, then peers' filling the step up to a whole number of
chunks (at most one chunk of them): so neither clients nor peers wait behind more than one
chunk of the other's transactions however many are queued, both go in full chunks (one
verification hop each) under load, and a client's call may be taken over several steps
(it is answered once all its transactions are handled).

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
from typing import Generic, Protocol, TypeVar

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
    admitted_ms: int = 0  # the sender's stamp (:class:`~.messages.Txs`); 0: none


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


ItemT = TypeVar("ItemT", FromPeer, FromClient)


class InboxFullError(Exception):
    """The node's own lane holds :data:`OWN_TXS` transactions: try again later."""


class _Lane(Generic[ItemT]):
    """One kind of source's items in arrival order, bounded in transactions: an item is let
    in while fewer than ``bound`` are queued, so the lane may hold one item more."""

    __slots__ = ("_room", "_taken", "bound", "items", "queued")

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.items: deque[ItemT] = deque()
        self.queued = 0  # transactions put and not taken yet
        self._taken = 0  # of the first item, the transactions taken already
        self._room = trio.Event()  # set (and replaced) when a step takes some

    async def put(self, item: ItemT) -> None:
        while self.queued >= self.bound:
            await self._room.wait()
        self.append(item)

    def append(self, item: ItemT) -> None:
        self.items.append(item)
        self.queued += len(item.raws)

    def take(self, want: int, step: Step) -> None:
        """Move up to ``want`` transactions, oldest first, to ``step`` (an item may be
        split: its rest is taken first next time)."""
        items, taken, got = self.items, self._taken, 0
        while got < want and items:
            item = items[0]
            stop = min(len(item.raws), taken + want - got)
            if taken == 0 and stop == len(item.raws):
                step.extend(zip(repeat(item), item.raws))
            else:
                step.extend(zip(repeat(item), item.raws[taken:stop]))
            got += stop - taken
            if stop == len(item.raws):
                items.popleft()
                taken = 0
            else:
                taken = stop
        self._taken = taken
        if got:
            self.queued -= got
            self._room.set()
            self._room = trio.Event()


class Inbox:
    """Bounded lanes, each in order; see the module doc."""

    def __init__(self, capacity_txs: int = INBOX_TXS, *, client_txs: int = CLIENT_TXS,
                 own_txs: int = OWN_TXS) -> None:
        self._own: _Lane[FromClient] = _Lane(own_txs)
        self._clients: _Lane[FromClient] = _Lane(client_txs)
        self._peers: _Lane[FromPeer] = _Lane(capacity_txs)
        self._arrived = trio.Event()  # set (and replaced) when an item is put
        self._received = 0  # peers' transactions put until now (see mark)
        self._handled = 0  # ... of which the admission task has handled this many, in order
        self._progressed = trio.Event()  # set (and replaced) after each admission chunk

    @property
    def capacity_txs(self) -> int:
        """The peers' lane's bound."""
        return self._peers.bound

    @property
    def client_txs(self) -> int:
        """The clients' lane's bound."""
        return self._clients.bound

    @property
    def own_txs(self) -> int:
        """The node's own lane's bound."""
        return self._own.bound

    # putting (any task) ----------------------------------------------------------------

    async def put(self, item: Item) -> None:
        """Queue ``item`` for admission, waiting while its lane is full."""
        if isinstance(item, FromPeer):
            await self._peers.put(item)
            self._received += len(item.raws)
        else:
            await self._clients.put(item)
        self._arrive()

    def put_own(self, item: FromClient) -> None:
        """Queue the node's own transactions now, or raise :class:`InboxFullError`."""
        own = self._own
        if own.queued >= own.bound:
            raise InboxFullError(f"the node's own lane holds {own.queued} transactions")
        own.append(item)
        self._arrive()

    def _arrive(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    @property
    def queued(self) -> int:
        """Transactions put and not taken by the admission task yet."""
        return self._own.queued + self._clients.queued + self._peers.queued

    # the admission task ----------------------------------------------------------------

    async def take(self, chunk_txs: int) -> Step:
        """One step (waits for the first item): the node's own transactions queued, then
        up to ``chunk_txs`` of the clients', then peers' filling the step to a whole number
        of ``chunk_txs`` (between 1 and ``chunk_txs`` of them), each lane in arrival order;
        makes room."""
        if not (self._own.items or self._clients.items or self._peers.items):
            await self._arrived.wait()
        else:
            await trio.lowlevel.checkpoint()  # the admission loop lets others run
        step: Step = []
        self._own.take(self._own.queued, step)
        self._clients.take(chunk_txs, step)
        self._peers.take(chunk_txs - len(step) % chunk_txs, step)
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
