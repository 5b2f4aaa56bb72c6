"""The guard's exception for a new network of imported keys (``consensus/fresh.py``, "A new
network of imported keys"): nothing finalized and fewer than a quorum of the others
signing: the floor is 0; any other case keeps the floor two above the finalized height."""

from __future__ import annotations

from iomtnode.consensus.fresh import FreshStartGuard

from ..core.helpers import pub

A, B, C, D = (pub(n) for n in "ABCD")
ALL = (A, B, C, D)


def guard() -> FreshStartGuard:
    return FreshStartGuard(A, started_at=0.0, grace_s=1.0)


def test_nothing_final_and_nobody_signing_the_floor_is_zero():
    """Every authority of a new network deferring: each signs from height 1."""
    g = guard()
    assert g.update(1.0, 0, {B: 0, C: 0, D: 0}, ALL, height=1)
    assert g.floor == 0 and g.permits(1)


def test_fewer_than_a_quorum_signing_the_floor_is_zero():
    """Two of four with their state sign height 1: they cannot decide it without this one."""
    g = guard()
    g.saw_message(B, 1)
    g.saw_message(C, 1)
    assert g.update(1.0, 0, {B: 0, C: 0, D: 0}, ALL, height=1)
    assert g.floor == 0


def test_a_quorum_of_others_signing_keeps_the_floor_two_up():
    """The others go on without it: its lost state may have voted at height 1."""
    g = guard()
    for signer in (B, C, D):
        g.saw_message(signer, 1)
    assert g.update(1.0, 0, {B: 0, C: 0, D: 0}, ALL, height=1)
    assert g.floor == 2 and not g.permits(2) and g.permits(3)


def test_a_finalized_block_keeps_the_floor_two_up():
    g = guard()
    assert g.update(1.0, 0, {B: 1, C: 0, D: 0}, ALL, height=1)
    assert g.floor == 3


def test_without_the_peers_heads_there_is_no_exception():
    g = guard()
    assert g.update(1.0, 0, None, ALL, height=1)
    assert g.floor == 2
