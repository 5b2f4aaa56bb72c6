"""Patients' streams as the store keeps them: the indices written with each block, the
erasures executed when an ``Erase`` commits, and the queries over both (docs/privacy.md,
section 5; docs/privacy-store.md).

At commit, in the block's own batch: each reading is indexed by its device's stream and its
timestamp, each wrap-carrying transaction (grant, epoch, revocation) by its stream and epoch,
and a class 1 or 2 reading's blob becomes permanent (or is marked missing, to be fetched from
peers). An erasure adds its stream's erasure and a to-do for the erasure job
(:mod:`.erasure`), which strips the stored blocks later, in bounded chunks; until it has,
the queries here hide what the erasure covers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

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
    stripped,
)
from ..store.sidecars import (
    BLOB_PREFIX,
    BLOB_STREAM_PREFIX,
    LOCATION,
    MISSING_BLOB_PREFIX,
    PENDING_BLOB_PREFIX,
    READING_PREFIX,
    U64,
    WRAP_PREFIX,
)
from .erasure import erased_by, erasure_entry, pending_erasures, wrap_erased

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
    deletes), and whether it commits an erasure (for the erasure job)."""

    index: dict[bytes, bytes | None]
    erasures: bool


def reading_key(stream: bytes, ts_ms: int, tx_id: bytes) -> bytes:
    return READING_PREFIX + stream + U64.pack(ts_ms) + tx_id


def index_block(block: Block, index_view: IndexView, streams: dict[bytes, bytes],
                stream_of: Callable[[bytes], bytes]) -> IndexedBlock:
    """The index entries of ``block`` and the erasures it commits (two entries each: the
    erasure job does the rest). ``streams`` maps device keys to their stream (one dict
    lookup per reading); ``stream_of`` finds and caches a device missing from it."""
    height = block.height
    index: dict[bytes, bytes | None] = {}
    erasures = False
    for position, tx in enumerate(block.txs):
        body = tx.body
        if type(body) is Reading:
            stream = streams.get(body.device) or stream_of(body.device)
            location = LOCATION.pack(height, position)
            index[READING_PREFIX + stream + U64.pack(body.ts_ms) + tx.id] = location
            if body.size_class:
                _blob_committed(index, index_view, body.commitment,
                                stream + U64.pack(body.epoch) + U64.pack(body.ts_ms) + location)
        elif type(body) in WRAPPERS:
            wrapper: Grant | EpochAnnounce | RevokeGrant = body  # type: ignore[assignment]
            index[WRAP_PREFIX + wrapper.stream + U64.pack(wrapper.epoch) + tx.id] = (
                LOCATION.pack(height, position))
        elif type(body) is Erase:
            index.update(erasure_entry(body.stream, height, position, body.since_ms,
                                       body.until_ms, tx.id))
            erasures = True
    return IndexedBlock(index, erasures)


def _blob_owner(index: dict[bytes, bytes | None], view: IndexView, commitment: bytes
                ) -> bytes | None:
    """The stream that owns the blob ``commitment`` with this block's entries on top."""
    key = BLOB_STREAM_PREFIX + commitment
    value = index[key] if key in index else view.get(key)
    return None if value is None else value[:KEY_BYTES]


def _blob_committed(index: dict[bytes, bytes | None], view: IndexView, commitment: bytes,
                    owner: bytes) -> None:
    """``owner``: the reading's stream, epoch, ts_ms and location (an erasure covers it)."""
    if _blob_owner(index, view, commitment) is not None:
        return  # a blob is its first reading's: a copied commitment takes nothing over
    stream = owner[:KEY_BYTES]
    index[BLOB_STREAM_PREFIX + commitment] = owner
    pending = view.pending_blob(commitment)
    if pending is not None:
        index[BLOB_PREFIX + commitment] = pending
        index[PENDING_BLOB_PREFIX + commitment] = None
    elif view.get(BLOB_PREFIX + commitment) is None:
        index[MISSING_BLOB_PREFIX + commitment] = stream


# queries ----------------------------------------------------------------------------------


class _StoredTxs:
    """Transactions read from stored blocks, each block split once per query."""

    def __init__(self, block_bytes: Callable[[int], bytes | None]) -> None:
        self._block_bytes = block_bytes
        self._raws: dict[int, list[bytes]] = {}

    def at(self, location: bytes) -> tuple[SignedTx, int, int]:
        """The transaction at ``location``, its height and position."""
        height, position = LOCATION.unpack_from(location)
        raws = self._raws.get(height)
        if raws is None:
            raw = self._block_bytes(height)
            assert raw is not None, "every indexed transaction's block is stored"
            raws = self._raws[height] = split_block(raw)[1]
        return decode_tx(raws[position]), height, position


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
    erasures = pending_erasures(view, stream)  # not done by the job yet; read before the
    # blocks (epoch_announcement says why)
    found = []
    for _, value in view.iterate(start, stop):
        if len(found) >= min(limit, MAX_STREAM_READINGS):
            break
        tx, height, position = txs.at(value)
        body = tx.body
        assert type(body) is Reading
        by = value[LOCATION.size:]
        if not by and erasures:
            by = erased_by(erasures, body.ts_ms, height, position)
            if by:
                tx = stripped(tx)
        blob = (bool(body.size_class) and not by
                and view.get(BLOB_PREFIX + body.commitment) is not None)
        found.append(StreamReading(tx, height, by, blob))
    return found


def stream_wraps(view: IndexView, block_bytes: Callable[[int], bytes | None], stream: bytes,
                 grantee: bytes) -> list[WrapEntry]:
    """The wraps addressed to ``grantee`` in the stream's grants and epochs this node holds,
    by epoch. An epoch's wrap has the mode of the grantee's grant before it."""
    txs = _StoredTxs(block_bytes)
    erasures = pending_erasures(view, stream)
    mode = FORWARD
    found = []
    start = WRAP_PREFIX + stream
    for _, value in view.iterate(start, start + _END):
        tx, height, position = txs.at(value)
        if erasures and wrap_erased(erasures, height, position):
            tx = stripped(tx)
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
    # the erasures before the block: the job's chunk rewrites the block and deletes its
    # erasure in one batch, so a block read after an erasure list that lacks it is stripped
    erasures = pending_erasures(view, stream)
    for _, value in view.iterate(start, start + _END[:_ID_BYTES + 1]):
        tx, height, position = txs.at(value)
        if type(tx.body) in (EpochAnnounce, RevokeGrant):
            return stripped(tx) if wrap_erased(erasures, height, position) else tx
    return None
