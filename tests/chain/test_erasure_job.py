"""The erasure job: an erasure's commit writes a few entries however much it covers; the job
strips the stored blocks in chunks of bounded size, resumes after a stop or a crash between
two chunks, and the queries hide what an erasure covers from its commit on."""

from __future__ import annotations

import os
import pathlib
import random
import subprocess
import sys
import time

import pytest

from iomtnode.chain import erasure
from iomtnode.chain.chain import Chain
from iomtnode.chain.erasure import ErasureJob
from iomtnode.core.fields import U64_MAX
from iomtnode.core.payload import commitment
from iomtnode.core.receipt import verify_receipt
from iomtnode.store import BlockStore
from iomtnode.store.leveldb import BLOCK_PREFIX
from iomtnode.store.sidecars import (
    COMPACT_PREFIX,
    ERASE_TODO_PREFIX,
    ERASURE_PREFIX,
    Sidecars,
)

from ..core.helpers import pub
from .streamkit import (
    GENESIS,
    STREAM,
    T0,
    blob_for,
    blob_reading,
    erase,
    grant,
    reading,
    seal,
    stream_chain,
)

BLOCKS = 24  # blocks of readings an erasure covers
CHUNK_BLOCKS = 4  # the job's chunk in these tests (ERASE_CHUNK_BLOCKS)


class Batches:
    """A plyvel DB that records the keys each write batch puts."""

    def __init__(self, db) -> None:
        self._db = db
        self.batches: list[list[bytes]] = []

    def write_batch(self, **kwargs):
        return _Batch(self, self._db.write_batch(**kwargs))

    def __getattr__(self, name):
        return getattr(self._db, name)


class _Batch:
    def __init__(self, owner: Batches, batch) -> None:
        self._owner, self._batch, self.keys = owner, batch, []

    def put(self, key: bytes, value: bytes) -> None:
        self.keys.append(key)
        self._batch.put(key, value)

    def delete(self, key: bytes) -> None:
        self.keys.append(key)
        self._batch.delete(key)

    def __enter__(self):
        self._batch.__enter__()
        return self

    def __exit__(self, *exc):
        self._owner.batches.append(self.keys)
        return self._batch.__exit__(*exc)


def blocks_written(keys: list[bytes]) -> int:
    return sum(1 for key in keys if key[:1] == BLOCK_PREFIX)


def stored_sidecars(chain: Chain, first: int, last: int) -> list[bool]:
    """For each block in ``[first, last]``: whether any of its stored transactions keeps a
    sidecar."""
    return [any(tx.sidecar for tx in chain.block_at(h).txs) for h in range(first, last + 1)]


def fill(chain: Chain) -> list:
    """BLOCKS blocks of two readings each; returns the readings."""
    txs = []
    for seq in range(1, BLOCKS + 1):
        pair = [reading("d1", seq, T0 + seq), reading("d2", seq, T0 + seq)]
        seal(chain, pair)
        txs += pair
    return txs


def everything(chain: Chain):
    return chain.stream_readings(STREAM.public, 0, U64_MAX, b"", 1000)


@pytest.fixture
def paused(monkeypatch):
    """The erasure job does not start by itself (the node stops before it runs)."""
    monkeypatch.setattr(Sidecars, "start_job", lambda self, name, step: None)
    monkeypatch.setattr(erasure, "ERASE_CHUNK_BLOCKS", CHUNK_BLOCKS)


def test_a_whole_scope_erasure_commits_a_few_entries_and_is_done_in_bounded_chunks(
        tmp_path, paused):
    chain = stream_chain(tmp_path / "data")
    try:
        seal(chain, [grant("G")])
        first = chain.height + 1
        fill(chain)
        last = chain.height
        recording = Batches(chain.store._db)
        chain.store._db = chain.store.sidecars._db = recording
        seal(chain, [erase()])
        (committed,) = recording.batches
        assert blocks_written(committed) == 1  # its own block: no stored block rewritten
        assert len(committed) < 20, committed  # however many readings it covers
        assert all(stored_sidecars(chain, first, last))  # the job has not run yet

        job = ErasureJob(chain.store)
        steps = 0
        while job.step():
            steps += 1
            assert steps <= BLOCKS  # it ends
        chunks = [blocks_written(keys) for keys in recording.batches[1:]
                  if any(key[:1] == ERASE_TODO_PREFIX for key in keys)]  # not compactions
        assert len(chunks) == steps and max(chunks) == CHUNK_BLOCKS
        assert sum(chunks) == BLOCKS + 2  # and the announcement's and the grant's blocks
        assert not any(stored_sidecars(chain, first, last))
        assert not chain.stream_wraps(STREAM.public, pub("G"))
        assert list(chain.store.sidecars.iterate(ERASE_TODO_PREFIX, b"\xff")) == []
    finally:
        chain.store.close()


