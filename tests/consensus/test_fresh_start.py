"""An authority that starts without its signing state (a new home, or a lost
``signing_state`` file) never signs where its key may have signed before: the guard's
rule on its own, then drivers over the in-test bus under the autojump clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio
from structlog.testing import capture_logs

from iomtnode.consensus.driver import DriverConfig
from iomtnode.consensus.fresh import FreshStartGuard
from iomtnode.consensus.signing import Signer
from iomtnode.consensus.votes import SigningState, Step
from iomtnode.core.crypto import blake2b256

from ..core.helpers import CHAIN_ID, key, pub
from .harness import (
    CONFIG,
    ConsensusMessage,
    MemoryMeta,
    assert_no_double_signing,
    assert_one_chain,
    cluster,
    signed_by,
    wait_heights,
    wait_until,
)

A, B, C, D = (pub(n) for n in "ABCD")


# the rule --------------------------------------------------------------------------------


def test_a_signer_with_nothing_persisted_is_fresh(tmp_path):
    assert Signer(key("A"), CHAIN_ID, MemoryMeta()).fresh
    assert not Signer(key("A"), CHAIN_ID, MemoryMeta(SigningState())).fresh
    signed = SigningState(3, 0, Step.PREVOTE, blake2b256(b"x"))
    assert not Signer(key("A"), CHAIN_ID, MemoryMeta(signed)).fresh


def test_the_floor_is_two_above_the_highest_finalized_height_heard_of():
    guard = FreshStartGuard(A, started_at=100.0, grace_s=2.0)
    guard.saw_own_head(7)  # its own data: block 7 is final
    guard.saw_heads({B: 9, b"\x99" * 32: 500}, (A, B, C, D))  # a follower's head: ignored
    guard.saw_message(C, 10)  # C works on height 10: 9 is final
    assert not guard.resolve(101.9, need_heard=2)  # the grace period is not over
    assert guard.floor is None and not guard.permits(10**6)
    assert guard.resolve(102.0, need_heard=2)
    assert guard.floor == 11  # 9 + 2: the key may have signed at 10 (and 11, one ahead)
    assert not guard.permits(11) and guard.permits(12)
    guard.saw_message(D, 50)  # after the floor is fixed, traffic is just traffic
    guard.saw_own_head(40)
    assert guard.floor == 11 and guard.finalized == 9


def test_the_floor_waits_for_a_quorum_of_the_others_when_heads_are_known():
    guard = FreshStartGuard(A, started_at=0.0, grace_s=1.0)
    guard.saw_heads({A: 99, B: 4}, (A, B, C, D))  # its own key's head does not count
    guard.saw_message(A, 100)
    assert guard.heard == {B} and guard.finalized == 4
    assert not guard.resolve(5.0, need_heard=2)
    guard.saw_message(C, 5)
    assert guard.resolve(5.0, need_heard=2) and guard.floor == 6


def test_without_a_quorum_heard_it_settles_late_for_its_up_to_date_peers():
    """Authorities that reach each other only through followers never hear a quorum
    directly: after ten grace periods, holding every block its peers report, it fixes
    the floor from what it knows (else a new network of them would never start)."""
    follower = b"\x99" * 32
    guard = FreshStartGuard(A, started_at=0.0, grace_s=2.0)
    assert not guard.update(5.0, 0, {follower: 0}, (A, B, C, D), height=1)
    assert not guard.update(19.9, 0, {follower: 0}, (A, B, C, D), height=1)
    assert not guard.update(25.0, 3, {follower: 7}, (A, B, C, D), height=4)  # behind it
    assert not guard.update(25.0, 7, {}, (A, B, C, D), height=8)  # no peer at all
    assert guard.update(25.0, 7, {follower: 7}, (A, B, C, D), height=8)
    assert guard.floor == 9


def test_with_nothing_finalized_the_floor_is_still_two_up():
    """No exception for a new network (``iomtnode init`` writes the initial signing
    state, so none means lost): the key may have signed at height 1, and height 2 if
    block 1 was final where it was, so it signs from height 3."""
    guard = FreshStartGuard(A, started_at=0.0, grace_s=1.0)
    guard.saw_heads({B: 0, C: 0}, (A, B, C, D))
    guard.saw_message(D, 1)
    assert guard.resolve(1.0, need_heard=2) and guard.floor == 2
    assert not guard.permits(1) and not guard.permits(2) and guard.permits(3)


@pytest.mark.parametrize("authorities", [(A, B), (A, B, C)])
def test_with_two_or_three_authorities_the_floor_is_the_highest_finalized_height(
        authorities):
    """Every authority is in every quorum: nobody else could decide heights 8 and 9, and
    a floor of 9 stalled the network for good; any two quorums share every other authority
    with its lock, so signing there cannot finalize a second block."""
    guard = FreshStartGuard(A, started_at=0.0, grace_s=1.0)
    heads = {other: 7 for other in authorities[1:]}
    assert guard.update(1.0, 3, heads, authorities, height=4)
    assert guard.floor == 7
    assert not guard.permits(7) and guard.permits(8)


def test_a_lone_authority_without_its_signing_state_never_signs():
    """With one authority nobody can tell what its key signed (a follower's head may be
    behind what it signed): it refuses, for good, whatever it hears."""
    guard = FreshStartGuard(A, started_at=0.0, grace_s=1.0)
    with capture_logs() as logs:
        for now in (0.5, 5.0, 500.0):
            assert not guard.update(now, 7, {b"\x99" * 32: 9}, (A,), height=8)
    assert guard.floor is None and not guard.permits(10**6)
    assert [e["event"] for e in logs] == ["signing_refused"]


def test_the_grace_period_defaults_to_twice_the_longest_round_timeout():
    assert CONFIG.fresh_grace() == 2.0  # 2 x 1.0 s propose timeout, = the 2 s resend
    assert replace(CONFIG, resend_interval_s=5.0).fresh_grace() == 5.0
    assert replace(CONFIG, fresh_grace_s=0.5).fresh_grace() == 0.5
    with pytest.raises(ValueError, match="negative"):
        FreshStartGuard(A, 0.0, -1.0)


# drivers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lost", ["signing_state_file", "whole_home"])
async def test_an_authority_that_lost_its_signing_state_never_signs_twice(
        tmp_path, autojump_clock, lost):
    """A, B and C run, D is cut off: every decision needs A. A crashes right after its
    prevote at height 2 and comes back at once without its signing state, either with
    its chain data or on an empty store. Proposals are resent only every 30 s, so A has
    none for its propose timeout (1 s): signing anything at height 2 could conflict.
    A observes and fixes its floor at 1 + 2 = 3; D's return lets B, C and D decide 2
    and 3 without it; A signs again from height 4. Without the guard, A prevotes nil at
    height 2, round 0, where it prevoted the block before the crash."""
    config = DriverConfig(block_interval_s=0.1, empty_block_interval_s=0.5, max_block_txs=100,
                          resend_interval_s=30.0, fresh_grace_s=3.0)
    async with cluster(tmp_path, signed_before=True, sync=True) as net:
        net.bus.partition("ABC", "D")
        crashed = trio.Event()

        def crash_after_first_prevote_at_2(sender: bytes, msg: ConsensusMessage) -> None:
            _, (height, _, step), _ = signed_by(msg)
            if sender == A and (height, step) == (2, Step.PREVOTE) and not crashed.is_set():
                net["A"].stop()  # cancelled mid-height, its prevote persisted and sent
                crashed.set()

        net.bus.on_own = crash_after_first_prevote_at_2
        await net.start(config=config, heads=True)
        await crashed.wait()
        net.bus.on_own = None
        a = net.new_home("A", keep_data=lost == "signing_state_file")
        with capture_logs() as logs:
            await net.start("A", config, heads=True)
            await wait_until(lambda: a.driver is None or a.driver.signing_floor is not None)
        assert a.driver is not None and a.driver.signing_floor == 3
        deferred = [e for e in logs if e["event"] == "signing_deferred"]
        assert [e["phase"] for e in deferred] == ["observing", "floor"]
        assert deferred[1]["until_height"] == 4
        assert not [at for at in net.bus.own_signatures(A) if at[0] > 1 and at != (
            2, 0, Step.PREVOTE)], "A signed while deferred"

        net.bus.heal()  # D is back: B, C and D are a quorum without A
        await wait_heights(net.nodes.values(), 7)
        assert_one_chain(net.nodes.values(), net.genesis)
        assert_no_double_signing(net.bus, "ABCD")
        signed = net.bus.own_signatures(A)
        assert {at for at in signed if 2 <= at[0] <= 3} == {(2, 0, Step.PREVOTE)}
        assert any(at[0] > 3 for at in signed), "A never signed again"
        for node in net.nodes.values():
            assert node.driver is not None and not node.driver.evidence, node.name
            assert not node.reported


async def test_a_new_network_starts_at_once_and_a_late_key_without_its_state_defers(
        tmp_path, autojump_clock):
    """A new network: each home has the signing state ``iomtnode init`` wrote (nothing
    signed), so nobody defers: A, B, C start one after another and finalize. D's home lost
    its state before it ever ran: it defers (its key might have signed) and then joins,
    signing only above its floor."""
    async with cluster(tmp_path, sync=True) as net:
        await net.start("A", heads=True)
        await trio.sleep(1)
        await net.start("B", heads=True)
        await trio.sleep(1)
        await net.start("C", heads=True)
        abc = [net[n] for n in "ABC"]
        await wait_heights(abc, 4)
        assert all(n.driver is not None and n.driver.signing_floor == 0 for n in abc)

        d = net.new_home("D", keep_data=True)
        await net.start("D", heads=True)
        await wait_until(lambda: d.driver is None or d.driver.signing_floor is not None)
        assert d.driver is not None
        floor = d.driver.signing_floor
        assert floor is not None and floor >= 6
        await wait_heights(net.nodes.values(), floor + 4)
        assert_one_chain(net.nodes.values(), net.genesis)
        assert_no_double_signing(net.bus, "ABCD")
        heights_signed = {at[0] for at in net.bus.own_signatures(D)}
        assert heights_signed and min(heights_signed) > floor


def test_the_floor_follows_the_authorities_of_the_height_signed_at():
    """The floor was fixed once, by the set of the height the node was at: four
    authorities, K + 2, kept when a removal made heights K + 1 and K + 2 need every one of
    the three left (the network stalled there for good); and the other way round, K
    under three kept when an addition made four."""
    guard = FreshStartGuard(A, started_at=0.0, grace_s=1.0)
    assert guard.update(1.0, 3, {B: 7, C: 7, D: 7}, (A, B, C, D), height=4)
    assert guard.floor == 9
    assert guard.permits(8, (A, B, C)) and not guard.permits(7, (A, B, C))
    assert not guard.permits(9, (A, B, C, D)) and guard.permits(10, (A, B, C, D))
    grown = FreshStartGuard(A, started_at=0.0, grace_s=1.0)
    assert grown.update(1.0, 3, {B: 7, C: 7}, (A, B, C), height=4)
    assert grown.floor == 7 and grown.permits(8, (A, B, C))
    assert not grown.permits(8, (A, B, C, D)) and grown.permits(10, (A, B, C, D))
