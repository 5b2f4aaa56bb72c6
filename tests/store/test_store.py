"""The LevelDB block store: round trips, height rules, state, meta, reopen and the lock."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import plyvel
import pytest

from iomtnode.store import (
    BlockStore,
    HeightMismatchError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    leveldb,
)
from iomtnode.store.leveldb import BLOCK_PREFIX, HEAD_KEY

SUBPROCESS_TIMEOUT_S = 60.0  # a python start plus one open; generous for a loaded CI box


def h(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def commit(store: BlockStore, height: int, *, txs: int = 2, state=None) -> bytes:
    """Commit a synthetic block at ``height``; return its hash."""
    block = b"block-%d" % height
    block_hash = h(block)
    store.commit_block(
        height=height,
        block_hash=block_hash,
        block_bytes=block,
        commit_bytes=b"seal-%d" % height,
        tx_ids=[h(b"tx-%d-%d" % (height, i)) for i in range(txs)],
        state_changes=state or {},
    )
    return block_hash


@pytest.fixture
def store(tmp_path):
    with BlockStore.open(tmp_path / "data") as s:
        yield s


def test_empty_store_has_no_head_and_no_data(store):
    assert store.head() is None
    assert store.block_bytes(0) is None
    assert store.commit_bytes(0) is None
    assert store.block_height(h(b"x")) is None
    assert store.tx_location(h(b"x")) is None
    assert store.get_state(b"k") is None
    assert list(store.iter_state(b"")) == []
    assert store.get_meta("anything") is None


def test_every_read_round_trips(store):
    hash0 = commit(store, 0, txs=0, state={b"a": b"1"})
    hash1 = commit(store, 1, txs=3, state={b"b": b"2"})
    assert store.head() == (1, hash1)
    assert store.block_bytes(0) == b"block-0"
    assert store.block_bytes(1) == b"block-1"
    assert store.block_bytes(2) is None
    assert store.commit_bytes(0) == b"seal-0"
    assert store.commit_bytes(1) == b"seal-1"
    assert store.block_height(hash0) == 0
    assert store.block_height(hash1) == 1
    for position in range(3):
        assert store.tx_location(h(b"tx-1-%d" % position)) == (1, position)
    assert store.get_state(b"a") == b"1"
    assert store.get_state(b"b") == b"2"


def test_heights_sort_numerically_past_one_byte(store):
    # 8-byte big-endian heights: 255 < 256 < 65536 in key order too.
    for height in range(300):
        commit(store, height, txs=1)
    assert store.head()[0] == 299
    assert store.block_bytes(255) == b"block-255"
    assert store.block_bytes(256) == b"block-256"
    assert store.tx_location(h(b"tx-256-0")) == (256, 0)


@pytest.mark.parametrize(
    ("committed", "attempt"),
    [
        ([], 1),  # the first block must be height 0
        ([0], 0),  # repeat of the head
        ([0], 2),  # gap
        ([0, 1, 2], 1),  # far repeat
        ([0], -1),  # negative
    ],
)
def test_commit_block_needs_head_plus_one(store, committed, attempt):
    for height in committed:
        commit(store, height)
    head = store.head()
    with pytest.raises(HeightMismatchError, match=f"height {attempt}"):
        commit(store, attempt)
    assert store.head() == head  # nothing written
    if attempt not in committed:
        assert store.block_bytes(attempt) is None


def test_height_mismatch_is_a_store_error():
    assert issubclass(HeightMismatchError, StoreError)
    assert issubclass(StoreLockedError, StoreError)
    assert issubclass(StoreCorruptError, StoreError)


def test_commit_block_rejects_repeated_tx_ids_and_empty_hash(store):
    with pytest.raises(ValueError, match="twice"):
        store.commit_block(
            height=0,
            block_hash=h(b"b"),
            block_bytes=b"b",
            commit_bytes=b"c",
            tx_ids=[b"t", b"t"],
            state_changes={},
        )
    with pytest.raises(ValueError, match="empty hash"):
        store.commit_block(
            height=0, block_hash=b"", block_bytes=b"b", commit_bytes=b"c", tx_ids=[],
            state_changes={},
        )  # fmt: skip
    assert store.head() is None


def test_state_changes_put_overwrite_and_delete(store):
    commit(store, 0, state={b"a": b"1", b"b": b"2", b"c": b"3"})
    commit(store, 1, state={b"a": b"10", b"b": None, b"missing": None})
    assert store.get_state(b"a") == b"10"
    assert store.get_state(b"b") is None
    assert store.get_state(b"c") == b"3"
    assert store.get_state(b"missing") is None
    assert list(store.iter_state(b"")) == [(b"a", b"10"), (b"c", b"3")]


def test_cached_state_reads_follow_every_commit(store, monkeypatch):
    monkeypatch.setattr(leveldb, "STATE_CACHE_KEYS", 4)  # the bound is kept, reads stay right
    commit(store, 0, state={b"a": b"1", b"b": b"2"})
    for _ in range(2):  # the second time from the cache
        assert [store.get_state(k) for k in (b"a", b"b", b"x")] == [b"1", b"2", None]
    commit(store, 1, state={b"a": b"10", b"b": None, b"x": b"new"})
    assert [store.get_state(k) for k in (b"a", b"b", b"x")] == [b"10", None, b"new"]
    for i in range(10):
        commit(store, 2 + i, state={b"k%d" % i: b"%d" % i})
        assert store.get_state(b"k%d" % i) == b"%d" % i
        assert len(store._state_cache) <= 4
    assert [store.get_state(b"k%d" % i) for i in range(10)] == [b"%d" % i for i in range(10)]
    assert store.get_state(b"a") == b"10" and store.get_state(b"x") == b"new"


class _CommitDuringGet:
    """A plyvel database whose next get of ``key`` reads, then lets ``during`` commit, then
    returns what it read: a state read that overlapped a commit (another thread's)."""

    def __init__(self, db, key: bytes, during) -> None:
        self._db, self._key, self._during = db, key, during

    def get(self, key: bytes, *args):
        value = self._db.get(key, *args)
        if key == leveldb.STATE_PREFIX + self._key and self._during is not None:
            during, self._during = self._during, None
            during()
        return value

    def __getattr__(self, name: str):
        return getattr(self._db, name)


def test_a_state_read_that_overlapped_a_commit_is_not_cached(store):
    commit(store, 0, state={b"a": b"old"})
    store._state_cache.clear()  # as after a restart: the next read goes to LevelDB
    store._db = _CommitDuringGet(store._db, b"a",
                                 lambda: commit(store, 1, state={b"b": b"other"}))
    assert store.get_state(b"a") == b"old"  # read before the commit...
    assert b"a" not in store._state_cache  # ...so not kept, though a was not changed
    store._db = _CommitDuringGet(store._db, b"a",
                                 lambda: commit(store, 2, state={b"a": b"new"}))
    store._state_cache.clear()
    assert store.get_state(b"a") == b"old"  # what the overlapped read saw
    assert store.get_state(b"a") == b"new"  # not a stale cached value


def test_a_failed_commit_leaves_no_cached_value(store, monkeypatch):
    commit(store, 0, state={b"a": b"1"})
    assert store.get_state(b"a") == b"1"

    def fail(records):
        raise plyvel.IOError("disk full")

    monkeypatch.setattr(store, "_write", fail)
    with pytest.raises(plyvel.IOError):
        commit(store, 1, state={b"a": b"2"})
    assert b"a" not in store._state_cache
    assert store.get_state(b"a") == b"1" and store.head()[0] == 0


def test_iter_state_prefix_semantics(store):
    commit(
        store,
        0,
        state={
            b"dev/\x01": b"d1",
            b"dev/\x02": b"d2",
            b"dev": b"bare",
            b"dev0": b"other",
            b"grant/\x01": b"g1",
            b"": b"empty-key",
        },
    )
    # keys come back without the namespace byte, in key order, only under the prefix
    assert list(store.iter_state(b"dev/")) == [(b"dev/\x01", b"d1"), (b"dev/\x02", b"d2")]
    assert [k for k, _ in store.iter_state(b"dev")] == [b"dev", b"dev/\x01", b"dev/\x02", b"dev0"]
    assert list(store.iter_state(b"grant/")) == [(b"grant/\x01", b"g1")]
    assert list(store.iter_state(b"nothing")) == []
    # the empty prefix is the whole state keyspace and nothing else (no blocks, meta, head)
    everything = dict(store.iter_state(b""))
    assert everything[b""] == b"empty-key"
    assert len(everything) == 6


def test_iter_state_is_a_snapshot(store):
    commit(store, 0, state={b"k1": b"1", b"k2": b"2"})
    it = store.iter_state(b"k")
    assert next(it) == (b"k1", b"1")
    commit(store, 1, state={b"k2": None, b"k3": b"3"})
    assert list(it) == [(b"k2", b"2")]
    assert list(store.iter_state(b"k")) == [(b"k1", b"1"), (b"k3", b"3")]


def test_meta_round_trips_and_is_separate_from_state(store):
    store.put_meta("last_signed", b"\x00\x01")
    store.put_meta("peers", b"")
    store.put_meta("last_signed", b"\x00\x02")
    assert store.get_meta("last_signed") == b"\x00\x02"
    assert store.get_meta("peers") == b""
    assert store.get_meta("h\u00e9") is None
    assert list(store.iter_state(b"")) == []
    assert store.head() is None


def test_set_commit_replaces_the_certificate(store):
    commit(store, 0)
    commit(store, 1)
    store.set_commit(0, b"bigger-seal-0")
    assert store.commit_bytes(0) == b"bigger-seal-0"
    assert store.commit_bytes(1) == b"seal-1"
    assert store.block_bytes(0) == b"block-0"


@pytest.mark.parametrize("height", [2, 5, -1])
def test_set_commit_needs_a_stored_block(store, height):
    commit(store, 0)
    commit(store, 1)
    with pytest.raises(StoreError, match=f"height {height}"):
        store.set_commit(height, b"seal")
    assert store.commit_bytes(height) is None


def test_set_commit_on_empty_store_fails(store):
    with pytest.raises(StoreError):
        store.set_commit(0, b"seal")


def test_reopen_after_close_keeps_everything(tmp_path):
    path = tmp_path / "data"
    with BlockStore.open(path) as store:
        hash0 = commit(store, 0, state={b"a": b"1"})
        hash1 = commit(store, 1, txs=2, state={b"a": None, b"b": b"2"})
        store.set_commit(1, b"seal-1-bigger")
        store.put_meta("name", b"value")
    with BlockStore.open(path) as store:
        assert store.head() == (1, hash1)
        assert store.block_height(hash0) == 0
        assert store.block_bytes(1) == b"block-1"
        assert store.commit_bytes(1) == b"seal-1-bigger"
        assert store.tx_location(h(b"tx-1-1")) == (1, 1)
        assert list(store.iter_state(b"")) == [(b"b", b"2")]
        assert store.get_meta("name") == b"value"
        commit(store, 2)  # appends after the reopened head
        assert store.head()[0] == 2


def test_close_is_idempotent(tmp_path):
    store = BlockStore.open(tmp_path / "data")
    store.close()
    store.close()
    with BlockStore.open(tmp_path / "data") as again:
        assert again.head() is None
    again.close()


def test_second_open_in_same_process_is_locked(tmp_path):
    path = tmp_path / "data"
    with BlockStore.open(path) as store:
        commit(store, 0)
        with pytest.raises(StoreLockedError) as info:
            BlockStore.open(path)
        message = str(info.value)
        assert str(path / "LOCK") in message
        assert "another iomtnode process is probably running" in message
        assert store.head()[0] == 0  # the holder is unaffected
    with BlockStore.open(path) as store:  # released on close
        assert store.head()[0] == 0


@pytest.mark.timeout(120)
def test_second_open_in_another_process_is_locked(tmp_path):
    path = tmp_path / "data"
    script = textwrap.dedent(
        """
        import pathlib, sys
        from iomtnode.store import BlockStore, StoreLockedError
        try:
            BlockStore.open(pathlib.Path(sys.argv[1]))
        except StoreLockedError as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            sys.exit(3)
        sys.exit(0)
        """
    )
    with BlockStore.open(path):
        result = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("StoreLockedError: ")
    assert str(path / "LOCK") in result.stderr
    assert "another iomtnode process is probably running" in result.stderr


def test_open_failure_is_a_store_error_with_the_reason(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    with pytest.raises(StoreError, match="Not a directory") as info:
        BlockStore.open(not_a_dir)
    assert not isinstance(info.value, StoreLockedError)
    with pytest.raises(StoreError, match="No such file or directory"):
        BlockStore.open(tmp_path / "missing-parent" / "data")


def test_open_rejects_a_head_without_its_block(tmp_path):
    path = tmp_path / "data"
    with BlockStore.open(path) as store:
        commit(store, 0)
        commit(store, 1)
    # Simulate damage outside the store's write path: drop the head's block.
    db = plyvel.DB(str(path))
    db.delete(BLOCK_PREFIX + (1).to_bytes(8, "big"))
    db.close()
    with pytest.raises(StoreCorruptError, match="missing"):
        BlockStore.open(path)
    # and the failed open released the lock
    db = plyvel.DB(str(path))
    db.put(HEAD_KEY, b"\x00")
    db.close()
    with pytest.raises(StoreCorruptError, match="malformed"):
        BlockStore.open(path)
