"""A catch-up never asks one peer for blocks faster than that peer serves them
(``GET_BLOCKS_RATE``, enforced by the router): a request dropped for its rate would cost a
timeout and the honest peer's claim. The peer here serves one block an answer, so a
catch-up of a few hundred small blocks is a few hundred requests, made at once under the
virtual clock (verification inline) unless the follower paces them."""

from __future__ import annotations

import pytest
import trio

from iomtnode.p2p.ratelimit import RequestLimits
from iomtnode.sync.messages import GetBlocks
from iomtnode.sync.reactor import RATES

from ..admission.chainkit import source_chain
from .test_unserved_claims import A, FakePeer, follower

BLOCKS = 450  # more requests than the served rate's burst (400)


class RateLimitedPeer(FakePeer):
    """Serves as FakePeer does, after the router's rate check: a request over the rate is
    dropped unanswered."""

    def __init__(self, node_id: bytes, items: dict) -> None:
        super().__init__(node_id, items, cap=1)
        self.limits = RequestLimits(trio.current_time, RATES)

    def send(self, msg) -> bool:
        if isinstance(msg, GetBlocks) and self.limits.charge(self.node_id, GetBlocks) is not None:
            return True  # dropped, as the router drops it
        return super().send(msg)


@pytest.fixture
def long_chain(tmp_path):
    _, blocks = source_chain(tmp_path / "source", BLOCKS - 1, 0)
    return {b.height: [b.encode(), c.encode()] for b, c in blocks}


async def test_a_catch_up_stays_within_the_rate_its_peer_serves(
        tmp_path, long_chain, autojump_clock):
    peer = RateLimitedPeer(A, long_chain)
    sync, host = follower(tmp_path / "follower", [peer])
    sync.saw_height(A, BLOCKS)
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        with trio.fail_after(60):
            while sync._chain.height < BLOCKS:  # noqa: ASYNC110 - no event for the height
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert peer.limits.dropped == 0 and host.penalties == []
    assert len(peer.asked) >= BLOCKS
    rate = RATES[GetBlocks]
    # no faster than needed: the burst the follower keeps (half the peer's), then the rate
    assert trio.current_time() - started <= (len(peer.asked) - rate.burst / 2) / rate.per_s + 1
