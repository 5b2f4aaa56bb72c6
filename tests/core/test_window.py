"""The anti-replay window: any order inside the window is accepted once, a replay never."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iomtnode.core import errors as e
from iomtnode.core import window as w


def use(seqs: w.SeqWindow, seq: int, size: int) -> w.SeqWindow:
    """Check and mark ``seq``, through the stored bytes as the state does."""
    w.check(seqs, seq, size)
    return w.decode(w.encode(w.mark(seqs, seq, size)), size)


@st.composite
def spread(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """A window size, a start and distinct sequence numbers that all lie within ``size``
    of each other (so each is inside the window whatever came before), shuffled."""
    size = draw(st.integers(1, 300))
    start = draw(st.integers(1, 2**40))
    seqs = draw(st.lists(st.integers(start, start + size - 1), unique=True, max_size=size))
    return size, start, draw(st.permutations(seqs))


@given(spread())
def test_distinct_numbers_within_the_window_are_accepted_once_in_any_order(
        case: tuple[int, int, list[int]]) -> None:
    size, _, seqs = case
    state = w.decode(None, size)
    for seq in seqs:
        state = use(state, seq, size)
    for seq in seqs:  # every one of them again: a replay
        with pytest.raises(e.ReplayedSequenceError):
            w.check(state, seq, size)
        assert not w.fresh(state, seq, size)
    assert state.highest == max(seqs, default=0)


@given(st.integers(1, 200), st.lists(st.integers(0, 400), max_size=80))
def test_a_number_is_accepted_at_most_once_whatever_the_order(size: int,
                                                              seqs: list[int]) -> None:
    state = w.decode(None, size)
    accepted: set[int] = set()
    for seq in seqs:
        assert w.fresh(state, seq, size) == (seq not in accepted and seq >= 1
                                             and seq > state.highest - size)
        try:
            state = use(state, seq, size)
        except e.StaleSequenceError:  # ReplayedSequenceError is one too
            continue
        assert seq not in accepted, f"{seq} accepted twice"
        accepted.add(seq)
    for seq in accepted:
        with pytest.raises(e.StaleSequenceError):
            w.check(state, seq, size)


def test_too_old_and_replayed_are_told_apart() -> None:
    state = use(use(w.decode(None, 4), 10, 4), 8, 4)
    with pytest.raises(e.ReplayedSequenceError, match="8 was already used"):
        w.check(state, 8, 4)
    w.check(state, 7, 4)  # 10 - 3: the lowest inside
    with pytest.raises(e.StaleSequenceError, match="6 is too old") as info:
        w.check(state, 6, 4)
    assert type(info.value) is e.StaleSequenceError


def test_a_jump_beyond_the_window_forgets_everything_below() -> None:
    state = use(use(w.decode(None, 8), 3, 8), 100, 8)
    assert state == w.SeqWindow(100, 1)
    w.check(state, 99, 8)


def test_the_older_strictly_increasing_record_counts_everything_below_as_used() -> None:
    legacy = (679).to_bytes(8, "big")
    assert w.highest(legacy) == 679
    state = w.decode(legacy, 1024)
    for seq in (679, 678, 1):
        with pytest.raises(e.StaleSequenceError):
            w.check(state, seq, 1024)
    state = use(state, 700, 1024)
    with pytest.raises(e.ReplayedSequenceError):
        w.check(state, 679, 1024)
    w.check(state, 699, 1024)


def test_the_record_is_small_and_bounded() -> None:
    state = w.decode(None, 1024)
    for seq in range(1, 3000):
        state = use(state, seq, 1024)
    assert len(w.encode(state)) == 8 + 1024 // 8
    assert w.encode(w.decode(None, 1024)) == bytes(8) + b"\x01"
