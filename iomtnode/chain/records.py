"""Patients' streams as the store keeps them: the indices written with each block, the
erasures executed when an ``Erase`` commits, and the queries over both (docs/privacy.md,
section 5; docs/privacy-store.md).

At commit, in the block's own batch: each reading is indexed by its device's stream and its
timestamp, each wrap-carrying transaction (grant, epoch, revocation) by its stream and epoch,
and a class 1 or 2 reading's blob becomes permanent (or is marked missing, to be fetched from
peers). An erasure strips the covered readings' sidecars (and, for a whole scope, every wrap
of the stream) by rewriting the stored blocks with those transactions' leaves: no block hash,
Merkle root or receipt changes. It deletes their blobs, records who erased each reading, and
names the key ranges to compact so the bytes leave the database's files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ..core import codec
from ..core.block import Block, split_block
from ..core.crypto import KEY_BYTES
from ..core.fields import U64_MAX
from ..core.ledger import GrantRecord
from ..core.sidecar import decode_wraps
from ..core.tx import (
    FORWARD,
    EpochAnnounce,
    Erase,
    Grant,
    Reading,
    RevokeGrant,
    SignedTx,
    decode_tx,
)
from ..store.leveldb import BLOCK_PREFIX
from ..store.sidecars import (
    BLOB_PREFIX,
    BLOB_STREAM_PREFIX,
    COMPACT_PREFIX,
    LOCATION,
    MISSING_BLOB_PREFIX,
    PENDING_BLOB_PREFIX,
    READING_PREFIX,
    U64,
    WRAP_PREFIX,
    encode_ranges,
)
from ..store.txlog import PENDING_PREFIX

MAX_STREAM_READINGS = 1_000  # readings one stream_readings call returns at most (each reads
# its block from the store: a cursor pages through more)
WRAPPERS = (Grant, EpochAnnounce, RevokeGrant)
_ID_BYTES = 32
_AFTER_BYTES = U64.size + _ID_BYTES  # a cursor: ts_ms and tx id of the last reading returned
_END = b"\xff" * (U64.size + _ID_BYTES + 1)  # above every key suffix after a stream


@dataclass(frozen=True, slots=True)
class StreamReading:
    """A committed reading of a stream: with its sidecar when this node holds it (class 0),
    stripped otherwise; ``erased_by`` the erasing transaction's id or b""; ``blob`` whether
    this node holds the class 1 or 2 payload."""

    tx: SignedTx
    height: int
    erased_by: bytes
    blob: bool


@dataclass(frozen=True, slots=True)
class WrapEntry:
    """An epoch's secret wrapped to a grantee, from a grant or an epoch's wraps."""

    epoch: int
    mode: int
    wrap: bytes
    tx_id: bytes


@dataclass(frozen=True, slots=True)
class StreamView:
    """A stream's ledger metadata: its current epoch and key, whether it was erased, its live
    grants, and the committed transaction that set the current epoch (with its wraps if held)."""

    epoch: int
    public: bytes
    erased: bool
    grants: dict[bytes, GrantRecord]
    announcement: SignedTx | None


class IndexView(Protocol):
    """The reads of the store's :class:`~iomtnode.store.sidecars.Sidecars` used here."""

    def get(self, key: bytes) -> bytes | None: ...

    def iterate(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]: ...

    def pending_blob(self, commitment: bytes) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class IndexedBlock:
    """What a block adds to the store besides itself: index entries (full keys, None
    deletes), the block's own bytes if an erasure in it stripped some of its transactions,
    and the key ranges to compact once written."""

    index: dict[bytes, bytes | None]
    block_bytes: bytes | None
    compact: bytes  # the key of the compaction to-do in ``index``, b"" if none


def reading_key(stream: bytes, ts_ms: int, tx_id: bytes) -> bytes:
    return READING_PREFIX + stream + U64.pack(ts_ms) + tx_id


def index_block(block: Block, index_view: IndexView, block_bytes: Callable[[int], bytes | None],
                streams: dict[bytes, bytes], stream_of: Callable[[bytes], bytes]
                ) -> IndexedBlock:
    """The index entries of ``block`` and the erasures it commits. ``streams`` maps device
    keys to their stream (one dict lookup per reading); ``stream_of`` finds and caches a
    device missing from it."""
    height = block.height
    index: dict[bytes, bytes | None] = {}
    erasures: list[tuple[int, SignedTx]] = []
    for position, tx in enumerate(block.txs):
        body = tx.body
        if type(body) is Reading:
            stream = streams.get(body.device) or stream_of(body.device)
            index[READING_PREFIX + stream + U64.pack(body.ts_ms) + tx.id] = LOCATION.pack(
                height, position)
            if body.size_class:
                _blob_committed(index, index_view, body.commitment, stream, body.epoch)
        elif type(body) in WRAPPERS:
            wrapper: Grant | EpochAnnounce | RevokeGrant = body  # type: ignore[assignment]
            index[WRAP_PREFIX + wrapper.stream + U64.pack(wrapper.epoch) + tx.id] = (
                LOCATION.pack(height, position))
        elif type(body) is Erase:
            erasures.append((position, tx))
    if not erasures:
        return IndexedBlock(index, None, b"")
    eraser = _Eraser(block, index, index_view, block_bytes)
    for position, tx in erasures:
        eraser.erase(position, tx)
    return eraser.result()


