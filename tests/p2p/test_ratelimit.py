"""Token buckets per peer and request kind: a peer gets its burst, then its rate; peers and
kinds are apart; kinds without a rate are never limited. Through the router: a request
over its rate is dropped before its reactor, logged and charged; a peer that keeps at it is
banned; one that keeps within its rate is served."""

from __future__ import annotations

import pytest
import trio
from structlog.testing import capture_logs

from iomtnode.admission.blocktxs import RATES as BLOCK_TXS_RATES
from iomtnode.admission.messages import GetBlockTxs, TxRequest, Txs
from iomtnode.admission.reactor import RATES as TX_RATES
from iomtnode.p2p import score
from iomtnode.p2p.messages import MESSAGE_TYPES, GetPeers, PeerRecords
from iomtnode.p2p.pex import RATES as PEX_RATES
from iomtnode.p2p.ratelimit import Rate, RequestLimits
from iomtnode.sync.blobs import RATES as BLOB_RATES
from iomtnode.sync.blobs import GetBlobs
from iomtnode.sync.messages import GetBlocks, Status
from iomtnode.sync.reactor import RATES as SYNC_RATES

from .test_router import Reactor, eventually, start
from .test_router import routers as two_routers

routers = two_routers  # the fixture, under its name here

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_peer_gets_its_burst_then_its_rate():
    clock = Clock()
    limits = RequestLimits(clock, {GetBlocks: Rate(per_s=10, burst=5)})
    assert [limits.charge("p", GetBlocks) for _ in range(6)] == [None] * 5 + [
        Rate(per_s=10, burst=5)]
    clock.now = 0.1  # one token back
    assert limits.charge("p", GetBlocks) is None
    assert limits.charge("p", GetBlocks) is not None
    clock.now = 100.0  # a long quiet spell refills to the burst, no more
    assert [limits.charge("p", GetBlocks) for _ in range(6)].count(None) == 5
    assert limits.dropped == 3


def test_a_steady_rate_is_never_refused():
    clock = Clock()
    limits = RequestLimits(clock, {GetBlocks: Rate(per_s=10, burst=2)})
    for i in range(1000):  # ten a second for 100 s
        clock.now = i / 10
        assert limits.charge("p", GetBlocks) is None


def test_a_requester_that_waits_as_told_is_never_refused():
    """take_or_wait (the requesting side) against charge (the serving side) at the same rate:
    every request goes through, and a wait of exactly what it said always ends it (float
    rounding of the refill must not leave the bucket a hair short forever)."""
    clock, served = Clock(), Clock()
    rate = Rate(per_s=3, burst=7)
    mine = RequestLimits(clock, {GetBlocks: Rate(rate.per_s, rate.burst / 2)})
    theirs = RequestLimits(served, {GetBlocks: rate})
    clock.now = served.now = 12345.678
    for _ in range(1000):
        waits = 0
        while (wait := mine.take_or_wait("p", GetBlocks)) > 0:
            clock.now += wait
            waits += 1
            assert waits < 3
        served.now = clock.now + 0.5  # a message's time on the way varies
        assert theirs.charge("p", GetBlocks) is None
    assert mine.dropped == 0 and clock.now == pytest.approx(12345.678 + (1000 - 3.5) / 3)


def test_peers_and_kinds_have_their_own_buckets():
    clock = Clock()
    limits = RequestLimits(clock, {GetBlocks: Rate(1, 1), Status: Rate(1, 1)})
    assert limits.charge("p", GetBlocks) is None
    assert limits.charge("p", GetBlocks) is not None
    assert limits.charge("q", GetBlocks) is None  # another peer
    assert limits.charge("p", Status) is None  # another kind
    limits.forget("p")  # gone: a new connection starts full
    assert limits.charge("p", GetBlocks) is None


def test_a_kind_without_a_rate_is_never_limited_nor_timed():
    def clock() -> float:
        raise AssertionError("the clock was read for a kind without a rate")

    limits = RequestLimits(clock, {GetBlocks: Rate(1, 1)})
    assert all(limits.charge("p", Txs) is None for _ in range(10_000))


def test_rates_are_checked_and_set_once():
    with pytest.raises(ValueError, match="per_s > 0 and burst >= 1"):
        Rate(per_s=0, burst=5)
    limits = RequestLimits(Clock(), {GetBlocks: Rate(1, 1)})
    with pytest.raises(ValueError, match="GetBlocks has a rate already"):
        limits.add(GetBlocks, Rate(2, 2))


def test_every_request_kind_has_a_rate():
    """A request makes a node look something up and answer: each such kind is limited."""
    rates = {**TX_RATES, **BLOCK_TXS_RATES, **SYNC_RATES, **PEX_RATES, **BLOB_RATES}
    requests = {kind for kind in MESSAGE_TYPES.values()
                if kind.__name__.startswith("Get") or kind.__name__.endswith("Request")}
    assert requests == {TxRequest, GetBlockTxs, GetBlocks, GetPeers, GetBlobs}
    assert requests <= set(rates)
    assert {Status, PeerRecords} <= set(rates)  # they make it work too (sync, signatures)


async def test_a_request_over_its_rate_is_dropped_logged_and_charged(
        routers, nursery, autojump_clock):
    a, b = routers
    reactor = Reactor()
    b.register((GetBlocks,), reactor, rates={GetBlocks: Rate(per_s=1, burst=3)})
    peer = await start(nursery, a, b)
    with capture_logs() as logs:
        for _ in range(4):
            peer.send(GetBlocks(1, 1))
        await eventually(lambda: b.limits.dropped == 1)
    assert len(reactor.received) == 3  # the fourth never reached the reactor
    penalty = next(e for e in logs if e["event"] == "peer_penalized")
    assert penalty["points"] == score.RATE_LIMITED
    assert penalty["reason"] == "rate_limited: GetBlocks dropped, over 1/s (burst 3)"
    await trio.sleep(1.0)  # a token back
    peer.send(GetBlocks(1, 1))
    await eventually(lambda: len(reactor.received) == 4)


async def test_a_peer_that_keeps_at_it_is_banned(routers, nursery, autojump_clock):
    a, b = routers
    reactor = Reactor()
    b.register((GetBlocks,), reactor, rates={GetBlocks: Rate(per_s=1, burst=3)})
    peer = await start(nursery, a, b)
    needed = int(-score.BAN_THRESHOLD // score.RATE_LIMITED) + 1
    for _ in range(3 + needed):
        peer.send(GetBlocks(1, 1))
    await eventually(lambda: b.host.scoreboard.is_banned(a.host.node_id, trio.current_time()))
    assert b.get(a.host.node_id) is None
    assert len(reactor.received) == 3


async def test_a_rate_is_only_for_a_kind_registered_with_it(routers):
    a, _ = routers
    with pytest.raises(ValueError, match="a rate for Status, which is not registered here"):
        a.register((GetBlocks,), Reactor(), rates={Status: Rate(1, 1)})
