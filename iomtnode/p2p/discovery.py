"""Mobile-aware discovery: signed peer records, a persisted address book, and a dialer.

Each node signs a :class:`PeerRecord` of where it listens; a higher ``seq`` wins. Records
spread on connect (in the handshake and in a ``PeerRecords`` exchange) and periodically.
The address book keeps the best record per node id in LevelDB, so a restarted node
knows where its peers were. The dialer keeps this node connected to every known peer
and bootnode: unreachable ones are retried with capped exponential backoff and jitter,
bootnode host names are resolved again on every dial, and a peer whose record changes
(it moved) is dialed at its new address at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import structlog
import trio

from ..core import codec
from ..core.crypto import SigningKey
from ..store import BlockStore
from .backoff import Backoff
from .host import DialError
from .records import PeerRecord, RecordError, decode_record, sign_record

log = structlog.get_logger(__name__)

META_BOOK = "address_book"  # the persisted records, one msgpack list
META_OWN_SEQ = "own_record_seq"
MAX_BOOK_RECORDS = 1000
MAX_RECORD_FUTURE_MS = 600_000  # a record stamped further ahead than this is refused
BOOK_FLUSH_S = 5.0  # how often a changed address book is written to the store
DIAL_TICK_S = 0.5  # how often the dialer looks for peers to (re)dial
MAX_DIALS_IN_FLIGHT = 8
PEX_INTERVAL_S = 30.0  # records are re-exchanged this often
PEX_RECORDS = 64  # records sent in one exchange


class AddressBook:
    """The best-known record per node id, persisted in the store's meta keyspace."""

    def __init__(self, store: BlockStore, chain_id: str) -> None:
        self._store = store
        self._chain_id = chain_id
        self.records: dict[bytes, PeerRecord] = {}
        self.connected: set[bytes] = set()  # node ids that completed a handshake with us
        self._dirty = False
        raw = store.get_meta(META_BOOK)
        for item in codec.decode(raw) if raw else []:
            try:
                record = decode_record(item, chain_id)
            except RecordError:
                continue
            self.records[record.node_id] = record

    def update(self, record: PeerRecord, now_ms: int) -> bool:
        """Keep ``record`` if it is newer than what we have; True if it changed the book.

        Records stamped more than ``MAX_RECORD_FUTURE_MS`` ahead are refused. When the book
        is full, a record of a node never connected to is evicted first (oldest first), so
        a flood of self-signed records cannot push out the peers that answered.
        """
        if record.time_ms > now_ms + MAX_RECORD_FUTURE_MS:
            return False
        if not record.newer_than(self.records.get(record.node_id)):
            return False
        self.records[record.node_id] = record
        if len(self.records) > MAX_BOOK_RECORDS:
            strangers = [r for r in self.records.values() if r.node_id not in self.connected]
            oldest = min(strangers or self.records.values(), key=lambda r: r.time_ms)
            del self.records[oldest.node_id]
        self._dirty = True
        return True

    def mark_connected(self, node_id: bytes) -> None:
        self.connected.add(node_id)

    def flush(self) -> None:
        """Persist the book if it changed (one synced write, not one per record)."""
        if self._dirty:
            self._store.put_meta(META_BOOK, codec.encode([r.raw for r in self.records.values()]))
            self._dirty = False

    def sample(self, n: int, rng: random.Random) -> list[PeerRecord]:
        records = list(self.records.values())
        return rng.sample(records, min(n, len(records)))


class Dialer:
    """Keeps connections to every known peer and bootnode (see the module docstring)."""

    def __init__(self, host: Any, book: AddressBook, bootnodes: tuple[str, ...],
                 own_id: bytes, rng: random.Random) -> None:
        self._host = host
        self._book = book
        self._bootnodes = bootnodes
        self._own_id = own_id
        self._rng = rng
        self._backoff: dict[str, Backoff] = {}
        self._next_try: dict[str, float] = {}
        self._in_flight: set[str] = set()
        self._answered_by: dict[str, bytes] = {}  # address dialed -> node id that answered
        self._wake = trio.Event()

    def wake(self, reset: str | None = None) -> None:
        """Look for peers to dial now; ``reset`` an address's backoff (it changed)."""
        if reset is not None:
            self._backoff.pop(reset, None)
            self._next_try.pop(reset, None)
        self._wake.set()

    def reset_all(self) -> None:
        self._backoff.clear()
        self._next_try.clear()
        self._wake.set()

    def _targets(self) -> list[str]:
        """Addresses to dial: known peers not connected, then bootnodes not known connected."""
        connected = {peer.node_id for peer in self._host.peers()}
        targets = [
            record.addresses[0]
            for node_id, record in self._book.records.items()
            if node_id != self._own_id and node_id not in connected
            and not self._host.is_refused(node_id)
        ]
        reached = {a for node_id in connected | {self._own_id}
                   if (r := self._book.records.get(node_id)) for a in r.addresses}
        targets += [a for a in self._bootnodes
                    if a not in reached and self._answered_by.get(a) not in connected]
        return list(dict.fromkeys(targets))

    async def _dial(self, address: str) -> None:
        try:
            peer = await self._host.dial(address)
        except (DialError, OSError) as exc:  # a failed dial is routine
            backoff = self._backoff.setdefault(address, Backoff(rng=self._rng))
            delay = backoff.next_delay()
            self._next_try[address] = trio.current_time() + delay
            log.debug("dial_failed", address=address, reason=str(exc), retry_in_s=round(delay, 2))
        else:
            self._answered_by[address] = peer.node_id  # e.g. a bootnode's host name
            self._backoff.pop(address, None)
            self._next_try.pop(address, None)
        finally:
            self._in_flight.discard(address)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                now = trio.current_time()
                for address in self._targets():
                    if len(self._in_flight) >= MAX_DIALS_IN_FLIGHT:
                        break
                    if address in self._in_flight or self._next_try.get(address, 0) > now:
                        continue
                    self._in_flight.add(address)
                    nursery.start_soon(self._dial, address)
                with trio.move_on_after(DIAL_TICK_S):
                    await self._wake.wait()
                self._wake = trio.Event()


def wall_clock_ms() -> int:
    """The system's wall clock in ms (a node passes its own clock; this is the default)."""
    return int(time.time() * 1000)


class OwnRecord:
    """This node's signed record; its seq is persisted and bumped on every start and move."""

    def __init__(self, key: SigningKey, chain_id: str, store: BlockStore,
                 now_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._key = key
        self._chain_id = chain_id
        self._store = store
        self._now_ms = now_ms
        raw = store.get_meta(META_OWN_SEQ)
        self._seq = int.from_bytes(raw, "big") if raw else 0
        self.record: PeerRecord | None = None

    @property
    def raw(self) -> bytes:
        """The signed record's bytes (empty before the first publish)."""
        return self.record.raw if self.record else b""

    def publish(self, address: str) -> PeerRecord:
        """Sign a new record for ``address`` with the next seq (persisted first)."""
        self._seq += 1
        self._store.put_meta(META_OWN_SEQ, self._seq.to_bytes(8, "big"))
        self.record = sign_record(self._key, (address,), self._seq, self._now_ms(),
                                  self._chain_id)
        log.info("peer_record_published", address=address, seq=self._seq)
        return self.record
