"""Backoff: capped exponential ceilings, full jitter within them, reset."""

from __future__ import annotations

import random

import pytest

from iomtnode.p2p.backoff import Backoff


def test_ceilings_double_up_to_the_cap():
    backoff = Backoff(0.5, 30.0, rng=random.Random(1))
    ceilings = []
    for _ in range(10):
        ceilings.append(backoff.ceiling())
        backoff.next_delay()
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_delays_are_full_jitter_within_the_ceiling():
    backoff = Backoff(0.5, 30.0, rng=random.Random(7))
    for _ in range(200):
        ceiling = backoff.ceiling()
        assert 0.0 <= backoff.next_delay() <= ceiling
    capped = [backoff.next_delay() for _ in range(500)]
    assert max(capped) <= 30.0
    assert min(capped) < 3.0 and max(capped) > 27.0  # spread over the whole range


def test_a_seeded_rng_repeats_and_reset_starts_over():
    a = Backoff(rng=random.Random(42))
    b = Backoff(rng=random.Random(42))
    assert [a.next_delay() for _ in range(8)] == [b.next_delay() for _ in range(8)]
    a.reset()
    assert a.attempts == 0 and a.ceiling() == a.base_s
    assert a.next_delay() <= a.base_s


def test_many_failures_do_not_overflow():
    backoff = Backoff(0.5, 30.0, rng=random.Random(3))
    backoff.attempts = 10_000
    assert 0.0 <= backoff.next_delay() <= 30.0


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_bad_bounds_are_refused(base, cap):
    with pytest.raises(ValueError):
        Backoff(base, cap, rng=random.Random(0))
