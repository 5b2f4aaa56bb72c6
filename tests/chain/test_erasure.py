"""Erasure (kind 11) executed at commit: the covered readings' sidecars and blobs (and, for a
whole scope, the stream's wraps) leave every query and, after compaction, the store's files;
block hashes and receipts do not change; a crash mid-erasure leaves a consistent store."""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import subprocess
import sys
import time

import pytest

from iomtnode.chain.chain import Chain
from iomtnode.chain.erasure import ErasureJob
from iomtnode.chain.records import epoch_announcement
from iomtnode.core.fields import U64_MAX
from iomtnode.core.payload import commitment, sidecar_bytes
from iomtnode.core.receipt import verify_receipt
from iomtnode.store import BlockStore
from iomtnode.store.sidecars import COMPACT_PREFIX, ERASURE_PREFIX, Sidecars

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

EVERYTHING = (0, U64_MAX)


def readings(chain: Chain):
    return chain.stream_readings(STREAM.public, *EVERYTHING, b"", 1000)


def stored_bytes(path: pathlib.Path) -> bytes:
    """Every file of the LevelDB directory, read raw."""
    return b"".join(p.read_bytes() for p in sorted(path.iterdir()) if p.is_file())


def pieces(secret: bytes) -> list[bytes]:
    """64-byte pieces of ``secret`` every 4 KiB: LevelDB's log splits a large value into
    32 KiB records, so a whole blob is not one run of bytes in it."""
    return [secret[i:i + 64] for i in range(0, len(secret), 4096)]


def compaction_todos(store: BlockStore) -> list[bytes]:
    return [k for k, _ in store.sidecars.iterate(COMPACT_PREFIX, COMPACT_PREFIX + b"\xff")]


@pytest.fixture
def chain(tmp_path):
    chain = stream_chain(tmp_path / "data")
    yield chain
    chain.store.close()


def test_a_range_erasure_strips_the_covered_sidecars_and_blobs_only(chain):
    inside = [reading("d1", 1, T0 + 100), reading("d2", 1, T0 + 199)]
    outside = [reading("d1", 2, T0 + 99), reading("d2", 2, T0 + 200)]
    blob = blob_for("d1", 3)
    chain.put_blob(blob, T0)
    with_blob = blob_reading("d1", 3, T0 + 150, blob)
    seal(chain, [*inside, *outside, with_blob, grant("G")])
    hashes = {h: chain.block_at(h).hash for h in range(chain.height + 1)}
    tombstone = erase(T0 + 100, T0 + 200)
    seal(chain, [tombstone])
    by_id = {r.tx.id: r for r in readings(chain)}
    for tx in [*inside, with_blob]:
        assert by_id[tx.id].tx.sidecar == b"" and by_id[tx.id].erased_by == tombstone.id
        assert by_id[tx.id].tx.raw == tx.leaf_bytes
    for tx in outside:
        assert by_id[tx.id].tx.raw == tx.raw and by_id[tx.id].erased_by == b""
    assert not by_id[with_blob.id].blob
    assert chain.blob(commitment(blob)) is None and chain.blob_owner(commitment(blob)) is None
    assert chain.stream_wraps(STREAM.public, pub("G"))  # a range erasure keeps the wraps
    assert all(chain.block_at(h).hash == hashes[h] for h in hashes)
    for tx in [*inside, *outside, with_blob]:
        proven, _ = verify_receipt(chain.receipt(tx.id), GENESIS)
        assert proven.id == tx.id
    chain.store.sidecars.wait_compacted()  # the erasure job has run: the blocks stripped
    block_txs = chain.block_at(3).txs
    assert [tx.sidecar for tx in block_txs[:2]] == [b"", b""]  # what GetBlocks would serve


