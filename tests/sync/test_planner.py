"""The sync planner (pure): what a node syncs to, and which peer is asked for which range.

Peers are named: A, B, C honest, L a liar. Heights are what they claim; ``NOW`` is an hour
after genesis (a plausible chain is at most 3,600,000 + slack blocks high)."""

from __future__ import annotations

import pytest

from iomtnode.sync import planner as planner_module
from iomtnode.sync.planner import (
    CLOCK_SLACK_MS,
    RANGE_BLOCKS,
    UNSERVED_IGNORED_S,
    Assignment,
    SyncPlanner,
)

GENESIS_MS = 1_700_000_000_000
NOW = GENESIS_MS + 3_600_000
A, B, C, L, M = (bytes([c]) * 32 for c in b"ABCLM")
HUGE = 2**64 - 1


def planner(**claims: int) -> SyncPlanner:
    p = SyncPlanner(GENESIS_MS)
    for name, height in claims.items():
        p.claimed(bytes([ord(name)]) * 32, height)
    return p


@pytest.mark.parametrize("claims, height, goal, why", [
    ({"A": 11}, 0, 11, "supported"),  # the one peer connected
    ({"A": 11, "B": 11}, 0, 11, "supported"),
    ({"A": 11, "B": 11, "L": 500}, 0, 11, "supported"),  # L alone claims 500: not first
    ({"A": 11, "B": 9, "L": 500}, 0, 11, "supported"),  # 11: A and L claim it
    ({"A": 11, "B": 11, "L": 500}, 11, 500, "lone"),  # supported synced: the lone claim
    ({"A": 11, "B": 0, "C": 0}, 0, 11, "lone"),  # the only peer ahead
    ({"A": 11, "L": HUGE, "M": HUGE}, 0, 11, "lone"),  # two liars do not support 2^64-1
    ({"A": 11, "L": HUGE, "M": HUGE}, 11, HUGE, "implausible"),  # tried last
    ({"L": HUGE}, 0, HUGE, "implausible"),  # a node whose clock is wrong still syncs
    ({"A": 11, "B": 11}, 11, 11, "level"),
    ({}, 4, 4, "level"),
])
def test_the_goal(claims, height, goal, why):
    got = planner(**claims).goal(height, NOW)
    assert (got.height, got.why) == (goal, why)


def test_a_claim_beyond_the_chains_age_is_implausible():
    p = SyncPlanner(GENESIS_MS)
    ceiling = 3_600_000 + CLOCK_SLACK_MS  # one block a millisecond at most, plus slack
    assert p.plausible_height(NOW) == ceiling
    p.claimed(A, 11)
    p.claimed(L, ceiling)
    p.claimed(M, ceiling)
    assert p.goal(0, NOW).height == ceiling  # two plausible claims: supported
    p.claimed(L, ceiling + 1)
    p.claimed(M, ceiling + 1)
    assert p.goal(0, NOW).height == 11


def test_ranges_are_split_across_peers_and_never_past_the_goal():
    p = planner(A=100, B=100, C=100, L=HUGE)
    plan = p.plan(1, 0, NOW)
    assert plan == [Assignment(A, 1, 32), Assignment(B, 33, 32), Assignment(C, 65, 32)]
    assert L not in {a.peer_id for a in plan}  # an implausible claim serves nothing first
    p = planner(A=10, B=10, C=10)
    assert p.plan(1, 0, NOW) == [Assignment(A, 1, 4), Assignment(B, 5, 3), Assignment(C, 8, 3)]
    assert p.plan(11, 10, NOW) == []


def test_the_lone_claim_is_not_asked_past_the_supported_height():
    p = planner(A=11, B=11, L=500)
    plan = p.plan(1, 0, NOW)
    assert max(a.first + a.count - 1 for a in plan) == 11
    assert {a.peer_id for a in plan} == {A, B, L}  # L claims 1..11 too: it may serve them


def test_a_peer_asks_only_within_its_claim():
    p = planner(A=100, B=5)
    assert p.plan(1, 0, NOW) == [Assignment(B, 1, 3), Assignment(A, 4, 2)]  # supported: 5
    assert p.plan(6, 5, NOW) == [Assignment(A, 6, RANGE_BLOCKS)]  # then A's claim alone
    p = planner(A=100, B=40, C=41)
    assert p.plan(40, 0, NOW) == [Assignment(B, 40, 1), Assignment(C, 41, 1)]  # goal 41
    p = planner(A=100, B=100, C=40)
    assert p.plan(39, 0, NOW) == [Assignment(C, 39, 2), Assignment(A, 41, 30),
                                  Assignment(B, 71, 30)]  # the lower claim first


def test_peers_that_served_get_the_first_ranges():
    p = planner(A=100, B=100, C=100)
    p.served(C, 32)
    p.served(B, 1)
    assert [a.peer_id for a in p.plan(1, 0, NOW)] == [C, B, A]
    p.forget(C)  # a record lasts as long as the connection
    p.claimed(C, 100)
    assert [a.peer_id for a in p.plan(1, 0, NOW)] == [B, A, C]


def test_an_unserved_claim_is_dropped_and_not_restored_for_a_while():
    p = planner(A=11, B=11, L=500)
    assert p.unserved(L, 5, NOW) == 500
    assert L not in p.claims and p.believed(L, NOW) is None
    p.claimed(L, 500)  # it announces the same claim again
    assert p.believed(L, NOW) == 4  # believed only below what it did not serve
    p.forget(L)  # and again after reconnecting
    p.claimed(L, HUGE)
    assert p.believed(L, NOW) == 4
    assert p.goal(11, NOW).why == "level"  # nothing left to chase
    later = NOW + int(UNSERVED_IGNORED_S * 1000)
    assert p.believed(L, later - 1) == 4
    assert p.believed(L, later) == HUGE


def test_a_range_not_served_goes_to_another_peer():
    p = planner(A=11, B=11, L=11)
    p.served(L, 1)  # L is asked first
    [first, *_] = p.plan(1, 0, NOW)
    assert first == Assignment(L, 1, 4)
    p.unserved(L, 1, NOW)
    assert p.plan(1, 0, NOW, last=4, parallel=1) == [Assignment(A, 1, 4)]
    p.unserved(A, 1, NOW)
    p.unserved(B, 1, NOW)
    assert p.plan(1, 0, NOW, last=4, parallel=1) == []  # nobody left: the catch-up stops


def test_unserved_claims_remembered_are_bounded(monkeypatch):
    monkeypatch.setattr(planner_module, "MAX_IGNORED", 3)
    p = SyncPlanner(GENESIS_MS)
    for i in range(5):
        p.unserved(bytes([i]) * 32, 1, NOW)
    for i in range(5):
        p.claimed(bytes([i]) * 32, 10)
    assert [p.believed(bytes([i]) * 32, NOW) for i in range(5)] == [10, 10, 0, 0, 0]


def test_the_highest_claim_counts():
    p = planner(A=11)
    p.claimed(A, 3)  # an older Status, arriving late
    assert p.claims[A] == 11
