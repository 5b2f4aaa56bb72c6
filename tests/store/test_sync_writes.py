"""Every write of the store is synced: a block commit (one or many blocks) is one LevelDB
batch written with ``sync=True``, holding the block and the head pointer; metadata and a
replaced certificate are synced puts. A spy on the plyvel database sees what a SIGKILL test
cannot (an unsynced write survives the process in the page cache; not a power cut).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import plyvel
import pytest

from iomtnode.chain.chain import Chain
from iomtnode.core.block import sign_commit
from iomtnode.store import BlockStore
from iomtnode.store.leveldb import BLOCK_PREFIX, HEAD_KEY

from ..admission.chainkit import GENESIS, T0
from ..core.helpers import CHAIN_ID, key, pub


class SpyBatch:
    def __init__(self, batch: Any, keys: list[bytes]) -> None:
        self._batch, self._keys = batch, keys

    def __enter__(self) -> SpyBatch:
        self._batch.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._batch.__exit__(*exc)

    def put(self, k: bytes, value: bytes) -> None:
        self._keys.append(k)
        self._batch.put(k, value)

    def delete(self, k: bytes) -> None:
        self._keys.append(k)
        self._batch.delete(k)


class SpyDB:
    """The store's plyvel database, recording each write: ("batch" | "put" | "delete",
    the keyword arguments, the keys written)."""

    def __init__(self, db: plyvel.DB) -> None:
        self._db = db
        self.writes: list[tuple[str, dict[str, Any], list[bytes]]] = []

    def write_batch(self, **kw: Any) -> SpyBatch:
        keys: list[bytes] = []
        self.writes.append(("batch", kw, keys))
        return SpyBatch(self._db.write_batch(**kw), keys)

    def put(self, k: bytes, value: bytes, **kw: Any) -> None:
        self.writes.append(("put", kw, [k]))
        self._db.put(k, value, **kw)

    def delete(self, k: bytes, **kw: Any) -> None:
        self.writes.append(("delete", kw, [k]))
        self._db.delete(k, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@pytest.fixture
def spied(tmp_path) -> Iterator[tuple[BlockStore, SpyDB]]:
    with BlockStore.open(tmp_path / "data") as store:
        spy = SpyDB(store._db)
        store._db = spy  # type: ignore[assignment]
        yield store, spy
        store._db = spy._db


def unsynced(spy: SpyDB) -> list[tuple[str, dict[str, Any], list[bytes]]]:
    return [w for w in spy.writes if w[1].get("sync") is not True]


def test_a_block_commit_is_one_synced_batch_with_the_head(spied) -> None:
    store, spy = spied
    chain = Chain(store, GENESIS)  # the genesis block: a commit too
    built = chain.build([], pub("A"), T0 + 1000)
    chain.commit(built, sign_commit([key("A")], CHAIN_ID, 1, 0, built.block.hash))
    batches = [w for w in spy.writes if w[0] == "batch"]
    assert len(batches) == 2  # genesis, block 1
    for _, kw, keys in batches:
        assert kw == {"sync": True}
        assert HEAD_KEY in keys and any(k.startswith(BLOCK_PREFIX) for k in keys)
    assert unsynced(spy) == []


def test_staged_blocks_are_flushed_in_one_synced_batch(spied) -> None:
    store, spy = spied
    chain = Chain(store, GENESIS)
    staged = chain.staged()
    for height in (1, 2, 3):
        built = staged.build([], pub("A"), T0 + 1000 * height)
        staged.commit(built, sign_commit([key("A")], CHAIN_ID, height, 0, built.block.hash))
    before = len(spy.writes)
    assert staged.store.flush() == 3  # type: ignore[attr-defined]
    chain.adopt(staged)
    flushed = spy.writes[before:]
    assert [(kind, kw) for kind, kw, _ in flushed] == [("batch", {"sync": True})]
    assert sum(k.startswith(BLOCK_PREFIX) for k in flushed[0][2]) == 3
    assert unsynced(spy) == [] and chain.height == 3


def test_metadata_and_a_replaced_certificate_are_synced_puts(spied) -> None:
    store, spy = spied
    Chain(store, GENESIS)
    store.put_meta("anything", b"1")
    store.set_commit(0, b"a certificate")
    assert [kind for kind, _, _ in spy.writes][-2:] == ["put", "put"]
    assert unsynced(spy) == []
