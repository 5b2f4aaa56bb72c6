"""iomtnode.log.OncePer: one line per key and interval, with the count of those left out."""

from __future__ import annotations

from iomtnode.log import OncePer


def test_one_line_per_key_and_interval_then_the_count_of_those_left_out():
    once = OncePer(interval_s=10.0, max_keys=2)
    assert once.unlogged("a", 0.0) == 0  # the first is logged
    assert [once.unlogged("a", t) for t in (1.0, 5.0, 9.9)] == [None] * 3  # counted
    assert once.unlogged("b", 2.0) == 0  # another key has its own line
    assert once.unlogged("a", 10.0) == 3  # the next line says how many were left out
    assert once.unlogged("a", 11.0) is None


def test_the_least_recently_used_key_is_forgotten_beyond_max_keys():
    once = OncePer(interval_s=10.0, max_keys=2)
    for key in ("a", "b", "c"):
        assert once.unlogged(key, 0.0) == 0
    assert once.unlogged("a", 1.0) == 0  # "a" was forgotten: logged again at once
    assert once.unlogged("c", 1.0) is None
