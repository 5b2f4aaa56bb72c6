"""The consensus driver's figures (``Driver.stats``): the height and round it decides."""

from __future__ import annotations

from .harness import cluster, wait_heights, wait_until


async def test_stats_say_which_height_and_round_are_being_decided(tmp_path, autojump_clock):
    async with cluster(tmp_path, "AB") as net:
        a = net["A"]
        await net.start()
        assert a.driver is not None
        await wait_heights(net.nodes.values(), 2)
        driver = a.driver
        await wait_until(lambda: driver.stats().deciding == (a.chain.height + 1, 0))
        stats = driver.stats()
        assert stats.evidence_seen == () and stats.pending_blocks == 0
        net.nursery.cancel_scope.cancel()
