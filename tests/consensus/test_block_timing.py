"""When a height starts: as soon as the previous block is final and transactions wait, but
no sooner than ``block_interval_s`` after the previous height started; an empty block only
after ``empty_block_interval_s``. One authority (A), so the only time a height takes is
its commit, which these tests stretch on the virtual clock. Block times are the proposer's
clock at its start (``now_ms`` is the trio clock here), so their gaps are the gaps between
starts.

The autojump clock may jump while a commit fsyncs in a worker thread, which can only
lengthen a gap: lower bounds hold for every gap, upper bounds for the median.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import replace

import trio

from iomtnode.chain.feed import each_block

from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import admit
from .harness import CONFIG, Cluster, cluster, wait_heights

HEIGHTS = 9
MS = 0.001  # block times are whole ms (truncated)


def device_tx(i: int) -> bytes:
    return admit(key("A"), key(f"device{i}").public, pub(f"stream{i}"), CHAIN_ID).raw


def keep_busy(net: Cluster, commit_s: float) -> None:
    """A's mempool holds a transaction at every height, and each commit takes ``commit_s``
    (trio clock) before it is written."""
    node = net["A"]
    node.mempool.add(device_tx(0))
    made = iter(range(1, 1000))
    node.feed.listen(each_block(lambda *_: node.mempool.add(device_tx(next(made)))))
    commit = node.writer.commit

    async def slow_commit(built, certificate, source=None):
        await trio.sleep(commit_s)
        return await commit(built, certificate, source)

    node.writer.commit = slow_commit  # type: ignore[method-assign]


def gaps_s(net: Cluster) -> list[float]:
    chain = net["A"].chain
    times = [chain.block_at(h).header.time_ms for h in range(1, HEIGHTS + 1)]
    return [(b - a) / 1000 for a, b in itertools.pairwise(times)]


async def test_a_height_waits_for_the_interval_since_the_previous_start(tmp_path,
                                                                         autojump_clock):
    config = replace(CONFIG, block_interval_s=0.05)
    async with cluster(tmp_path, "A") as net:
        keep_busy(net, commit_s=0.01)  # final 10 ms after the start: then 40 ms to wait
        await net.start(config=config)
        await wait_heights([net["A"]], HEIGHTS)
        gaps = gaps_s(net)
    assert min(gaps) >= 0.05 - MS
    assert statistics.median(gaps) < 0.055


async def test_a_height_starts_when_the_previous_block_is_final_if_that_took_longer(
        tmp_path, autojump_clock):
    config = replace(CONFIG, block_interval_s=0.05)
    async with cluster(tmp_path, "A") as net:
        keep_busy(net, commit_s=0.08)  # longer than the interval: no wait after the commit
        await net.start(config=config)
        await wait_heights([net["A"]], HEIGHTS)
        gaps = gaps_s(net)
    assert min(gaps) >= 0.08 - MS
    assert statistics.median(gaps) < 0.08 + 0.05 / 2  # not 0.08 + the interval


async def test_with_nothing_pending_an_empty_block_waits_its_own_interval(tmp_path,
                                                                          autojump_clock):
    config = replace(CONFIG, block_interval_s=0.05, empty_block_interval_s=0.5)
    async with cluster(tmp_path, "A") as net:
        await net.start(config=config)
        await wait_heights([net["A"]], 4)
        chain = net["A"].chain
        times = [chain.block_at(h).header.time_ms for h in range(1, 5)]
    assert all(b - a >= 500 for a, b in itertools.pairwise(times))
