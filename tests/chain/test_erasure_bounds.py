"""What an erasure costs and touches beyond its own stream: the key ranges it compacts stay
inside the namespaces it changed, a blob another stream's reading names is that stream's,
and a blob fetched while an erasure commits does not come back."""

from __future__ import annotations

import threading
import time

import pytest

from iomtnode.chain.chain import Chain
from iomtnode.core.fields import U64_MAX
from iomtnode.core.payload import commitment
from iomtnode.core.tx import Erase, SignedTx, sign_tx
from iomtnode.store.sidecars import COMPACT_PREFIX, MISSING_BLOB_PREFIX

from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import admit, announce
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
    todo = chain.store.sidecars.get(COMPACT_PREFIX + chain.height.to_bytes(8, "big"))
    assert todo is None  # done
    assert recording.compacted
    outside = [(start, stop) for start, stop in recording.compacted
               if not start or start[:1] != stop[:1]]
    assert outside == []


OTHER = key("S2")  # another patient's stream, with its own device


def other_stream(chain: Chain) -> None:
    seal(chain, [admit(key("A"), pub("e1"), OTHER.public, CHAIN_ID)])
    seal(chain, [announce(OTHER, CHAIN_ID)])


def copy_of(blob: bytes, seq: int) -> SignedTx:
    """A reading of the other stream's device naming a blob it never had (the commitment
    is on the ledger for anyone to copy)."""
    return blob_reading("e1", seq, T0 + seq, blob)


def test_a_reading_copying_another_streams_commitment_does_not_take_its_blob(chain: Chain):
    other_stream(chain)
    blob = blob_for("d1", 1)
    chain.put_blob(blob, T0)
    seal(chain, [blob_reading("d1", 1, T0 + 1, blob)])
    seal(chain, [copy_of(blob, 1)])
    assert chain.blob_stream(commitment(blob)) == STREAM.public  # consent is still the owner's
    seal(chain, [sign_tx(Erase(OTHER.public, OTHER.public, 0, U64_MAX, b"", 1), OTHER,
                         CHAIN_ID)])
    assert chain.blob(commitment(blob)) == blob  # the copier's erasure is not the owner's
    assert chain.blob_stream(commitment(blob)) == STREAM.public
    seal(chain, [erase()])
    assert chain.blob(commitment(blob)) is None and chain.blob_stream(commitment(blob)) is None


def test_a_copy_in_the_same_block_does_not_take_the_blob_either(chain: Chain):
    other_stream(chain)
    blob = blob_for("d1", 1)
    chain.put_blob(blob, T0)
    seal(chain, [blob_reading("d1", 1, T0 + 1, blob), copy_of(blob, 1)])
    assert chain.blob_stream(commitment(blob)) == STREAM.public


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
