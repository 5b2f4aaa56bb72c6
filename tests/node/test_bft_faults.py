"""Networks of 4 and 7 authorities (drivers over real chains, an in-test bus, trio's
autojump clock) with f of them crashed, cut off or Byzantine: never two different
finalized blocks at one height on any node, finality goes on with the rest, the faulty
ones catch up once back, and an equivocating authority is named in every honest node's
evidence (and handed to ``on_evidence``).

The Byzantine authority is :class:`~tests.consensus.harness.EquivocatingNetwork`: every
proposal and vote it signs goes to half the others, a conflicting twin to the other half.
"""

from __future__ import annotations

import pytest
from trio.testing import MockClock

from ..consensus.harness import (
    Cluster,
    TNode,
    assert_no_double_signing,
    assert_one_chain,
    cluster,
    jump_clock,
    wait_heights,
    wait_until,
)
from ..core.helpers import pub

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def autojump_clock() -> MockClock:
    return jump_clock()


def top(nodes: list[TNode]) -> int:
    return max(n.chain.height for n in nodes)


async def finalizes(net: Cluster, names: str, blocks: int) -> int:
    """Wait until each of ``names`` has ``blocks`` more blocks than the highest of them
    now; returns that height."""
    nodes = [net[n] for n in names]
    target = top(nodes) + blocks
    await wait_heights(nodes, target)
    return target


def signs_again_above(net: Cluster, name: str, height: int) -> bool:
    return any(at[0] > height for at in net.bus.own_signatures(pub(name)))


def assert_evidence_names(net: Cluster, honest: str, byzantine: str) -> None:
    for name in honest:
        node = net[name]
        assert node.driver is not None
        named = {e["authority"] for e in node.driver.evidence}
        assert named == {pub(byzantine).hex()}, (name, named)
        assert node.reported and {e.validator for e in node.reported} == {pub(byzantine)}
        hashes = [e.hash for e in node.reported]
        assert len(hashes) == len(set(hashes))  # on_evidence once per equivocation


async def crash_and_return(net: Cluster, crashed: str, rest: str) -> None:
    await finalizes(net, net.names, 2)
    for name in crashed:
        net[name].stop()
    await finalizes(net, rest, 4)  # f down: the others go on
    back_at = top([net[n] for n in rest])
    await net.start(crashed)  # their stores and signing state kept
    await finalizes(net, net.names, 3)  # caught up, and finality goes on with them
    await wait_until(lambda: all(signs_again_above(net, n, back_at) for n in crashed))
    assert_one_chain(net.nodes.values(), net.genesis)
    assert_no_double_signing(net.bus, net.names)
    assert all(n.driver is not None and not n.driver.evidence for n in net.nodes.values())


async def cut_off_and_heal(net: Cluster, away: str, rest: str) -> None:
    await finalizes(net, net.names, 2)
    net.bus.partition(rest, away)
    stalled = top([net[n] for n in away])
    await finalizes(net, rest, 5)  # the quorum side goes on ...
    assert top([net[n] for n in away]) <= stalled + 1  # ... the other one cannot
    healed_at = top([net[n] for n in rest])
    net.bus.heal()
    await finalizes(net, net.names, 3)
    await wait_until(lambda: all(signs_again_above(net, n, healed_at) for n in away))
    assert_one_chain(net.nodes.values(), net.genesis)
    assert_no_double_signing(net.bus, net.names)


# four authorities (f = 1) ------------------------------------------------------------------


async def test_four_one_crashed_then_back(tmp_path, autojump_clock):
    async with cluster(tmp_path, "ABCD", signed_before=True, sync=True) as net:
        await net.start()
        await crash_and_return(net, "C", "ABD")


async def test_four_one_cut_off_then_healed(tmp_path, autojump_clock):
    async with cluster(tmp_path, "ABCD", signed_before=True, sync=True) as net:
        await net.start()
        await cut_off_and_heal(net, "D", "ABC")


async def test_four_one_byzantine_equivocates_on_every_message(tmp_path, autojump_clock):
    async with cluster(tmp_path, "ABCD", signed_before=True, sync=True) as net:
        byzantine = net.make_byzantine("D")
        await net.start()
        await finalizes(net, "ABCD", 8)  # D proposed (twins) at heights 3 and 7, round 0
        assert byzantine.twins > 8
        assert_one_chain(net.nodes.values(), net.genesis)
        assert_no_double_signing(net.bus, "ABC")
        assert_evidence_names(net, "ABC", "D")
        assert not any(n.network.penalties for n in net.nodes.values())  # all validly signed


# seven authorities (f = 2) -----------------------------------------------------------------


async def test_seven_two_crashed_then_back(tmp_path, autojump_clock):
    async with cluster(tmp_path, "ABCDEFG", signed_before=True, sync=True) as net:
        await net.start()
        await crash_and_return(net, "FG", "ABCDE")


async def test_seven_two_cut_off_then_healed(tmp_path, autojump_clock):
    async with cluster(tmp_path, "ABCDEFG", signed_before=True, sync=True) as net:
        await net.start()
        await cut_off_and_heal(net, "CF", "ABDEG")


async def test_seven_one_byzantine_and_one_crashed(tmp_path, autojump_clock):
    async with cluster(tmp_path, "ABCDEFG", signed_before=True, sync=True) as net:
        byzantine = net.make_byzantine("G")
        await net.start()
        await finalizes(net, "ABCDEFG", 2)
        net["F"].stop()  # with G lying, the 5 honest left are exactly a quorum
        await finalizes(net, "ABCDEG", 7)
        back_at = top([net[n] for n in "ABCDE"])
        await net.start("F")
        await finalizes(net, "ABCDEFG", 3)
        await wait_until(lambda: signs_again_above(net, "F", back_at))
        assert byzantine.twins > 7
        assert_one_chain(net.nodes.values(), net.genesis)
        assert_no_double_signing(net.bus, "ABCDEF")
        # F's driver restarted (its evidence list is in memory): it may or may not have
        # seen G's twins since; it must never name an honest authority
        assert_evidence_names(net, "ABCDE", "G")
        assert {e["authority"] for e in net["F"].driver.evidence} <= {pub("G").hex()}
