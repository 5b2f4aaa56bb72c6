"""What a node keeps of the transactions it accepted and has not committed: the pending ones
(so a restart re-admits them) and a bounded record of the ones it dropped, with why.

Bytes-level, like the rest of the store: a transaction is its id and its raw bytes, a drop
is a rule code, a reason and the height the node was at. Keyspace (in the store's
LevelDB, beside the block store's prefixes):

=========  ===============================  =============================================
prefix     key suffix                       value
=========  ===============================  =============================================
``b"P"``   arrival number (8 bytes)         tx id (32 bytes) + raw transaction
``b"D"``   tx id                            drop number (8 bytes), code (4 bytes),
                                            height (8 bytes), reason (UTF-8)
``b"O"``   drop number (8 bytes)            tx id (the oldest drops are forgotten first)
=========  ===============================  =============================================

Writes: :meth:`TxLog.keep` writes a batch of accepted transactions in one LevelDB write; a
block's commit deletes the pending entries of its transactions in the block's own batch
(:meth:`TxLog.forget_in`); :meth:`TxLog.record_drops` writes drops and deletes their
pending entries in one small batch. Neither of the last two is synced apart from the block:
a drop record lost with the page cache leaves its pending entry too, so the next start
re-admits the transaction and records the drop again.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

PENDING_PREFIX = b"P"
DROPPED_PREFIX = b"D"
DROP_ORDER_PREFIX = b"O"
MAX_DROP_RECORDS = 100_000  # drop records kept (at most ~30 MB on disk: ~300 bytes each);
# the oldest are forgotten first (a client asks about a drop within minutes, not months)
MAX_REASON_BYTES = 512  # a drop's reason is cut to this (the rules' messages are ~100)
ID_BYTES = 32
_U64 = struct.Struct(">Q")
_DROP = struct.Struct(">QIQ")  # drop number, code, height


@dataclass(frozen=True, slots=True)
class Drop:
    """A transaction this node accepted and then dropped: the rule's code and message, and
    the node's height when it dropped it."""

    tx_id: bytes
    code: int
    reason: str
    height: int


class TxLog:
    """Pending and dropped transactions in the store's database ``db`` (a plyvel DB)."""

    def __init__(self, db: Any, *, max_drops: int = MAX_DROP_RECORDS) -> None:
        self._db = db
        self.max_drops = max_drops
        self._lock = threading.Lock()  # the pending index: admission and commit threads
        self._pending: dict[bytes, bytes] = {}  # tx id -> its P key
        for key, value in db.iterator(prefix=PENDING_PREFIX):
            self._pending[value[:ID_BYTES]] = key
        last = next(db.iterator(prefix=PENDING_PREFIX, reverse=True, include_value=False),
                    None)
        self._next_arrival = 0 if last is None else _U64.unpack(last[1:])[0] + 1
        first = next(db.iterator(prefix=DROP_ORDER_PREFIX, include_value=False), None)
        last = next(db.iterator(prefix=DROP_ORDER_PREFIX, reverse=True, include_value=False),
                    None)
        self._oldest_drop = 0 if first is None else _U64.unpack(first[1:])[0]
        self.dropped_total = 0 if last is None else _U64.unpack(last[1:])[0] + 1

    # pending -------------------------------------------------------------------------

    def keep(self, txs: Sequence[tuple[bytes, bytes]], *, sync: bool = False) -> None:
        """Write accepted transactions ``(id, raw)`` in one batch (``sync``: fsynced)."""
        if not txs:
            return
        with self._lock, self._db.write_batch(sync=sync) as batch:
            for tx_id, raw in txs:
                if tx_id in self._pending:
                    continue
                key = PENDING_PREFIX + _U64.pack(self._next_arrival)
                self._next_arrival += 1
                batch.put(key, tx_id + raw)
                self._pending[tx_id] = key

    def pending(self) -> Iterator[tuple[bytes, bytes]]:
        """``(id, raw)`` of every kept transaction, in the order they were accepted."""
        for _, value in self._db.iterator(prefix=PENDING_PREFIX):
            yield value[:ID_BYTES], value[ID_BYTES:]

    def is_pending(self, tx_id: bytes) -> bool:
        return tx_id in self._pending

    def forget_in(self, batch: Any, tx_ids: Iterable[bytes]) -> list[bytes]:
        """Delete, in ``batch`` (a block's), the pending entries of ``tx_ids``; returns the
        ids whose entries it deletes, for :meth:`forgotten` once the batch is written."""
        pending = self._pending
        if not pending:
            return []
        gone: list[bytes] = []
        for tx_id in tx_ids:
            key = pending.get(tx_id)
            if key is not None:
                batch.delete(key)
                gone.append(tx_id)
        return gone

    def forgotten(self, tx_ids: Iterable[bytes]) -> None:
        with self._lock:
            for tx_id in tx_ids:
                self._pending.pop(tx_id, None)

    def forget(self, tx_ids: Sequence[bytes]) -> None:
        """Delete the pending entries of ``tx_ids`` now (committed ones found at a start)."""
        with self._db.write_batch() as batch:
            self.forgotten(self.forget_in(batch, tx_ids))

    # drops ---------------------------------------------------------------------------

    def record_drops(self, drops: Sequence[Drop]) -> None:
        """Record ``drops`` and delete their pending entries, in one batch; forget the
        oldest records beyond ``max_drops``."""
        if not drops:
            return
        written: dict[int, bytes] = {}  # drop number -> tx id, in this batch
        latest: dict[bytes, int] = {}  # tx id -> its last drop number in this batch
        with self._lock, self._db.write_batch() as batch:
            for drop in drops:
                number = self.dropped_total
                self.dropped_total += 1
                reason = drop.reason.encode()[:MAX_REASON_BYTES]
                batch.put(DROPPED_PREFIX + drop.tx_id,
                          _DROP.pack(number, drop.code, drop.height) + reason)
                batch.put(DROP_ORDER_PREFIX + _U64.pack(number), drop.tx_id)
                written[number], latest[drop.tx_id] = drop.tx_id, number
                key = self._pending.pop(drop.tx_id, None)
                if key is not None:
                    batch.delete(key)
            while self.dropped_total - self._oldest_drop > self.max_drops:
                number = self._oldest_drop
                self._oldest_drop += 1
                order_key = DROP_ORDER_PREFIX + _U64.pack(number)
                batch.delete(order_key)
                tx_id = written.get(number) or self._db.get(order_key)
                if tx_id is None:  # pragma: no cover - every number below the total is kept
                    continue
                if tx_id in latest:
                    last = latest[tx_id]
                else:
                    record = self._db.get(DROPPED_PREFIX + tx_id)
                    last = -1 if record is None else _DROP.unpack_from(record)[0]
                if last == number:  # not a later drop of the same id
                    batch.delete(DROPPED_PREFIX + tx_id)

    def dropped(self, tx_id: bytes) -> Drop | None:
        """The latest drop record of ``tx_id``, or None (never dropped, or forgotten)."""
        record = self._db.get(DROPPED_PREFIX + tx_id)
        if record is None:
            return None
        _, code, height = _DROP.unpack_from(record)
        return Drop(tx_id, code, record[_DROP.size:].decode(errors="replace"), height)