def test_a_whole_scope_erasure_strips_every_reading_and_wrap_of_the_stream(chain):
    seal(chain, [grant("G"), reading("d1", 1, T0 + 1)])
    seal(chain, [reading("d2", 1, T0 + 2)])
    tombstone = erase()
    seal(chain, [tombstone])
    assert all(r.tx.sidecar == b"" and r.erased_by == tombstone.id for r in readings(chain))
    assert chain.stream_wraps(STREAM.public, pub("G")) == []
    view = chain.stream_view(STREAM.public)
    assert view is not None and view.erased and view.grants == {}
    assert view.announcement is not None and view.announcement.sidecar == b""
    chain.store.sidecars.wait_compacted()
    for height in range(1, chain.height + 1):
        assert all(tx.sidecar == b"" for tx in chain.block_at(height).txs)


def test_a_query_racing_the_erasure_job_never_sees_a_wrap_it_erased(chain, monkeypatch):
    """The job's chunk rewrites a block and deletes its erasure in one batch; a query that
    read the block just before that batch and the erasures just after it would show the
    announcement's wraps (failed once in CI): the query reads the erasures first."""
    seal(chain, [grant("G"), reading("d1", 1, T0 + 1)])
    monkeypatch.setattr(ErasureJob, "wake", lambda self: None)  # the job waits for the test
    seal(chain, [erase()])
    job, store = ErasureJob(chain.store), chain.store

    def block_then_job(height: int) -> bytes | None:
        raw = store.block_bytes(height)  # read before the job's batch ...
        while job.step():  # ... which then runs to its end
            pass
        return raw

    record = chain.state().stream(STREAM.public)
    announcement = epoch_announcement(store.sidecars, block_then_job, STREAM.public,
                                      record.epoch)
    assert announcement is not None and announcement.sidecar == b""
    assert not list(store.sidecars.iterate(ERASURE_PREFIX, ERASURE_PREFIX + b"\xff"))


def test_an_erasure_covers_the_readings_before_it_in_its_own_block_only(chain):
    before, after = reading("d1", 1, T0 + 10), reading("d2", 1, T0 + 10)
    tombstone = erase(T0, T0 + 100)
    seal(chain, [before, tombstone, after])
    by_id = {r.tx.id: r for r in readings(chain)}
    assert by_id[before.id].tx.sidecar == b"" and by_id[before.id].erased_by == tombstone.id
    assert by_id[after.id].tx.raw == after.raw and by_id[after.id].erased_by == b""
    chain.store.sidecars.wait_compacted()
    assert chain.block_at(chain.height).txs[0].sidecar == b""
    verify_receipt(chain.receipt(before.id), GENESIS)


def test_an_erasure_in_a_staged_range_sees_the_readings_staged_before_it(chain):
    first, second = reading("d1", 1, T0 + 10), reading("d1", 2, T0 + 20)
    staged = chain.staged()
    seal(staged, [first])
    seal(staged, [erase(T0, T0 + 15)])
    seal(staged, [second, erase(T0 + 15, T0 + 30, nonce=2)])
    staged.store.flush()
    chain.adopt(staged)
    assert all(r.tx.sidecar == b"" and r.erased_by for r in readings(chain))
    chain.store.sidecars.wait_compacted()
    assert chain.block_at(3).txs[0].sidecar == b""


def test_after_compaction_the_erased_bytes_are_in_no_file_of_the_store(tmp_path):
    path = tmp_path / "data"
    chain = stream_chain(path)
    try:
        kept = reading("d2", 1, T0 + 500)
        erased = [reading("d1", s, T0 + s) for s in range(1, 6)]
        blob = random.Random(1).randbytes(sidecar_bytes(2))  # no piece repeats
        chain.put_blob(blob, T0)
        seal(chain, [*erased, kept, blob_reading("d1", 9, T0 + 9, blob, 2), grant("G")])
        seal(chain, [reading("d1", 10, T0 + 10)])
        secrets = [tx.sidecar for tx in erased] + pieces(blob) + [grant("G").sidecar]
        assert all(s in stored_bytes(path) for s in secrets)  # the test can fail
        seal(chain, [erase()])
        chain.store.sidecars.wait_compacted()
        on_disk = stored_bytes(path)
        assert [s for s in secrets if s in on_disk] == []
        assert kept.sidecar not in on_disk  # the whole scope: the other device's too
    finally:
        chain.store.close()


