"""What an erasure costs and touches beyond its own stream: the key ranges it compacts stay
inside the namespaces it changed, erasures are compacted one at a time, a blob fetched while
an erasure commits does not come back, and a lost blob can be uploaded again."""

from __future__ import annotations

import threading
import time

import pytest

from iomtnode.chain.chain import Chain
from iomtnode.core.payload import commitment
from iomtnode.store.sidecars import COMPACT_PREFIX, MISSING_BLOB_PREFIX

from .streamkit import (
    STREAM,
    T0,
    blob_for,
    blob_reading,
    erase,
    reading,
    seal,
    stream_chain,
)


@pytest.fixture
def chain(tmp_path):
    chain = stream_chain(tmp_path / "data")
    yield chain
    chain.store.close()


class Recording:
    """A plyvel DB that records the ranges compacted."""

    def __init__(self, db) -> None:
        self._db = db
        self.compacted: list[tuple[bytes, bytes]] = []

    def compact_range(self, *, start: bytes, stop: bytes) -> None:
        self.compacted.append((start, stop))
        self._db.compact_range(start=start, stop=stop)

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_an_erasure_compacts_only_the_namespaces_it_changed(chain: Chain):
    """Each compacted range, with the keys just below and above it, stays inside one key
    namespace: a range that starts at the empty key would rewrite every block stored."""
    seal(chain, [reading("d1", 1, T0 + 1)])
    recording = Recording(chain.store.sidecars._db)
    chain.store.sidecars._db = recording
    seal(chain, [erase()])
    chain.store.sidecars.wait_compacted()
    todos = list(chain.store.sidecars.iterate(COMPACT_PREFIX, COMPACT_PREFIX + b"\xff"))
    assert todos == []  # done
    assert recording.compacted
    outside = [(start, stop) for start, stop in recording.compacted
               if not start or start[:1] != stop[:1]]
    assert outside == []


class EraseWhileChecking:
    """A plyvel DB that, the first time the fetching thread asks whether a blob is still
    missing, lets another thread commit an erasure of its reading (waiting a moment for it)."""

    def __init__(self, db, commit_erasure) -> None:
        self._db = db
        self._commit_erasure = commit_erasure
        self.eraser: threading.Thread | None = None

    def get(self, key: bytes):
        found = self._db.get(key)
        if key[:1] == MISSING_BLOB_PREFIX and self.eraser is None:
            self.eraser = threading.Thread(target=self._commit_erasure)
            self.eraser.start()
            self.eraser.join(timeout=1.0)  # done at once, unless a lock makes it wait
        return found

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_a_blob_fetched_while_its_erasure_commits_is_not_kept(chain: Chain):
    blob = blob_for("d1", 1)
    seal(chain, [blob_reading("d1", 1, T0 + 1, blob)])  # uploaded elsewhere: missing here
    assert chain.missing_blobs(8) == [(commitment(blob), STREAM.public)]
    racing = EraseWhileChecking(chain.store.sidecars._db, lambda: seal(chain, [erase()]))
    chain.store.sidecars._db = racing
    chain.put_fetched_blob(blob)
    assert racing.eraser is not None
    racing.eraser.join(timeout=10)
    assert not racing.eraser.is_alive()
    assert chain.stream_view(STREAM.public).erased
    assert chain.blob(commitment(blob)) is None
    chain.store.sidecars.wait_compacted()  # the erasure job has deleted its entries
    assert chain.missing_blobs(8) == []


class SlowCompactions:
    """A plyvel DB whose compactions take a while, counting how many run at once."""

    def __init__(self, db) -> None:
        self._db = db
        self._lock = threading.Lock()
        self.running = self.most = 0

    def compact_range(self, *, start: bytes, stop: bytes) -> None:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.01)
        self._db.compact_range(start=start, stop=stop)
        with self._lock:
            self.running -= 1

    def __getattr__(self, name):
        return getattr(self._db, name)


def test_erasures_in_a_row_are_compacted_one_at_a_time(chain: Chain):
    """Each erasing block leaves a compaction to do; one worker does them in order, however
    many erasures come faster than their compactions (no thread per erasure)."""
    slow = SlowCompactions(chain.store.sidecars._db)
    chain.store.sidecars._db = slow
    for nonce in range(1, 9):
        seal(chain, [reading("d1", nonce, T0 + nonce), erase(T0 + nonce, T0 + nonce + 1,
                                                             nonce=nonce)])
    chain.store.sidecars.wait_compacted()
    assert slow.most == 1
    assert list(chain.store.sidecars.iterate(COMPACT_PREFIX, COMPACT_PREFIX + b"\xff")) == []


def test_an_upload_of_a_committed_readings_missing_blob_fills_it(chain: Chain):
    """A reading committed while no node held its blob is healed by uploading the blob
    again to any node: it is kept as the committed blob, not as an upload waiting for a
    reading that already came."""
    blob = blob_for("d1", 1)
    seal(chain, [blob_reading("d1", 1, T0 + 1, blob)])
    assert chain.missing_blobs(8) == [(commitment(blob), STREAM.public)]
    assert chain.put_blob(blob, T0 + 2) == commitment(blob)
    assert chain.blob(commitment(blob)) == blob and chain.missing_blobs(8) == []
    assert chain.store.sidecars.pending_blob(commitment(blob)) is None
