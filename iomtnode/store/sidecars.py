"""What a node keeps of patients' streams beside the blocks: where each reading and each
wrap-carrying transaction is, the large sealed payloads (blobs), and the blobs uploaded for
readings not committed yet (docs/privacy-store.md).

Bytes-level, like the rest of the store; the chain layer (:mod:`iomtnode.chain.records`)
computes the entries and the store writes them in the block's own batch. Keyspace (in the
store's LevelDB, beside the block store's and the transaction log's prefixes):

=========  ==========================================  ====================================
prefix     key suffix                                  value
=========  ==========================================  ====================================
``b"R"``   stream, ts_ms (8 bytes), tx id              location (height 8, position 4
                                                       bytes), then the erasing tx id if
                                                       erased
``b"W"``   stream, epoch (8 bytes), tx id              location, then the erasing tx id
``b"L"``   blob commitment                             the blob (a committed reading's)
``b"N"``   blob commitment                             the stream, epoch, ts_ms and location
                                                       of the reading naming it
``b"X"``   blob commitment                             the stream: committed, blob missing
``b"Q"``   blob commitment                             upload time (ms, 8 bytes) + the blob
``b"E"``   stream, location of the ``Erase``           since_ms, until_ms (8 bytes each),
                                                       its tx id: an erasure not yet done
``b"Z"``   location of the ``Erase``                   its stream, chunks done (4 bytes),
                                                       the last index key erased (a cursor)
``b"Y"``   location of the ``Erase``, chunk (4 bytes)  key ranges still to compact
=========  ==========================================  ====================================

An erasure's commit writes only its ``E`` and ``Z`` entries; a worker thread (the erasure
job, :mod:`iomtnode.chain.erasure`) does the rest in bounded chunks, each one batch.

Pending blobs (``Q``) are bounded by :data:`BLOB_PENDING_BYTES` and expire after
:data:`BLOB_PENDING_S` unless a committed reading names them first, or a reading naming
them is pending in this node's mempool (:meth:`Sidecars.claim`): an accepted reading keeps
its blob for as long as it waits (a partition, a network down for longer), else it would
commit with a payload no node holds.
"""

from __future__ import annotations

import collections
import itertools
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

READING_PREFIX = b"R"
WRAP_PREFIX = b"W"
BLOB_PREFIX = b"L"
BLOB_STREAM_PREFIX = b"N"
MISSING_BLOB_PREFIX = b"X"
PENDING_BLOB_PREFIX = b"Q"
COMPACT_PREFIX = b"Y"
ERASURE_PREFIX = b"E"
ERASE_TODO_PREFIX = b"Z"
BLOB_PENDING_BYTES = 64 * 1024 * 1024  # uploaded blobs no committed reading names yet
BLOB_PENDING_S = 600  # an uploaded blob waits this long for its reading, then is dropped
LOCATION = struct.Struct(">QI")  # height (8 bytes) + position in the block (4 bytes)
U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")


