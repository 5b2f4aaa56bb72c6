"""Four authorities as real processes: faults that BFT finality must survive."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from iomtnode.localnet import Localnet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

FAST = {"IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.3", "IOMTNODE_BLOCK_INTERVAL_S": "0.05"}


async def heights(net: Localnet) -> dict[str, int]:
    return {n: (await net.status(n))["finalized_height"] for n in net.names}


async def test_a_2_2_partition_stalls_without_forking_then_resumes(tmp_path: Path):
    async with Localnet.start(nodes=4, path=tmp_path / "net", env=FAST, devices=2,
                              rate=50) as net:
        await net.wait_for_height(3, timeout_s=40)
        await net.partition(["node1", "node2"], ["node3", "node4"])
        await trio.sleep(1.5)  # let in-flight heights settle before sampling
        stalled = await heights(net)
        await trio.sleep(3)  # no quorum on either side: nothing may be finalized
        assert await heights(net) == stalled
        await net.heal()
        await net.wait_for_height(max(stalled.values()) + 3, timeout_s=40)
        await net.check_invariants(k=3, within_s=10)


async def test_paused_killed_and_emptied_authorities_rejoin(tmp_path: Path):
    async with Localnet.start(nodes=4, path=tmp_path / "net", env=FAST, devices=2,
                              rate=50) as net:
        await net.wait_for_height(3, timeout_s=40)
        await net.pause("node3")  # f = 1 of 4: the other three keep finalizing
        top = (await net.status("node1"))["finalized_height"]
        await net.wait_for_height(top + 5, names=["node1", "node2", "node4"], timeout_s=30)
        await net.resume("node3")
        await net.kill("node1")  # a proposer in turn, under load
        top = (await net.status("node2"))["finalized_height"]
        await net.wait_for_height(top + 5, names=["node2", "node3", "node4"], timeout_s=30)
        await net.stop("node1")
        data = Path(net.node("node1").home) / "data"
        shutil.rmtree(data)  # restart on an empty data directory
        data.mkdir()
        await net.restart("node1")
        top = max((await heights(net)).values())
        await net.wait_for_height(top + 3, timeout_s=40)
        await net.check_invariants(k=3, within_s=10)
