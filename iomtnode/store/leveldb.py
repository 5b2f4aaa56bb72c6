"""The node's LevelDB store: blocks, their indices, the state keyspace and node metadata.

A narrow, bytes-level interface over plyvel. It never decodes a block; the chain layer does, and
hands the store the encoded block, its hash, its commit certificate, its transaction ids and the
state changes it causes.

Keyspace: every key starts with a one-byte namespace prefix. Heights are 8-byte big-endian unsigned
integers (``>Q``) so that keys sort by height.

=========  ==========================  ==============================================
prefix     key suffix                  value
=========  ==========================  ==============================================
``b"B"``   height (8 bytes)            encoded block
``b"C"``   height (8 bytes)            encoded commit certificate (seal) of the block
``b"K"``   block hash                  height (8 bytes)
``b"T"``   transaction id              height (8 bytes) + position in block (4 bytes)
``b"S"``   state key (opaque)          state value (opaque; chosen by the state layer)
``b"M"``   meta name (UTF-8)           meta value (opaque)
``b"H"``   (empty)                     head: height (8 bytes) + block hash
``b"P"``   (see :mod:`.txlog`)         accepted transactions not committed yet
``b"R"``   (see :mod:`.sidecars`)      streams' readings and wraps, blobs (R W L N X Q)
``b"D"``   (see :mod:`.txlog`)         the record of accepted transactions dropped
``b"O"``   (see :mod:`.txlog`)         the order of that record, oldest first
=========  ==========================  ==============================================

Crash safety: ``commit_block`` writes a block, all its indices, its state changes and the head
pointer in one LevelDB write batch with ``sync=True``. LevelDB applies a batch atomically, so a
SIGKILL (or power loss, given an honest disk) at any moment leaves the store at its last whole
block: either everything of a block is there, or nothing of it is. ``commit_blocks`` does the same
for several consecutive blocks at once (a syncing node): one synced batch, so a crash leaves the
store at the head before the batch or at its last block, never in between. ``put_meta`` and
``set_commit`` are single synced writes.

Concurrency: LevelDB's lock file lets only one process open a store; ``open`` turns a held lock into
``StoreLockedError``. Within a process, reads may run from any thread, but the writes
(``commit_block``, ``set_commit``) must be serialized by the caller (the chain layer is the one
writer).

State reads go through a bounded cache of values (and absences) read or written. The state is
written only by ``commit_blocks``, which updates the cache after its batch is written. A read
that overlapped a write (it may have seen the value before the write) does not fill the cache,
so the cache never holds a value the store no longer has.
"""

from __future__ import annotations

import pathlib
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import plyvel

from .errors import (
    HeightMismatchError,
    StoreCorruptError,
    StoreError,
    StoreFormatError,
    StoreLockedError,
)
from .format import bring_format_up_to_date
from .memory import LEVELDB_MEMORY_OPTIONS, disable_table_mmap
from .sidecars import Sidecars
from .txlog import TxLog

__all__ = [
    "BlockRecord",
    "BlockStore",
    "HeightMismatchError",
    "StoreCorruptError",
    "StoreError",
    "StoreFormatError",
    "StoreLockedError",
]

BLOCK_PREFIX = b"B"
COMMIT_PREFIX = b"C"
HASH_PREFIX = b"K"
TX_PREFIX = b"T"
STATE_PREFIX = b"S"
META_PREFIX = b"M"
HEAD_KEY = b"H"