def _blob_owner(index: dict[bytes, bytes | None], view: IndexView, commitment: bytes
                ) -> bytes | None:
    """The stream that owns the blob ``commitment`` with this block's entries on top."""
    key = BLOB_STREAM_PREFIX + commitment
    value = index[key] if key in index else view.get(key)
    return None if value is None else value[:KEY_BYTES]


def _blob_committed(index: dict[bytes, bytes | None], view: IndexView, commitment: bytes,
                    stream: bytes, epoch: int) -> None:
    if _blob_owner(index, view, commitment) is not None:
        return  # a blob is its first reading's: a copied commitment takes nothing over
    index[BLOB_STREAM_PREFIX + commitment] = stream + U64.pack(epoch)
    pending = view.pending_blob(commitment)
    if pending is not None:
        index[BLOB_PREFIX + commitment] = pending
        index[PENDING_BLOB_PREFIX + commitment] = None
    elif view.get(BLOB_PREFIX + commitment) is None:
        index[MISSING_BLOB_PREFIX + commitment] = stream


def _merged(view: IndexView, index: dict[bytes, bytes | None], start: bytes, stop: bytes
            ) -> list[tuple[bytes, bytes]]:
    """The entries in ``[start, stop)`` of the store with this block's on top."""
    merged = dict(view.iterate(start, stop))
    for key, value in index.items():
        if start <= key < stop:
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
    return sorted(merged.items())


class _Eraser:
    """The erasures of one block: each stored block it touches is read and rewritten once."""

    def __init__(self, block: Block, index: dict[bytes, bytes | None], view: IndexView,
                 block_bytes: Callable[[int], bytes | None]) -> None:
        self._block = block
        self._index = index
        self._view = view
        self._block_bytes = block_bytes
        self._blocks: dict[int, tuple[bytes, list[bytes], bytes]] = {}
        self._touched: set[int] = set()
        # the pending log's entries held the sidecars until their commit; its range starts at
        # the lowest arrival number (not at the bare prefix, whose key just below would be
        # the empty key: a compaction of every block stored)
        self._compact: list[tuple[bytes, bytes]] = [
            (PENDING_PREFIX + bytes(U64.size), PENDING_PREFIX + _END)]

    def erase(self, position: int, tx: SignedTx) -> None:
        x = tx.body
        assert type(x) is Erase
        start = READING_PREFIX + x.stream + U64.pack(x.since_ms)
        stop = READING_PREFIX + x.stream + U64.pack(x.until_ms)
        for key, value in _merged(self._view, self._index, start, stop):
            height, pos = LOCATION.unpack_from(value)
            if len(value) > LOCATION.size or (height, pos) > (self._block.height, position):
                continue  # erased already, or committed after the erasure
            self._strip(height, pos, x.stream)
            self._index[key] = value + tx.id
        self._compact.append((start, stop))
        if x.whole_scope:
            start = WRAP_PREFIX + x.stream
            for key, value in _merged(self._view, self._index, start, start + _END):
                height, pos = LOCATION.unpack_from(value)
                if len(value) == LOCATION.size and (height, pos) < (self._block.height, position):
                    self._strip(height, pos, x.stream)
                    self._index[key] = value + tx.id

    def _parts(self, height: int) -> tuple[bytes, list[bytes], bytes]:
        parts = self._blocks.get(height)
        if parts is None:
            if height == self._block.height:
                block = self._block
                last = block.last_commit.encode() if block.last_commit else b""
                parts = (block.header_bytes, [tx.raw for tx in block.txs], last)
            else:
                raw = self._block_bytes(height)
                assert raw is not None, "every indexed transaction's block is stored"
                parts = split_block(raw)
            self._blocks[height] = parts
        return parts

    def _strip(self, height: int, position: int, stream: bytes) -> None:
        raws = self._parts(height)[1]
        tx = decode_tx(raws[position])
        if tx.sidecar:
            raws[position] = tx.leaf_bytes
            self._touched.add(height)
        body = tx.body
        if (type(body) is Reading and body.size_class  # the blob of this stream's reading
                and _blob_owner(self._index, self._view, body.commitment) in (stream, None)):
            for prefix in (BLOB_PREFIX, BLOB_STREAM_PREFIX, MISSING_BLOB_PREFIX,
                           PENDING_BLOB_PREFIX):
                self._index[prefix + body.commitment] = None
            self._compact.append((BLOB_PREFIX + body.commitment,
                                  BLOB_PREFIX + body.commitment + b"\x00"))

    def result(self) -> IndexedBlock:
        own: bytes | None = None
        for height in sorted(self._touched):
            header, raws, last = self._blocks[height]
            encoded = codec.encode([header, raws, last])
            if height == self._block.height:
                own = encoded
            else:
                self._index[BLOCK_PREFIX + U64.pack(height)] = encoded
        if self._touched:
            self._compact.append((BLOCK_PREFIX + U64.pack(min(self._touched)),
                                  BLOCK_PREFIX + U64.pack(max(self._touched) + 1)))
        todo = COMPACT_PREFIX + U64.pack(self._block.height)
        self._index[todo] = encode_ranges(self._compact)
        return IndexedBlock(self._index, own, todo)


