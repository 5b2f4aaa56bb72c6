"""Erasures carried out after their commit, in bounded chunks (docs/privacy-store.md).

An ``Erase`` commits with two small entries in its block's batch: the erasure in its
stream's list (``E``: what the queries need to hide the covered content at once) and a
to-do (``Z``) with a cursor. The erasure job, a worker thread of the store, then walks the
stream's reading index (and, for a whole scope, its wrap index) from the cursor, a chunk at
a time: it rewrites the stored blocks holding covered transactions without their sidecars,
deletes their blobs, records the erasing id on their index entries, and moves the cursor, all
in the chunk's one synced batch. A chunk touches at most :data:`ERASE_CHUNK_BLOCKS` blocks,
about :data:`ERASE_CHUNK_BYTES` of them and :data:`ERASE_CHUNK_ENTRIES` index entries, so
neither a commit nor a chunk grows with what an erasure covers; each chunk names the key
ranges it changed for the compaction worker. The last chunk deletes the erasure's ``E`` and
``Z`` entries.

Each chunk reads and writes under the store's ``commit_lock``, which every block's batch and
every fetched blob's write hold too: a chunk sees no block half written, and a blob fetched
while it runs is either deleted by it or refused after it. No commit rewrites a stored block
(only this job does), and the index entries a chunk changes are those of transactions already
committed, which no later commit writes again.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..core import codec
from ..core.block import split_block
from ..core.crypto import KEY_BYTES
from ..core.fields import U64_MAX
from ..core.tx import Reading, decode_tx
from ..store.leveldb import BLOCK_PREFIX
from ..store.sidecars import (
    BLOB_PREFIX,
    BLOB_STREAM_PREFIX,
    COMPACT_PREFIX,
    ERASE_TODO_PREFIX,
    ERASURE_PREFIX,
    LOCATION,
    MISSING_BLOB_PREFIX,
    PENDING_BLOB_PREFIX,
    READING_PREFIX,
    U64,
    WRAP_PREFIX,
    encode_ranges,
)
from ..store.txlog import PENDING_PREFIX

if TYPE_CHECKING:
    from ..store import BlockStore

ERASE_CHUNK_BLOCKS = 64  # stored blocks one chunk of an erasure rewrites at most
ERASE_CHUNK_BYTES = 8 * 1024 * 1024  # bytes of blocks one chunk rewrites, about (it takes
# a block while below this, so at most this plus one block)
ERASE_CHUNK_ENTRIES = 4_096  # index entries one chunk walks at most (covered or not)
_U32 = struct.Struct(">I")
_ID_BYTES = 32
_END = b"\xff" * (U64.size + _ID_BYTES + 1)  # above every key suffix after a stream
_JOB = "erasure"


class IndexReads(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def iterate(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]: ...


@dataclass(frozen=True, slots=True)
class Erasure:
    """A committed erasure of a stream the job has not finished: it covers the readings
    with ``since_ms <= ts_ms < until_ms`` committed before it (and, for the whole scope,
    the stream's wraps)."""

    height: int
    position: int
    since_ms: int
    until_ms: int
    tx_id: bytes

    @property
    def whole_scope(self) -> bool:
        return self.since_ms == 0 and self.until_ms == U64_MAX

    def before(self, height: int, position: int) -> bool:
        """Whether the transaction at ``(height, position)`` was committed before this."""
        return (height, position) < (self.height, self.position)

    def covers(self, ts_ms: int, height: int, position: int) -> bool:
        return self.since_ms <= ts_ms < self.until_ms and self.before(height, position)


def erasure_entry(stream: bytes, height: int, position: int, since_ms: int, until_ms: int,
                  tx_id: bytes) -> dict[bytes, bytes]:
    """The two entries an ``Erase`` adds to its block's batch: the stream's erasure and the
    job's to-do, its cursor at the start."""
    at = LOCATION.pack(height, position)
    return {ERASURE_PREFIX + stream + at: U64.pack(since_ms) + U64.pack(until_ms) + tx_id,
            ERASE_TODO_PREFIX + at: stream + _U32.pack(0)}


def pending_erasures(view: IndexReads, stream: bytes) -> list[Erasure]:
    """The stream's erasures not done yet, in commit order (usually none; one read)."""
    found = []
    start = ERASURE_PREFIX + stream
    for key, value in view.iterate(start, start + b"\xff" * (LOCATION.size + 1)):
        height, position = LOCATION.unpack_from(key, len(start))
        since_ms, until_ms = U64.unpack_from(value)[0], U64.unpack_from(value, U64.size)[0]
        found.append(Erasure(height, position, since_ms, until_ms, value[2 * U64.size:]))
    return found


def erased_by(erasures: list[Erasure], ts_ms: int, height: int, position: int) -> bytes:
    """The id of the first of ``erasures`` covering a reading, or b""."""
    for erasure in erasures:
        if erasure.covers(ts_ms, height, position):
            return erasure.tx_id
    return b""


def wrap_erased(erasures: list[Erasure], height: int, position: int) -> bool:
    """Whether a wrap-carrying transaction at ``(height, position)`` is erased."""
    return any(e.whole_scope and e.before(height, position) for e in erasures)


def blob_erased(view: IndexReads, owner: bytes) -> bool:
    """Whether the reading that owns a blob (its ``N`` value) is covered by an erasure of its
    stream not done yet (once done, the blob is deleted)."""
    if len(owner) < KEY_BYTES + 2 * U64.size + LOCATION.size:
        return False
    erasures = pending_erasures(view, owner[:KEY_BYTES])
    if not erasures:
        return False
    ts_ms = U64.unpack_from(owner, KEY_BYTES + U64.size)[0]
    height, position = LOCATION.unpack_from(owner, KEY_BYTES + 2 * U64.size)
    return bool(erased_by(erasures, ts_ms, height, position))


class ErasureJob:
    """The store's erasure job (module doc): :meth:`wake` after an erasure commits (and
    when the chain opens, to resume)."""

    def __init__(self, store: BlockStore) -> None:
        self._store = store

    def wake(self) -> None:
        """Start the job if an erasure waits for it (one seek when none does)."""
        sidecars = self._store.sidecars
        if next(sidecars.iterate(ERASE_TODO_PREFIX, ERASE_TODO_PREFIX + b"\xff"), None):
            sidecars.start_job(_JOB, self.step)

    def step(self) -> bool:
        """Carry out one chunk of the first erasure waiting; False when none waits."""
        sidecars = self._store.sidecars
        with sidecars.commit_lock:
            todo = next(sidecars.iterate(ERASE_TODO_PREFIX, ERASE_TODO_PREFIX + b"\xff"), None)
            if todo is None:
                return False
            changes, compact = _Chunk(sidecars, self._store, *todo).run()
            sidecars.write(changes)
        if compact:
            sidecars.compact_later(compact)
        return True


class BlockReads(Protocol):
    def block_bytes(self, height: int) -> bytes | None: ...


class _Chunk:
    """One chunk of an erasure: the entries of its batch and its compaction to-do."""

    def __init__(self, view: IndexReads, blocks: BlockReads, key: bytes, value: bytes) -> None:
        self._view, self._blocks = view, blocks
        self._key = key
        self._at = key[len(ERASE_TODO_PREFIX):]
        self._stream = value[:KEY_BYTES]
        self._count = _U32.unpack_from(value, KEY_BYTES)[0]
        self._cursor = value[KEY_BYTES + _U32.size:]
        self._changes: dict[bytes, bytes | None] = {}
        self._parts: dict[int, tuple[bytes, list[bytes], bytes]] = {}
        self._touched: set[int] = set()
        self._bytes = 0
        self._compact: list[tuple[bytes, bytes]] = []

    def run(self) -> tuple[dict[bytes, bytes | None], bytes]:
        stream = self._stream
        (erasure,) = [e for e in pending_erasures(self._view, stream)
                      if LOCATION.pack(e.height, e.position) == self._at]
        walks = [(READING_PREFIX + stream + U64.pack(erasure.since_ms),
                  READING_PREFIX + stream + U64.pack(erasure.until_ms))]
        if erasure.whole_scope:
            walks.append((WRAP_PREFIX + stream, WRAP_PREFIX + stream + _END))
        done, last, walked = True, self._cursor, 0
        for start, stop in walks:
            if last:
                start = max(start, last + b"\x00")
            for key, value in (self._view.iterate(start, stop) if start < stop else ()):
                if walked >= ERASE_CHUNK_ENTRIES:
                    done = False
                    break
                height, position = LOCATION.unpack_from(value)
                if len(value) == LOCATION.size and erasure.before(height, position):
                    if height not in self._parts and (
                            len(self._parts) >= ERASE_CHUNK_BLOCKS
                            or self._bytes >= ERASE_CHUNK_BYTES):
                        done = False
                        break
                    self._strip(height, position)
                    self._changes[key] = value + erasure.tx_id
                walked += 1
                last = key
            if not done:
                break
        return self._finish(done, last)

    def _strip(self, height: int, position: int) -> None:
        parts = self._parts.get(height)
        if parts is None:
            raw = self._blocks.block_bytes(height)
            assert raw is not None, "every indexed transaction's block is stored"
            self._bytes += len(raw)
            parts = self._parts[height] = split_block(raw)
        raws = parts[1]
        tx = decode_tx(raws[position])
        if tx.sidecar:
            raws[position] = tx.leaf_bytes
            self._touched.add(height)
        body = tx.body
        if type(body) is Reading and body.size_class and self._owner(body.commitment) in (
                self._stream, None):  # the blob of this stream's reading
            for prefix in (BLOB_PREFIX, BLOB_STREAM_PREFIX, MISSING_BLOB_PREFIX,
                           PENDING_BLOB_PREFIX):
                self._changes[prefix + body.commitment] = None
            self._compact.append((BLOB_PREFIX + body.commitment,
                                  BLOB_PREFIX + body.commitment + b"\x00"))

    def _owner(self, commitment: bytes) -> bytes | None:
        key = BLOB_STREAM_PREFIX + commitment
        value = self._changes[key] if key in self._changes else self._view.get(key)
        return None if value is None else value[:KEY_BYTES]

    def _finish(self, done: bool, last: bytes) -> tuple[dict[bytes, bytes | None], bytes]:
        changes = self._changes
        for height in sorted(self._touched):
            header, raws, commit = self._parts[height]
            changes[BLOCK_PREFIX + U64.pack(height)] = codec.encode([header, raws, commit])
        if self._touched:
            self._compact.append((BLOCK_PREFIX + U64.pack(min(self._touched)),
                                  BLOCK_PREFIX + U64.pack(max(self._touched) + 1)))
        if done:  # the pending log's entries held the sidecars until their commit; its
            # range starts at the lowest arrival number (not at the bare prefix, whose key
            # just below would be the empty key: a compaction of every block stored)
            self._compact.append((PENDING_PREFIX + bytes(U64.size), PENDING_PREFIX + _END))
            changes[self._key] = None
            changes[ERASURE_PREFIX + self._stream + self._at] = None
        else:
            changes[self._key] = self._stream + _U32.pack(self._count + 1) + last
        compact = b""
        if self._compact:
            compact = COMPACT_PREFIX + self._at + _U32.pack(self._count)
            changes[compact] = encode_ranges(self._compact)
        return changes, compact