def encode_ranges(ranges: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Key ranges as ``(len, start, len, stop) ...`` (a compaction to-do's value)."""
    return b"".join(_U16.pack(len(key)) + key for pair in ranges for key in pair)


def decode_ranges(raw: bytes) -> list[tuple[bytes, bytes]]:
    keys, at = [], 0
    while at < len(raw):
        size = _U16.unpack_from(raw, at)[0]
        keys.append(raw[at + 2:at + 2 + size])
        at += 2 + size
    return list(zip(keys[::2], keys[1::2], strict=True))


class PendingFullError(RuntimeError):
    """No room for another pending blob (:data:`BLOB_PENDING_BYTES`)."""


class Sidecars:
    """The stream indices and blobs in the store's database ``db`` (a plyvel DB)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self._lock = threading.Lock()  # the pending table: the API adds, commits take
        self.commit_lock = threading.Lock()  # a block's batch against a fetched blob's write
        self._pending: dict[bytes, tuple[int, int]] = {}  # commitment -> (upload ms, bytes)
        uploads = [(U64.unpack_from(value)[0], key[1:], len(value) - U64.size)
                   for key, value in db.iterator(prefix=PENDING_BLOB_PREFIX)]
        for at_ms, commitment, size in sorted(uploads):  # oldest first, as they came
            self._pending[commitment] = (at_ms, size)
        self._pending_bytes = sum(size for _, size in self._pending.values())
        self._claimed: dict[bytes, int] = {}  # commitment -> pending readings naming it
        self._todos: collections.deque[bytes] = collections.deque()  # to compact, in order
        self._compacting = threading.Condition()  # the to-dos and whether a worker runs
        self._worker = False
        self._jobs: dict[str, bool] = {}  # running jobs -> woken again while running
        self._stopping = False
        for key in db.iterator(prefix=COMPACT_PREFIX, include_value=False):
            self.compact_later(key)  # an erasure's compaction a stop interrupted

    # reads ----------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def iterate(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` of every key in ``[start, stop)``, in key order."""
        with self._db.iterator(start=start, stop=stop) as it:
            yield from it

    def pending_blob(self, commitment: bytes) -> bytes | None:
        raw = self._db.get(PENDING_BLOB_PREFIX + commitment)
        return None if raw is None else raw[U64.size:]

    def holds_blob(self, commitment: bytes) -> bool:
        """Whether this node holds the blob, uploaded or committed."""
        with self._lock:
            if commitment in self._pending:
                return True
        return self._db.get(BLOB_PREFIX + commitment) is not None

    def missing_blobs(self, limit: int, after: bytes = b"") -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` ``(commitment, stream)`` of committed readings whose blob this node
        lacks, by commitment, those after ``after`` (a commitment) only."""
        start = MISSING_BLOB_PREFIX + after + b"\x00" if after else MISSING_BLOB_PREFIX
        stop = bytes([MISSING_BLOB_PREFIX[0] + 1])
        with self._db.iterator(start=start, stop=stop) as it:
            return [(key[1:], value) for key, value in itertools.islice(it, limit)]

    # writes ---------------------------------------------------------------------------

    def put_pending(self, commitment: bytes, blob: bytes, now_ms: int) -> bool:
        """Keep an uploaded blob until a committed reading names it; False if it was held
        already. Raises :class:`PendingFullError` when the pending blobs are full."""
        expired = []
        with self._lock:
            if commitment in self._pending:
                return False
            for key, (at_ms, _) in self._pending.items():
                if at_ms + BLOB_PENDING_S * 1000 <= now_ms and key not in self._claimed:
                    expired.append(key)
            for key in expired:
                self._pending_bytes -= self._pending.pop(key)[1]
            if self._pending_bytes + len(blob) > BLOB_PENDING_BYTES:
                raise PendingFullError(
                    f"{self._pending_bytes} bytes of uploaded blobs wait for their readings "
                    f"(at most {BLOB_PENDING_BYTES}); retry after some are committed")
            self._pending[commitment] = (now_ms, len(blob))
            self._pending_bytes += len(blob)
        with self._db.write_batch() as batch:
            for key in expired:
                batch.delete(PENDING_BLOB_PREFIX + key)
            batch.put(PENDING_BLOB_PREFIX + commitment, U64.pack(now_ms) + blob)
        return True

    def expire_pending(self, now_ms: int) -> int:
        """Drop the uploads that waited :data:`BLOB_PENDING_S` for their readings by
        ``now_ms`` (oldest first: an upload out of time order waits for the next sweep or
        upload); returns how many."""
        expired = []
        with self._lock:
            for key, (at_ms, _) in self._pending.items():
                if at_ms + BLOB_PENDING_S * 1000 > now_ms:
                    break
                if key not in self._claimed:
                    expired.append(key)
            if not expired:
                return 0
            with self._db.write_batch() as batch:
                for key in expired:
                    self._pending_bytes -= self._pending.pop(key)[1]
                    batch.delete(PENDING_BLOB_PREFIX + key)
        return len(expired)

    def claim(self, commitments: Iterable[bytes]) -> None:
        """Readings naming these blobs are pending here (accepted): their uploads do not
        expire until each claim is given back (:meth:`release`)."""
        with self._lock:
            claimed = self._claimed
            for commitment in commitments:
                claimed[commitment] = claimed.get(commitment, 0) + 1

    def release(self, commitments: Iterable[bytes]) -> None:
        """Give back claims (:meth:`claim`): the readings committed or were dropped."""
        with self._lock:
            claimed = self._claimed
            for commitment in commitments:
                left = claimed.get(commitment, 0) - 1
                if left > 0:
                    claimed[commitment] = left
                else:
                    claimed.pop(commitment, None)

    def put_fetched(self, commitment: bytes, blob: bytes) -> bool:
        """Keep a blob fetched from a peer (its hash checked by the caller) if a committed
        reading still lacks it; False otherwise. Checked and written under
        :attr:`commit_lock`, which a block's batch holds too: an erasure committing meanwhile
        either comes first (the reading no longer lacks it) or deletes it after."""
        with self.commit_lock:
            if self._db.get(MISSING_BLOB_PREFIX + commitment) is None:
                return False
            with self._db.write_batch() as batch:
                batch.put(BLOB_PREFIX + commitment, blob)
                batch.delete(MISSING_BLOB_PREFIX + commitment)
        return True

    def write(self, changes: Mapping[bytes, bytes | None]) -> None:
        """Write ``changes`` (full keys; None deletes) in one synced batch (an erasure's
        chunk; the caller holds :attr:`commit_lock`)."""
        with self._db.write_batch(sync=True) as batch:
            self.write_in(batch, changes)

    @staticmethod
    def write_in(batch: Any, changes: Mapping[bytes, bytes | None]) -> None:
        """Write a block's entries (full keys; None deletes) in the block's ``batch``."""
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)

    def written(self, changes: Iterable[Mapping[bytes, bytes | None]]) -> None:
        """After a block batch: the pending blobs it made permanent leave the pending table."""
        with self._lock:
            for entries in changes:
                for key in entries:
                    if key[:1] == PENDING_BLOB_PREFIX and key[1:] in self._pending:
                        self._pending_bytes -= self._pending.pop(key[1:])[1]

    # compaction -----------------------------------------------------------------------

    def compact_later(self, todo: bytes) -> None:
        """Compact the ``[start, stop)`` ranges of the to-do ``todo`` (written with the
        erasure, deleted once done) in a worker thread, so erased bytes leave the database's
        files without holding up the commits that follow. One worker does the to-dos in
        order: erasures committed faster than they are compacted queue up (each a key in the
        database already) instead of each running a thread of its own.

        LevelDB's ``CompactRange`` merges a range's files level by level down to the deepest
        level holding any of them, but never rewrites that deepest file alone, and a table
        flushed from memory keeps every version of a key it held. So each range is compacted
        twice: once to flush the memory table, then again after deleting two keys no record
        uses (just below ``start``, just above ``stop``), whose table lies above every file of
        the range and is merged down through them: each merge drops the overwritten and deleted
        values."""
        with self._compacting:
            self._todos.append(todo)
            if self._worker:
                return
            self._worker = True
        threading.Thread(target=self._compact_all, name="store-compaction", daemon=True
                         ).start()

    def _compact_all(self) -> None:
        while True:
            with self._compacting:
                if not self._todos:
                    self._worker = False
                    self._compacting.notify_all()
                    return
                todo = self._todos[0]
            try:
                self._compact(todo)
            except BaseException:  # the to-do stays in the database: the next open resumes it
                with self._compacting:
                    self._worker = False
                    self._compacting.notify_all()
                raise
            with self._compacting:
                self._todos.popleft()

    def _compact(self, todo: bytes) -> None:
        work = decode_ranges(self._db.get(todo) or b"")
        for start, stop in work:
            self._db.compact_range(start=start, stop=stop)  # flushes the memtable
        for start, stop in work:
            low, high = start[:-1], stop + b"\x00"  # below and above every key between
            with self._db.write_batch() as batch:
                batch.delete(low)
                batch.delete(high)
            self._db.compact_range(start=low, stop=high)
        self._db.delete(todo, sync=True)

    # jobs -------------------------------------------------------------------------------

    def start_job(self, name: str, step: Callable[[], bool]) -> None:
        """Run ``step()`` over and over in a worker thread (one per ``name``) until it says
        no work is left (False). A call while the job runs makes it look once more after a
        step that found nothing. :meth:`stop` ends it after its current step; a step's work
        must be durable by itself (the job resumes from the database when it next runs)."""
        with self._compacting:
            if self._stopping:
                return
            if name in self._jobs:
                self._jobs[name] = True
                return
            self._jobs[name] = True  # woken: it steps at least once
        threading.Thread(target=self._run_job, args=(name, step), name=f"store-{name}",
                         daemon=True).start()

    def _run_job(self, name: str, step: Callable[[], bool]) -> None:
        more = False
        try:
            while True:
                with self._compacting:
                    if self._stopping or not (more or self._jobs[name]):
                        del self._jobs[name]
                        self._compacting.notify_all()
                        return
                    self._jobs[name] = False  # a wake-up from now on is seen after the step
                more = step()
        except BaseException:  # its to-do stays in the database: the next open resumes it
            with self._compacting:
                self._jobs.pop(name, None)
                self._compacting.notify_all()
            raise

    def wait_compacted(self) -> None:
        """Return once every job and every compaction asked for so far is done."""
        with self._compacting:
            while self._worker or self._jobs:
                self._compacting.wait()

    def stop(self) -> None:
        """Before closing: end the jobs after their current step (they resume when the store
        next opens) and wait for the compactions asked for so far."""
        with self._compacting:
            self._stopping = True
        self.wait_compacted()