_HEIGHT = struct.Struct(">Q")  # 8 bytes, big-endian: keys sort by height
_TX_LOCATION = struct.Struct(">QI")  # height (8 bytes) + position in block (4 bytes)
BLOOM_FILTER_BITS = 10  # bits per key in each table's Bloom filter (~1% false positives):
# a lookup of a key that is absent (a new transaction's id in the tx index, at every
# admission and block check) skips the tables without reading them; measured on 300,000
# ids: 34 µs per miss without, 8 with
COMPRESSION = None  # LevelDB's block compression: off. What is stored is signatures, hashes,
# keys and payloads sealed to patients, which do not compress; Snappy still tried every
# block, written and compacted: 6% of a loaded node's CPU (measured with perf) for nothing.
# (Blocks an older store compressed are still read: each block says how it is stored.)
LOCK_FILE_NAME = "LOCK"  # LevelDB's own lock file inside the store directory
STATE_CACHE_KEYS = 16_384  # state values (or their absence) kept in memory (~4 MB): every
# reading reads its device's record and last sequence number, in the mempool and in each
# block check; a LevelDB get costs about 2 µs on a loaded node, a dict lookup 0.1


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """Everything the store keeps of one block (see :meth:`BlockStore.commit_block`)."""

    height: int
    block_hash: bytes
    block_bytes: bytes
    commit_bytes: bytes
    tx_ids: Sequence[bytes]
    state_changes: Mapping[bytes, bytes | None]
    # stream indices, blobs, and blocks rewritten by an erasure (full keys; see .sidecars)
    index: Mapping[bytes, bytes | None] = field(default_factory=dict)


def _height_key(prefix: bytes, height: int) -> bytes:
    return prefix + _HEIGHT.pack(height)


def _valid_height(height: int) -> bool:
    return 0 <= height < 2**64


