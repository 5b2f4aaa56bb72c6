"""The dialer: keeps this node connected to its bootnodes and to peers from its address book.

Bootnodes (the operator's list) are dialed whenever not connected, beyond the outbound slots;
their host names are resolved again on every dial. Records from the book fill the outbound
slots (``outbound_slots``): those whose node answered us before (the tried table) whenever
one is free, those never answered (the new table) at most :data:`NEW_DIAL_BURST` at once and
one every :data:`NEW_DIAL_INTERVAL_S` after that, so a book full of junk costs a trickle of
dials, not a burst; the records of peers of before first (see :mod:`.addrman`), so a restarted
node dials the nodes that had dialed it before the junk.
Every address failing is retried with capped exponential backoff and jitter.

A record's dial is a dial of its node id (:meth:`~.host.Host.dial` with ``node_id``): if
another node answers, the handshake is refused before it replaces anything and the record is
dropped from the book. An address that a connected peer is reached at, or that a connected
node's record names, is never dialed: a record cannot make this node re-dial a peer it has.
"""

from __future__ import annotations

import random
from typing import Protocol

import structlog
import trio

from .backoff import Backoff
from .discovery import AddressBook
from .hostconfig import DialError
from .peer import Peer
from .ratelimit import TokenBucket

log = structlog.get_logger(__name__)

DIAL_TICK_S = 0.5  # how often the dialer looks for peers to (re)dial
MAX_DIALS_IN_FLIGHT = 8
NEW_DIAL_INTERVAL_S = 1.0  # dials of never-answered records: one this often on average ...
NEW_DIAL_BURST = 4  # ... and at most this many at once (a token bucket)


class DialHost(Protocol):
    """What the dialer needs of the host."""

    def peers(self) -> list[Peer]: ...

    async def dial(self, address: str, node_id: bytes | None = None) -> Peer: ...

    def is_refused(self, node_id: bytes) -> bool: ...


class Dialer:
    """Dials bootnodes and the address book's records (module doc)."""

    def __init__(self, host: DialHost, book: AddressBook, bootnodes: tuple[str, ...],
                 own_id: bytes, rng: random.Random, outbound_slots: int) -> None:
        self._host = host
        self._book = book
        self._bootnodes = bootnodes
        self._own_id = own_id
        self._rng = rng
        self._outbound_slots = outbound_slots
        self._backoff: dict[str, Backoff] = {}
        self._next_try: dict[str, float] = {}
        self._in_flight: dict[str, bytes | None] = {}  # address -> node id dialed (None: any)
        self._answered_by: dict[str, bytes] = {}  # bootnode address -> node id that answered
        self._own: set[str] = set()  # addresses that answered as this node: never dialed again
        self._new_dials = TokenBucket(1 / NEW_DIAL_INTERVAL_S, NEW_DIAL_BURST, 0.0)
        self._wake = trio.Event()

    def wake(self, reset: str | None = None) -> None:
        """Look for peers to dial now; ``reset`` an address's backoff (it changed)."""
        if reset is not None:
            self._backoff.pop(reset, None)
            self._next_try.pop(reset, None)
        self._wake.set()

    def reset_all(self) -> None:
        """This node's address changed: dial everything again (its old address, once its
        own, may be another node's now)."""
        self._backoff.clear()
        self._next_try.clear()
        self._own.clear()
        self._wake.set()

    def _ready(self, address: str, now: float) -> bool:
        return address not in self._in_flight and self._next_try.get(address, 0) <= now

    def _targets(self, now: float) -> list[tuple[str, bytes | None]]:
        """``(address, node id or None)`` to dial now: bootnodes, then the book's records."""
        peers = self._host.peers()
        connected = {p.node_id for p in peers} | {self._own_id}
        book = self._book.tables
        busy = {p.remote for p in peers if p.outbound} | self._own
        busy |= {a for n in connected if (e := book.get(n)) for a in e.record.addresses}
        boot: list[tuple[str, bytes | None]] = [
            (a, None) for a in self._bootnodes
            if a not in busy and self._answered_by.get(a) not in connected and self._ready(a, now)]
        busy |= {a for a, _ in boot}  # a record naming a bootnode's address: one dial of it
        dialing = {n for n in self._in_flight.values() if n is not None}
        free = self._outbound_slots - sum(p.outbound for p in peers) - len(dialing)
        # records not to dial now (refused, or their address busy or backing off): the
        # tried ones are passed over below, the new ones by the draw (peers of before first)
        skip = connected | dialing | {
            e.record.node_id for e in book.entries()
            if self._host.is_refused(e.record.node_id) or e.record.addresses[0] in busy
            or not self._ready(e.record.addresses[0], now)}
        picked: list[tuple[str, bytes | None]] = []
        for entry in book.entries():
            if len(picked) >= free:
                break
            if entry.tried and entry.record.node_id not in skip:
                picked.append((entry.record.addresses[0], entry.record.node_id))
        while len(picked) < free and self._new_dials.refill(now) >= 1:
            record = book.pick_new(self._rng, skip)
            if record is None:
                break
            self._new_dials.try_take(now)
            skip.add(record.node_id)
            picked.append((record.addresses[0], record.node_id))
        return boot + picked

    async def _dial(self, address: str, node_id: bytes | None) -> None:
        try:
            peer = await self._host.dial(address, node_id)
        except (DialError, OSError) as exc:  # a failed dial is routine
            if isinstance(exc, DialError) and exc.to_itself:  # e.g. in its own bootnodes
                self._own.add(address)
                log.info("dial_own_address", address=address,
                         reason="this node answered: not dialed again")
                return
            backoff = self._backoff.setdefault(address, Backoff(rng=self._rng))
            delay = backoff.next_delay()
            self._next_try[address] = trio.current_time() + delay
            log.debug("dial_failed", address=address, reason=str(exc), retry_in_s=round(delay, 2))
            if node_id is not None and isinstance(exc, DialError) and exc.wrong_node:
                log.info("peer_record_dropped", node=node_id.hex()[:16], address=address,
                         reason=str(exc))
                self._book.drop(node_id)
            elif node_id is not None:
                self._book.dial_failed(node_id)
        else:
            self._answered_by[address] = peer.node_id  # e.g. a bootnode's host name
            self._book.answered(peer.node_id, address)
            self._backoff.pop(address, None)
            self._next_try.pop(address, None)
        finally:
            self._in_flight.pop(address, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                for address, node_id in self._targets(trio.current_time()):
                    if len(self._in_flight) >= MAX_DIALS_IN_FLIGHT:
                        break
                    self._in_flight[address] = node_id
                    nursery.start_soon(self._dial, address, node_id)
                with trio.move_on_after(DIAL_TICK_S):
                    await self._wake.wait()
                self._wake = trio.Event()