def test_a_range_erasure_keeps_the_other_readings_bytes_on_disk(tmp_path):
    path = tmp_path / "data"
    chain = stream_chain(path)
    try:
        erased, kept = reading("d1", 1, T0 + 1), reading("d1", 2, T0 + 900)
        seal(chain, [erased, kept])
        seal(chain, [erase(T0, T0 + 500)])
        chain.store.sidecars.wait_compacted()
        on_disk = stored_bytes(path)
        assert erased.sidecar not in on_disk and kept.sidecar in on_disk
    finally:
        chain.store.close()


def test_a_compaction_a_stop_interrupted_resumes_when_the_store_opens(tmp_path, monkeypatch):
    path = tmp_path / "data"
    chain = stream_chain(path)
    erased = reading("d1", 1, T0 + 1)
    seal(chain, [erased])
    with monkeypatch.context() as patched:  # the node stops before its compaction runs
        patched.setattr(Sidecars, "compact_later", lambda self, todo: None)
        seal(chain, [erase()])
        chain.store.sidecars.wait_compacted()  # the erasure job: its compaction to-dos
    assert compaction_todos(chain.store)
    chain.store.close()
    assert erased.sidecar in stored_bytes(path)
    store = BlockStore.open(path)  # resumes the to-dos
    try:
        store.sidecars.wait_compacted()
        assert compaction_todos(store) == []
    finally:
        store.close()
    assert erased.sidecar not in stored_bytes(path)


ERASER = """
import sys
from iomtnode.chain.chain import Chain
from iomtnode.chain.erasure import ErasureJob
from iomtnode.chain.records import epoch_announcement
from iomtnode.store import BlockStore
from iomtnode.store.sidecars import COMPACT_PREFIX, ERASURE_PREFIX, Sidecars
from tests.chain.streamkit import GENESIS, erase, seal
chain = Chain(BlockStore.open(sys.argv[1]), GENESIS)
print("open", flush=True)
seal(chain, [erase()])
print("done", flush=True)
chain.store.close()
"""
KILL_CYCLES = 6
CYCLE_TIMEOUT_S = 30


@pytest.mark.timeout(120)  # it starts processes
def test_a_crash_during_an_erasure_leaves_all_of_it_or_none(tmp_path):
    """SIGKILL a process committing a whole-scope erasure at seeded-random moments: after a
    reopen the store is either before the erasure (every sidecar there) or after it (none)."""
    template = tmp_path / "template"
    chain = stream_chain(template)
    for seq in range(1, 41):
        seal(chain, [reading("d1", seq, T0 + seq), reading("d2", seq, T0 + seq)])
    height = chain.height
    chain.store.close()
    rng = random.Random(20261206)
    outcomes = set()
    root = pathlib.Path(__file__).parents[2]
    for cycle in range(KILL_CYCLES):
        path = tmp_path / f"run{cycle}"
        shutil.copytree(template, path)
        proc = subprocess.Popen([sys.executable, "-c", ERASER, str(path)], cwd=root,
                                stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(root)})
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"open\n"
        time.sleep(rng.uniform(0, 0.05))  # a moment during the commit (or after it)
        proc.kill()
        proc.wait(timeout=CYCLE_TIMEOUT_S)
        chain = Chain(BlockStore.open(path), GENESIS)
        try:
            found = readings(chain)
            assert len(found) == 80
            erased = [r.tx.sidecar == b"" and bool(r.erased_by) for r in found]
            if chain.height == height:
                assert not any(erased) and all(r.tx.sidecar for r in found)
            else:
                assert chain.height == height + 1 and all(erased)
                assert chain.stream_view(STREAM.public).erased
            outcomes.add(chain.height - height)
            for r in found[:3]:
                verify_receipt(chain.receipt(r.tx.id), GENESIS)
        finally:
            chain.store.close()
    assert outcomes  # which outcomes a seed yields varies with the machine's speed