class BlockStore:
    """A LevelDB store of one node's chain. Open it with ``BlockStore.open(path)``."""

    def __init__(self, db: plyvel.DB, path: pathlib.Path) -> None:
        """Wrap an open plyvel database; use ``open`` instead of calling this."""
        self._db = db
        self.path = path
        self._head = self._read_head()
        self.txlog = TxLog(db)  # accepted, not committed: pending and dropped ones
        self.sidecars = Sidecars(db)  # stream indices and blobs
        self._state_cache: dict[bytes, bytes | None] = {}
        self._cache_lock = threading.Lock()  # a read's fill against a commit's update
        self._version = 0  # odd while a commit writes; +2 per commit (see get_state)

    @classmethod
    def open(cls, path: pathlib.Path) -> BlockStore:
        """Open (creating if missing) the store in directory ``path`` and check its head.

        Raises ``StoreLockedError`` if another process holds the store, ``StoreCorruptError`` if
        the head points at a missing block, ``StoreFormatError`` if a newer release laid it
        out (an older layout is migrated: :mod:`.format`), and ``StoreError`` (with LevelDB's
        reason) for any other failure to open. The parent of ``path`` must exist.
        """
        path = pathlib.Path(path)
        disable_table_mmap()  # before LevelDB makes its environment, at the first open
        try:
            db = plyvel.DB(str(path), create_if_missing=True,
                           bloom_filter_bits=BLOOM_FILTER_BITS, compression=COMPRESSION,
                           **LEVELDB_MEMORY_OPTIONS)
        except plyvel.IOError as exc:
            reason = _reason(exc)
            if "IO error: lock " in reason:  # LevelDB's wording for a failed LockFile()
                lock = path / LOCK_FILE_NAME
                raise StoreLockedError(
                    f"cannot lock the store {lock}: another iomtnode process is probably running "
                    f"on this home; stop it first ({reason})"
                ) from exc
            raise StoreError(f"cannot open the store at {path}: {reason}") from exc
        except plyvel.Error as exc:
            raise StoreError(f"cannot open the store at {path}: {_reason(exc)}") from exc
        try:
            bring_format_up_to_date(db, path)
            return cls(db, path)
        except BaseException:
            db.close()
            raise

    def close(self) -> None:
        """Close the store (after its compactions; an erasure job stops between two of its
        chunks and resumes at the next open); closing twice is harmless."""
        self.sidecars.stop()
        self._db.close()

    def __enter__(self) -> BlockStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reads -------------------------------------------------------------------------------

    def head(self) -> tuple[int, bytes] | None:
        """``(height, block_hash)`` of the last whole block, or None on an empty store."""
        return self._head

    def block_bytes(self, height: int) -> bytes | None:
        """The encoded block at ``height``, or None (also for a negative height).

        Read around LevelDB's block cache: a block of 10,000 readings is a 2.8 MB value that
        would push out the cache's small, hot table blocks (transaction ids, state)."""
        if not _valid_height(height):
            return None
        return self._db.get(_height_key(BLOCK_PREFIX, height), fill_cache=False)

    def block_height(self, block_hash: bytes) -> int | None:
        """The height of the block with hash ``block_hash``, or None."""
        raw = self._db.get(HASH_PREFIX + block_hash)
        return None if raw is None else _HEIGHT.unpack(raw)[0]

    def commit_bytes(self, height: int) -> bytes | None:
        """The commit certificate (seal) of the block at ``height``, or None."""
        return self._db.get(_height_key(COMMIT_PREFIX, height)) if _valid_height(height) else None

    def tx_location(self, tx_id: bytes) -> tuple[int, int] | None:
        """``(height, position in block)`` of a committed transaction, or None."""
        raw = self._db.get(TX_PREFIX + tx_id)
        if raw is None:
            return None
        height, position = _TX_LOCATION.unpack(raw)
        return height, position

    def get_state(self, key: bytes) -> bytes | None:
        """The state value at ``key``, or None."""
        try:
            return self._state_cache[key]
        except KeyError:
            pass
        version = self._version
        value = self._db.get(STATE_PREFIX + key)
        with self._cache_lock:  # kept only if no commit wrote while it was read
            if version == self._version and not version & 1:
                self._cache(key, value)
        return value

    def _cache(self, key: bytes, value: bytes | None) -> None:
        if len(self._state_cache) >= STATE_CACHE_KEYS:
            self._state_cache.clear()  # refilled by the reads that follow
        self._state_cache[key] = value

    def iter_state(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` of every state key starting with ``prefix``, in key order.

        Keys come without the store's namespace byte. The iteration sees one consistent snapshot
        (LevelDB iterators do), even if blocks are committed meanwhile.
        """
        with self._db.iterator(prefix=STATE_PREFIX + prefix) as it:
            for key, value in it:
                yield key[len(STATE_PREFIX) :], value

    def get_meta(self, name: str) -> bytes | None:
        """The node metadata value ``name``, or None."""
        return self._db.get(META_PREFIX + name.encode())

    # -- writes ------------------------------------------------------------------------------

    def put_meta(self, name: str, value: bytes) -> None:
        """Set the node metadata value ``name`` (a synced write)."""
        self._db.put(META_PREFIX + name.encode(), value, sync=True)

    def rewrite_state(self, changes: Mapping[bytes, bytes | None],
                      meta: Mapping[str, bytes]) -> None:
        """Write state ``changes`` and metadata ``meta`` in one synced batch, outside any
        block: an index the ledger rules of a newer version keep, rebuilt from the state at
        open (see ``Chain``). After a crash either all of it is written or none."""
        with self._cache_lock:
            self._version += 1
        try:
            with self._db.write_batch(sync=True) as batch:
                for key, value in changes.items():
                    if value is None:
                        batch.delete(STATE_PREFIX + key)
                    else:
                        batch.put(STATE_PREFIX + key, value)
                for name, raw in meta.items():
                    batch.put(META_PREFIX + name.encode(), raw)
        finally:
            with self._cache_lock:
                self._state_cache.clear()
                self._version += 1

    def commit_block(
        self,
        *,
        height: int,
        block_hash: bytes,
        block_bytes: bytes,
        commit_bytes: bytes,
        tx_ids: Sequence[bytes],
        state_changes: Mapping[bytes, bytes | None],
        index: Mapping[bytes, bytes | None] | None = None,
    ) -> None:
        """Store a block, its indices and state changes, and make it the head, atomically.

        One synced write batch: the block and its commit certificate by height, hash -> height,
        each tx id -> (height, its index in ``tx_ids``), every state change (a value of None
        deletes the key) and the head pointer. When this returns the block is durable; a crash
        during the call leaves the store at the previous block or at this one, never in between.

        Raises ``HeightMismatchError`` unless ``height`` is 0 on an empty store or the head's
        height + 1, and ``ValueError`` for an empty hash or a ``tx_ids`` that repeats an id.
        """
        self.commit_blocks([BlockRecord(height, block_hash, block_bytes, commit_bytes, tx_ids,
                                        state_changes, index or {})])

    def commit_blocks(self, records: Sequence[BlockRecord]) -> None:
        """Store consecutive blocks and make the last one the head, in one synced batch.

        The same as calling :meth:`commit_block` for each (state changes are applied in
        order, a later block's value of a key winning), but atomic as a whole: after a crash
        the store is at the head before the call or at the last of ``records``. Raises as
        :meth:`commit_block` does, before anything is written.
        """
        expected = 0 if self._head is None else self._head[0] + 1
        for record in records:
            if record.height != expected:
                raise HeightMismatchError(
                    f"cannot commit height {record.height}: next is {expected}")
            if not record.block_hash:
                raise ValueError(f"block {record.height} has an empty hash")
            if len(set(record.tx_ids)) != len(record.tx_ids):
                raise ValueError(f"block {record.height} lists a transaction id twice")
            expected += 1
        if not records:
            return
        with self._cache_lock:
            self._version += 1
        written = False
        committed_pending: list[bytes] = []
        try:
            committed_pending = self._write(records)
            written = True
            self.txlog.forgotten(committed_pending)
            self.sidecars.written(record.index for record in records)
        finally:
            with self._cache_lock:  # the values just written; if the write failed, none
                for record in records:
                    for key, value in record.state_changes.items():
                        if written:
                            self._cache(key, value)
                        else:
                            self._state_cache.pop(key, None)
                self._version += 1
        last = records[-1]
        self._head = (last.height, bytes(last.block_hash))

    def _write(self, records: Sequence[BlockRecord]) -> list[bytes]:
        """Write ``records`` in one synced batch; returns the ids of kept pending
        transactions it committed (their entries deleted in the same batch)."""
        committed_pending: list[bytes] = []
        with self.sidecars.commit_lock, self._db.write_batch(sync=True) as batch:
            for record in records:
                height_bytes = _HEIGHT.pack(record.height)
                batch.put(BLOCK_PREFIX + height_bytes, record.block_bytes)
                batch.put(COMMIT_PREFIX + height_bytes, record.commit_bytes)
                batch.put(HASH_PREFIX + record.block_hash, height_bytes)
                for position, tx_id in enumerate(record.tx_ids):
                    batch.put(TX_PREFIX + tx_id, _TX_LOCATION.pack(record.height, position))
                committed_pending += self.txlog.forget_in(batch, record.tx_ids)
                for key, value in record.state_changes.items():
                    if value is None:
                        batch.delete(STATE_PREFIX + key)
                    else:
                        batch.put(STATE_PREFIX + key, value)
                self.sidecars.write_in(batch, record.index)
            last = records[-1]
            batch.put(HEAD_KEY, _HEIGHT.pack(last.height) + last.block_hash)
        return committed_pending

    def set_commit(self, height: int, commit_bytes: bytes) -> None:
        """Replace the commit certificate of the already stored block at ``height`` (synced).

        Raises ``StoreError`` if no block is stored at ``height``.
        """
        if self._head is None or not 0 <= height <= self._head[0]:
            raise StoreError(f"cannot set the commit of height {height}: no block stored there")
        self._db.put(_height_key(COMMIT_PREFIX, height), commit_bytes, sync=True)

    # -- internals ---------------------------------------------------------------------------

    def _read_head(self) -> tuple[int, bytes] | None:
        raw = self._db.get(HEAD_KEY)
        if raw is None:
            return None
        if len(raw) <= _HEIGHT.size:
            raise StoreCorruptError(f"the head record in {self.path} is malformed ({raw.hex()})")
        height = _HEIGHT.unpack_from(raw)[0]
        block_hash = raw[_HEIGHT.size :]
        if self.block_bytes(height) is None:
            raise StoreCorruptError(
                f"the head points at block {height} ({block_hash.hex()}), "
                f"which is missing from {self.path}"
            )
        return height, block_hash


def _reason(exc: plyvel.Error) -> str:
    """LevelDB's message of a plyvel error (plyvel passes it as bytes)."""
    arg = exc.args[0] if exc.args else exc
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)
