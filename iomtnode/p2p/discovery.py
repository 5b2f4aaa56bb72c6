"""Mobile-aware discovery: signed peer records and a persisted address book.

Each node signs a :class:`PeerRecord` of where it listens; a higher ``seq`` wins. Records
spread on connect (in the handshake and in a ``PeerRecords`` exchange) and periodically.
The address book keeps them in the tables of :mod:`.addrman` (bucketed by the peer that told
us, so no source can fill it) and in LevelDB, so a restarted node knows where its peers were.
The dialer (:mod:`.dialer`) dials them.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import structlog

from ..core import codec
from ..core.crypto import SigningKey
from ..hostport import dial_problem
from ..store import BlockStore
from .addrman import AddrMan
from .records import PeerRecord, RecordError, decode_record, sign_record

log = structlog.get_logger(__name__)

META_BOOK = "address_book"  # the persisted records, one msgpack list
META_BOOK_KEY = "address_book_key"  # the secret that keys the book's buckets
META_BOOK_PEERS = "address_book_peers"  # node ids of the new records marked peer, one list
META_OWN_SEQ = "own_record_seq"
BOOK_FLUSH_S = 5.0  # how often a changed address book is written to the store
PEX_INTERVAL_S = 30.0  # records are re-exchanged this often
PEX_RECORDS = 64  # records sent in one exchange


class AddressBook:
    """Peer records in the new and tried tables of :class:`~.addrman.AddrMan`, persisted in
    the store's meta keyspace with each record's table and source; the bucket key is made once
    per home and kept with them."""

    def __init__(self, store: BlockStore, chain_id: str, now_ms: Callable[[], int]) -> None:
        self._store = store
        self._now_ms = now_ms
        key = store.get_meta(META_BOOK_KEY)
        if not key:
            key = os.urandom(32)
            store.put_meta(META_BOOK_KEY, key)
        self.tables = AddrMan(key)
        self._dirty = False
        raw = store.get_meta(META_BOOK)
        now = now_ms()
        for item in codec.decode(raw) if raw else []:
            # [record, source netgroup, tried]; a book written before tables is a plain list
            record_raw, source, tried = item if isinstance(item, list) else (item, "", False)
            try:
                record = decode_record(record_raw, chain_id)
            except RecordError:
                continue
            if undialable(record) is None and self.tables.add(record, str(source), now) and tried:
                self.tables.mark_tried(record.node_id, now)
        raw = store.get_meta(META_BOOK_PEERS)  # apart: a book of an older release reads as it was
        for node_id in codec.decode(raw) if raw else []:
            if isinstance(node_id, bytes):
                self.tables.mark_peer(node_id)

    @property
    def records(self) -> dict[bytes, PeerRecord]:
        """Every record held, by node id (a copy)."""
        return {e.record.node_id: e.record for e in self.tables.entries()}

    def update(self, record: PeerRecord, now_ms: int, source: str) -> bool:
        """Keep ``record``, told by a peer of netgroup ``source`` (see :meth:`AddrMan.add`);
        True if it changed the book. A record with an address no node can dial (not HOST:PORT
        as the settings read it, a wildcard, port 0) is not kept, so neither spread nor dialed
        (``peer_record_ignored``; its signer made it, so its relayer is not charged)."""
        fault = undialable(record)
        if fault is not None:
            log.debug("peer_record_ignored", node=record.node_id.hex()[:16], reason=fault)
            return False
        changed = self.tables.add(record, source, now_ms)
        self._dirty |= changed
        return changed

    def is_tried(self, node_id: bytes) -> bool:
        entry = self.tables.get(node_id)
        return entry is not None and entry.tried

    def answered(self, node_id: bytes, address: str) -> None:
        """``node_id`` answered a dial of ``address`` as itself: tried, if its record is there."""
        entry = self.tables.get(node_id)
        if entry is not None and address in entry.record.addresses:
            self.tables.mark_tried(node_id, self._now_ms())
            self._dirty = True

    def was_peer(self, node_id: bytes) -> None:
        """``node_id`` holds a live connection with us: see :meth:`AddrMan.mark_peer`."""
        self._dirty |= self.tables.mark_peer(node_id)

    def dial_failed(self, node_id: bytes) -> None:
        self.tables.mark_failed(node_id)
        self._dirty = True

    def drop(self, node_id: bytes) -> None:
        """Forget ``node_id``'s record (another node answered at its address)."""
        self._dirty |= self.tables.remove(node_id)

    def flush(self) -> None:
        """Persist the book if it changed (one synced write, not one per record)."""
        if self._dirty:
            items = [[e.record.raw, e.source, e.tried] for e in self.tables.entries()]
            self._store.put_meta(META_BOOK, codec.encode(items))
            peers = codec.encode([e.record.node_id for e in self.tables.entries()
                                  if e.peer and not e.tried])
            if peers != self._store.get_meta(META_BOOK_PEERS):
                self._store.put_meta(META_BOOK_PEERS, peers)
            self._dirty = False

    def sample(self, n: int, rng: random.Random) -> list[PeerRecord]:
        """Up to ``n`` records to share, those that answered us first."""
        entries = list(self.tables.entries())
        tried = [e.record for e in entries if e.tried]
        new = [e.record for e in entries if not e.tried]
        picked = rng.sample(tried, min(n, len(tried)))
        return picked + rng.sample(new, min(n - len(picked), len(new)))


def wall_clock_ms() -> int:
    """The system's wall clock in ms (a node passes its own clock; this is the default)."""
    return int(time.time() * 1000)


def undialable(record: PeerRecord) -> str | None:
    """Why an address of ``record`` cannot be dialed (:func:`iomtnode.hostport.dial_problem`),
    or None."""
    for address in record.addresses:
        fault = dial_problem(address)
        if fault is not None:
            return f"address {address!r}: {fault}"
    return None


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