# queries ----------------------------------------------------------------------------------


class _StoredTxs:
    """Transactions read from stored blocks, each block split once per query."""

    def __init__(self, block_bytes: Callable[[int], bytes | None]) -> None:
        self._block_bytes = block_bytes
        self._raws: dict[int, list[bytes]] = {}

    def at(self, location: bytes) -> tuple[SignedTx, int]:
        height, position = LOCATION.unpack_from(location)
        raws = self._raws.get(height)
        if raws is None:
            raw = self._block_bytes(height)
            assert raw is not None, "every indexed transaction's block is stored"
            raws = self._raws[height] = split_block(raw)[1]
        return decode_tx(raws[position]), height


def stream_readings(view: IndexView, block_bytes: Callable[[int], bytes | None], stream: bytes,
                    since_ms: int, until_ms: int, after: bytes, limit: int
                    ) -> list[StreamReading]:
    """The stream's readings with ``since_ms <= ts_ms < until_ms``, ordered by (ts_ms, tx
    id), after the cursor ``after`` (b"" or ``ts_ms u64 | tx id``), at most ``limit`` (and
    :data:`MAX_STREAM_READINGS`). Raises ValueError for a malformed cursor."""
    if after and len(after) != _AFTER_BYTES:
        raise ValueError(f"a cursor is {_AFTER_BYTES} bytes (ts_ms and tx id), got {len(after)}")
    if not 0 <= since_ms < until_ms <= U64_MAX:
        return []
    start = READING_PREFIX + stream + U64.pack(since_ms)
    stop = READING_PREFIX + stream + U64.pack(until_ms)
    start = max(start, READING_PREFIX + stream + after + b"\x00") if after else start
    txs = _StoredTxs(block_bytes)
    found = []
    for _, value in view.iterate(start, stop):
        if len(found) >= min(limit, MAX_STREAM_READINGS):
            break
        tx, height = txs.at(value)
        body = tx.body
        assert type(body) is Reading
        blob = bool(body.size_class) and view.get(BLOB_PREFIX + body.commitment) is not None
        found.append(StreamReading(tx, height, value[LOCATION.size:], blob))
    return found


def stream_wraps(view: IndexView, block_bytes: Callable[[int], bytes | None], stream: bytes,
                 grantee: bytes) -> list[WrapEntry]:
    """The wraps addressed to ``grantee`` in the stream's grants and epochs this node holds,
    by epoch. An epoch's wrap has the mode of the grantee's grant before it."""
    txs = _StoredTxs(block_bytes)
    mode = FORWARD
    found = []
    start = WRAP_PREFIX + stream
    for _, value in view.iterate(start, start + _END):
        tx, _ = txs.at(value)
        body = tx.body
        if type(body) is Grant:
            if body.grantee == grantee:
                mode = body.mode
                if tx.sidecar:
                    found.append(WrapEntry(body.epoch, body.mode, tx.sidecar, tx.id))
        elif tx.sidecar and grantee in body.grantees:  # type: ignore[union-attr]
            for name, wrap in decode_wraps(tx.sidecar):
                if name == grantee:
                    found.append(WrapEntry(body.epoch, mode, wrap, tx.id))  # type: ignore[union-attr]
    return found


def epoch_announcement(view: IndexView, block_bytes: Callable[[int], bytes | None],
                       stream: bytes, epoch: int) -> SignedTx | None:
    """The committed epoch announcement or revocation that started ``epoch`` of ``stream``."""
    start = WRAP_PREFIX + stream + U64.pack(epoch)
    txs = _StoredTxs(block_bytes)
    for _, value in view.iterate(start, start + _END[:_ID_BYTES + 1]):
        tx, _ = txs.at(value)
        if type(tx.body) in (EpochAnnounce, RevokeGrant):
            return tx
    return None
