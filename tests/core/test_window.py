"""The anti-replay window: any order inside the window is accepted once, a replay never."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iomtnode.core import errors as e
from iomtnode.core import window as w


@st.composite
def spread(draw: st.DrawFn) -> tuple[int, list[int]]:
    """A window size and distinct sequence numbers that all lie within ``size`` of each
    other (so each is inside the window whatever came before), in any order."""
    size = draw(st.integers(1, 300))
    start = draw(st.integers(1, 2**40))
    seqs = draw(st.lists(st.integers(start, start + size - 1), unique=True, max_size=size))
    return size, draw(st.permutations(seqs))


@given(spread())
def test_distinct_numbers_within_the_window_are_accepted_once_in_any_order(
        case: tuple[int, list[int]]) -> None:
    size, seqs = case
    record: bytes | None = None
    for seq in seqs:
        assert w.fresh(record, seq, size)
        record = w.use(record, seq, size)
    for seq in seqs:  # every one of them again: a replay
        assert not w.fresh(record, seq, size)
        with pytest.raises(e.ReplayedSequenceError):
            w.use(record, seq, size)
    assert w.highest(record) == max(seqs, default=0)


@given(st.integers(1, 200), st.lists(st.integers(0, 400), max_size=80))
def test_a_number_is_accepted_at_most_once_whatever_the_order(size: int,
                                                              seqs: list[int]) -> None:
    record: bytes | None = None
    accepted: set[int] = set()
    for seq in seqs:
        expected = (seq not in accepted and seq >= 1 and seq > w.highest(record) - size)
        assert w.fresh(record, seq, size) == expected
        try:
            record = w.use(record, seq, size)
        except e.StaleSequenceError:  # ReplayedSequenceError is one too
            assert not expected
            continue
        assert expected and seq not in accepted, f"{seq} accepted twice"
        accepted.add(seq)
    for seq in accepted:
        with pytest.raises(e.StaleSequenceError):
            w.use(record, seq, size)


def test_too_old_and_replayed_are_told_apart() -> None:
    record = w.use(w.use(None, 10, 4), 8, 4)
    with pytest.raises(e.ReplayedSequenceError, match="8 was already used"):
        w.use(record, 8, 4)
    w.use(record, 7, 4)  # 10 - 3: the lowest inside
    with pytest.raises(e.StaleSequenceError, match="6 is too old") as info:
        w.use(record, 6, 4)
    assert type(info.value) is e.StaleSequenceError
    with pytest.raises(e.StaleSequenceError, match="start at 1"):
        w.use(record, 0, 4)


def test_a_jump_beyond_the_window_forgets_everything_below() -> None:
    record = w.use(w.use(None, 3, 8), 100, 8)
    assert w.fresh(record, 99, 8) and w.fresh(record, 93, 8) and not w.fresh(record, 92, 8)


def test_the_older_strictly_increasing_record_counts_everything_below_as_used() -> None:
    legacy = (679).to_bytes(8, "big")
    assert w.highest(legacy) == 679
    for seq in (679, 678, 1):
        with pytest.raises(e.StaleSequenceError):
            w.use(legacy, seq, 1024)
    record = w.use(legacy, 700, 1024)
    with pytest.raises(e.ReplayedSequenceError):
        w.use(record, 679, 1024)
    w.use(record, 699, 1024)


def test_in_order_readings_keep_the_short_record() -> None:
    record = None
    for seq in range(1, 3000):
        record = w.use(record, seq, 1024)
        assert record == seq.to_bytes(8, "big")
    gapped = w.use(record, 3001, 1024)  # 3000 skipped: the bitmap says so
    assert len(gapped) == 8 + 1024 // 8 and w.fresh(gapped, 3000, 1024)
    filled = w.use(gapped, 3000, 1024)
    assert filled == (3001).to_bytes(8, "big")
    record = gapped
    for seq in range(3002, 4024):  # 3000 is 1023 below 4023: still inside
        record = w.use(record, seq, 1024)
    assert len(record) > 8
    assert w.use(record, 4024, 1024) == (4024).to_bytes(8, "big")  # 3000 left the window
    assert w.use(None, 5, 1024) == (5).to_bytes(8, "big") + b"\x01"  # 1 to 4 unused
    # 2, then 1: every number that exists is used (those below 1 count as used)
    assert w.use(w.use(None, 2, 1024), 1, 1024) == (2).to_bytes(8, "big")


@pytest.mark.parametrize("jump", [1024, 2**31, 2**62])
def test_a_huge_jump_costs_no_more_than_a_small_one(jump: int) -> None:
    """A device may jump its sequence number by any amount: the record after it is the
    window's size, never the jump's (a shift by the jump would take 2**62 bits)."""
    raw = w.use(w.use(None, 5, 1024), 3, 1024)  # out of order: the bitmap form
    after = w.use(raw, 5 + jump, 1024)
    assert w.highest(after) == 5 + jump
    assert len(after) == len(raw)
    assert w.fresh(after, 5 + jump - 1, 1024) == (jump > 1)
