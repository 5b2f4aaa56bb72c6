"""The store records its format: a new store and one of the release before formats were
numbered are stamped with the current one, a newer one is refused untouched, and the steps
from an older format run in order, each recorded as it is reached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plyvel
import pytest

from iomtnode.chain.chain import Chain
from iomtnode.core.genesis import Genesis
from iomtnode.store import BlockStore, StoreError, StoreFormatError
from iomtnode.store.format import (
    FORMAT_KEY,
    STORE_FORMAT,
    STORE_MIGRATIONS,
    Step,
    bring_format_up_to_date,
    stored_format,
)

from ..core.helpers import CHAIN_ID, pub

GENESIS = Genesis(CHAIN_ID, 1_700_000_000_000, (pub("A"),), 1)


def raw(path: Path) -> plyvel.DB:
    return plyvel.DB(str(path))


def test_a_new_store_records_the_current_format(tmp_path: Path) -> None:
    with BlockStore.open(tmp_path / "data") as store:
        assert store.get_meta("store_format") == STORE_FORMAT.to_bytes(2, "big")
    assert STORE_FORMAT == 1


def test_a_store_of_the_previous_release_is_stamped_and_then_opens(tmp_path: Path) -> None:
    """The release before store formats wrote no record: its layout is format 1."""
    with BlockStore.open(tmp_path / "data") as store:
        Chain(store, GENESIS)
        head = store.head()
    db = raw(tmp_path / "data")
    db.delete(FORMAT_KEY)  # as the previous release left it
    assert stored_format(db) is None
    db.close()
    with BlockStore.open(tmp_path / "data") as store:
        assert store.get_meta("store_format") == (1).to_bytes(2, "big")
        assert Chain(store, GENESIS).height == 0
        assert store.head() == head


def test_a_newer_store_is_refused_untouched_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with BlockStore.open(path) as store:
        Chain(store, GENESIS)
    db = raw(path)
    db.put(FORMAT_KEY, (STORE_FORMAT + 1).to_bytes(2, "big"))
    db.close()
    with pytest.raises(StoreFormatError) as raised:
        BlockStore.open(path)
    message = str(raised.value)
    assert f"store format {STORE_FORMAT + 1}" in message
    assert f"reads store formats up to {STORE_FORMAT}" in message
    assert "Upgrade iomtnode" in message
    assert isinstance(raised.value, StoreError)  # the command line reports it as one
    db = raw(path)  # closed again (the lock is free) and left as it was
    assert stored_format(db) == STORE_FORMAT + 1
    db.close()


@pytest.mark.parametrize("record", [b"\x00\x00", b"\x01", b"\x00\x00\x01"])
def test_a_damaged_format_record_is_refused_untouched_naming_it(tmp_path: Path,
                                                                record: bytes) -> None:
    """Format 0, or a record not of 2 bytes, was written by no release: the store is
    damaged (format 0 raised a KeyError from the steps, a traceback at start)."""
    path = tmp_path / "data"
    with BlockStore.open(path) as store:
        Chain(store, GENESIS)
    db = raw(path)
    db.put(FORMAT_KEY, record)
    db.close()
    with pytest.raises(StoreFormatError, match="no release writes: the store is damaged"):
        BlockStore.open(path)
    db = raw(path)
    assert db.get(FORMAT_KEY) == record
    db.close()


def test_the_steps_run_in_order_each_format_recorded(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path / "data"), create_if_missing=True)
    seen: list[tuple[int, int | None]] = []

    def step(n: int) -> Step:
        def run(store: plyvel.DB, batch: Any) -> None:
            seen.append((n, stored_format(store)))
            batch.put(b"X" + bytes([n]), b"done")
        return run

    db.put(FORMAT_KEY, (1).to_bytes(2, "big"))
    bring_format_up_to_date(db, tmp_path, current=3, steps={1: step(1), 2: step(2)})
    assert seen == [(1, 1), (2, 2)]
    assert stored_format(db) == 3
    assert db.get(b"X\x01") == db.get(b"X\x02") == b"done"
    bring_format_up_to_date(db, tmp_path, current=3, steps={})  # up to date: nothing runs
    db.close()


def test_a_step_that_fails_leaves_the_format_it_started_from(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path / "data"), create_if_missing=True)

    def broken(store: plyvel.DB, batch: Any) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        bring_format_up_to_date(db, tmp_path, current=2, steps={1: broken})
    assert stored_format(db) == 1  # the unversioned store was stamped as what it is
    db.close()


def test_a_crash_in_a_step_leaves_its_format_whole_and_the_step_runs_once_again(
        tmp_path: Path) -> None:
    """A step's changes and the record of the format it reaches are one synced write: a
    process that dies in a step (here: after some of its writes) leaves the store exactly
    at the format it started from, and the next open runs the step once, on that format.
    (Written and recorded apart, a step's writes would stay while the store still says
    format N, and the next open would run the step again on data of format N + 1.)"""
    path = tmp_path / "data"
    db = plyvel.DB(str(path), create_if_missing=True)
    db.put(b"V", b"1")  # format 1 holds V = 1; format 2 holds V = 2 and the new entry N

    class Crash(BaseException):
        """The process dying: nothing after it runs."""

    def crashing(store: plyvel.DB, batch: Any) -> None:
        batch.put(b"V", b"2")
        batch.put(b"N", b"new")
        raise Crash

    with pytest.raises(Crash):
        bring_format_up_to_date(db, path, current=2, steps={1: crashing})
    db.close()

    db = plyvel.DB(str(path))
    assert stored_format(db) == 1
    assert db.get(b"V") == b"1" and db.get(b"N") is None  # nothing of the step is left
    runs: list[bytes | None] = []

    def increment(store: plyvel.DB, batch: Any) -> None:
        runs.append(store.get(b"V"))
        batch.put(b"V", b"2")
        batch.put(b"N", b"new")

    bring_format_up_to_date(db, path, current=2, steps={1: increment})
    bring_format_up_to_date(db, path, current=2, steps={1: increment})
    assert runs == [b"1"]  # once, on format 1's data
    assert stored_format(db) == 2 and db.get(b"V") == b"2" and db.get(b"N") == b"new"
    db.close()


def test_there_is_a_step_from_every_older_format() -> None:
    assert sorted(STORE_MIGRATIONS) == list(range(1, STORE_FORMAT))