def test_the_queries_hide_what_an_erasure_covers_before_the_job_runs(tmp_path, paused):
    chain = stream_chain(tmp_path / "data")
    try:
        blob = blob_for("d1", 50)
        chain.put_blob(blob, T0)
        inside = [reading("d1", 1, T0 + 10), blob_reading("d1", 2, T0 + 20, blob)]
        outside = reading("d2", 1, T0 + 500)
        seal(chain, [*inside, outside, grant("G")])
        tombstone = erase(T0, T0 + 100)
        seal(chain, [tombstone])
        later = reading("d2", 2, T0 + 30)  # in the range, committed after the erasure
        seal(chain, [later])
        assert all(stored_sidecars(chain, 3, 3))  # the job has not run
        assert chain.store.sidecars.get(b"L" + commitment(blob)) == blob
        by_id = {r.tx.id: r for r in everything(chain)}
        for tx in inside:
            got = by_id[tx.id]
            assert got.erased_by == tombstone.id and got.tx.sidecar == b"" and not got.blob
            assert got.tx.raw == tx.leaf_bytes
        for tx in (outside, later):
            assert by_id[tx.id].erased_by == b"" and by_id[tx.id].tx.raw == tx.raw
        assert chain.blob(commitment(blob)) is None
        assert chain.blob_owner(commitment(blob)) is None
        assert chain.stream_wraps(STREAM.public, pub("G"))  # a range keeps the wraps
        whole = erase(nonce=2)
        seal(chain, [whole])
        assert chain.stream_wraps(STREAM.public, pub("G")) == []
        view = chain.stream_view(STREAM.public)
        assert view is not None and view.announcement is not None
        assert view.announcement.sidecar == b""
        assert by_id[later.id].erased_by == b""
        assert {r.tx.id: r.erased_by for r in everything(chain)}[later.id] == whole.id
    finally:
        chain.store.close()


def test_a_stop_between_chunks_resumes_from_the_cursor_when_the_store_opens(
        tmp_path, paused, monkeypatch):
    path = tmp_path / "data"
    chain = stream_chain(path)
    first = chain.height + 1
    txs = fill(chain)
    last = chain.height
    seal(chain, [erase()])
    job = ErasureJob(chain.store)
    assert job.step() and job.step()  # two chunks, then the node stops
    stripped = stored_sidecars(chain, first, last)
    assert stripped.count(False) == 2 * CHUNK_BLOCKS and any(stripped)
    assert all(r.erased_by and not r.tx.sidecar for r in everything(chain))
    chain.store.close()
    monkeypatch.undo()  # the job starts again, with its real chunk size
    chain = Chain(BlockStore.open(path), GENESIS)  # resumes the to-do
    try:
        chain.store.sidecars.wait_compacted()
        assert not any(stored_sidecars(chain, first, last))
        sidecars = chain.store.sidecars
        for prefix in (ERASE_TODO_PREFIX, ERASURE_PREFIX, COMPACT_PREFIX):
            assert list(sidecars.iterate(prefix, prefix + b"\xff")) == []
        for tx in txs[:3]:
            verify_receipt(chain.receipt(tx.id), GENESIS)
    finally:
        chain.store.close()
    on_disk = b"".join(p.read_bytes() for p in sorted(path.iterdir()) if p.is_file())
    assert [tx for tx in txs if tx.sidecar in on_disk] == []


RESUMER = """
import sys
from iomtnode.chain import erasure
erasure.ERASE_CHUNK_BLOCKS = 2
from iomtnode.chain.chain import Chain
from iomtnode.store import BlockStore
from tests.chain.streamkit import GENESIS
chain = Chain(BlockStore.open(sys.argv[1]), GENESIS)  # the erasure job resumes
print("open", flush=True)
chain.store.sidecars.wait_compacted()
print("done", flush=True)
chain.store.close()
"""
KILL_CYCLES = 5
CYCLE_TIMEOUT_S = 30


@pytest.mark.timeout(120)  # it starts processes
def test_a_crash_between_chunks_leaves_each_block_and_its_index_agreeing(tmp_path, paused):
    """SIGKILL a node while its erasure job runs, at seeded-random moments: after a reopen
    each reading's index entry says erased exactly when its stored block lost the sidecar,
    every query hides all of it, and the job finishes."""
    template = tmp_path / "template"
    chain = stream_chain(template)
    fill(chain)
    seal(chain, [erase()])
    chain.store.close()
    rng = random.Random(20261207)
    root = pathlib.Path(__file__).parents[2]
    for cycle in range(KILL_CYCLES):
        path = tmp_path / f"run{cycle}"
        subprocess.run(["cp", "-r", str(template), str(path)], check=True)
        proc = subprocess.Popen([sys.executable, "-c", RESUMER, str(path)], cwd=root,
                                stdout=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": str(root)})
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"open\n"
        time.sleep(rng.uniform(0, 0.05))
        proc.kill()
        proc.wait(timeout=CYCLE_TIMEOUT_S)
        store = BlockStore.open(path)
        chain = Chain(store, GENESIS)  # the job is paused here: the state the kill left
        try:
            found = everything(chain)
            assert len(found) == 2 * BLOCKS
            assert all(r.erased_by and not r.tx.sidecar for r in found)
            indexed = {k[-32:]: len(v) > 12 for k, v in store.sidecars.iterate(b"R", b"S")}
            for r in found:
                stored = chain.block_at(r.height).txs
                kept = next(tx for tx in stored if tx.id == r.tx.id).sidecar
                assert indexed[r.tx.id] == (kept == b"")
            job = ErasureJob(store)
            while job.step():
                pass
            assert not any(tx.sidecar for r in found for tx in chain.block_at(r.height).txs)
        finally:
            store.close()
