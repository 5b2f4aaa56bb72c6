"""The record of accepted transactions: pending ones survive a reopen and leave with the
block that commits them; drops are recorded, bounded, and survive a reopen."""

from __future__ import annotations

from pathlib import Path

from iomtnode.store import BlockStore
from iomtnode.store.txlog import Drop, TxLog


def tid(n: int) -> bytes:
    return n.to_bytes(32, "big")


def commit(store: BlockStore, height: int, tx_ids: list[bytes]) -> None:
    store.commit_block(height=height, block_hash=bytes([height]) * 32, block_bytes=b"blk",
                       commit_bytes=b"", tx_ids=tx_ids, state_changes={})


def test_pending_survives_a_reopen_in_arrival_order_and_leaves_with_its_block(
        tmp_path: Path) -> None:
    with BlockStore.open(tmp_path / "db") as store:
        commit(store, 0, [])
        store.txlog.keep([(tid(9), b"nine"), (tid(3), b"three")])
        store.txlog.keep([(tid(5), b"five"), (tid(9), b"nine")])  # a repeat is kept once
    with BlockStore.open(tmp_path / "db") as store:
        assert list(store.txlog.pending()) == [(tid(9), b"nine"), (tid(3), b"three"),
                                               (tid(5), b"five")]
        commit(store, 1, [tid(3), tid(7)])
        assert not store.txlog.is_pending(tid(3)) and store.txlog.is_pending(tid(9))
        store.txlog.keep([(tid(6), b"six")])  # numbered after the reopened ones
    with BlockStore.open(tmp_path / "db") as store:
        assert list(store.txlog.pending()) == [(tid(9), b"nine"), (tid(5), b"five"),
                                               (tid(6), b"six")]
        store.txlog.forget([tid(5)])
        assert [i for i, _ in store.txlog.pending()] == [tid(9), tid(6)]


def test_a_drop_is_recorded_durably_and_its_pending_entry_goes(tmp_path: Path) -> None:
    with BlockStore.open(tmp_path / "db") as store:
        store.txlog.keep([(tid(1), b"one"), (tid(2), b"two")])
        store.txlog.record_drops([Drop(tid(1), 1022, "sequence number 4 was already used", 7)])
        assert store.txlog.dropped(tid(1)) == Drop(tid(1), 1022,
                                                   "sequence number 4 was already used", 7)
        assert store.txlog.dropped(tid(2)) is None
    with BlockStore.open(tmp_path / "db") as store:
        assert store.txlog.dropped(tid(1)).code == 1022
        assert store.txlog.dropped_total == 1
        assert [i for i, _ in store.txlog.pending()] == [tid(2)]


def test_the_drop_record_is_bounded_oldest_first(tmp_path: Path) -> None:
    with BlockStore.open(tmp_path / "db") as store:
        log = TxLog(store._db, max_drops=3)
        log.record_drops([Drop(tid(n), 1004, f"r{n}", n) for n in range(1, 3)])
        log.record_drops([Drop(tid(n), 1004, f"r{n}", n) for n in range(3, 7)])
        assert [n for n in range(1, 7) if log.dropped(tid(n))] == [4, 5, 6]
        log.record_drops([Drop(tid(4), 1020, "again", 9), Drop(tid(8), 1004, "r8", 9)])
        # 4's first record is forgotten, its later one is kept
        assert log.dropped(tid(4)).reason == "again" and log.dropped(tid(5)) is None
        assert log.dropped_total == 8
        assert len(list(store._db.iterator(prefix=b"O"))) == 3
        assert len(list(store._db.iterator(prefix=b"D"))) == 3
        reopened = TxLog(store._db, max_drops=3)
        assert reopened.dropped_total == 8
        reopened.record_drops([Drop(tid(9), 1004, "r9", 9)])
        assert [n for n in range(1, 10) if reopened.dropped(tid(n))] == [4, 8, 9]


def test_a_long_reason_is_cut(tmp_path: Path) -> None:
    with BlockStore.open(tmp_path / "db") as store:
        store.txlog.record_drops([Drop(tid(1), 1000, "x" * 5000, 1)])
        assert len(store.txlog.dropped(tid(1)).reason) == 512
