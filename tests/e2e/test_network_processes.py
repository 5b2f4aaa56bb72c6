"""Process-level network behaviour with Localnet (real `iomtnode run` processes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from iomtnode.localnet import Localnet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FAST = {"IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.3", "IOMTNODE_BLOCK_INTERVAL_S": "0.05"}


async def peer_counts(net: Localnet) -> dict[str, int]:
    return {name: len((await net.status(name))["peers"]) for name in net.names}


async def wait_full_mesh(net: Localnet, timeout_s: float) -> None:
    want = len(net.names) - 1
    with trio.fail_after(timeout_s):
        while min((await peer_counts(net)).values()) < want:  # noqa: ASYNC110 - polls processes
            await trio.sleep(0.1)


async def test_a_moved_node_is_redialed_within_five_seconds(tmp_path: Path):
    async with Localnet.start(nodes=4, path=tmp_path / "net", authorities=1, env=FAST) as net:
        await net.wait_for_height(2, timeout_s=30)
        await wait_full_mesh(net, 15)
        for name in ("node4", "node2"):  # a follower, then another one
            moved_at = trio.current_time()
            address = await net.move(name)
            await wait_full_mesh(net, 5)  # every peer reconnected within 5 s
            elapsed = trio.current_time() - moved_at
            assert elapsed < 5, f"{name} re-meshed after {elapsed:.1f} s"
            assert (await net.status(name))["p2p_address"] == address
            book = (await net.admin("node1", "admin_peers"))["address_book"]
            assert book[net.node(name).node_id]["addresses"] == [address]
        top = max((await net.wait_for_height(0)).values())
        await net.wait_for_height(top + 2, timeout_s=20)
        await net.check_invariants(k=3, within_s=10)


async def test_a_node_started_from_an_empty_home_syncs_the_whole_chain(tmp_path: Path):
    async with Localnet.start(nodes=3, path=tmp_path / "net", authorities=1, env=FAST, devices=4,
                              rate=100) as net:
        await net.wait_for_height(30, names=["node1"], timeout_s=60)
        await net.stop("node3")
        data = Path(net.node("node3").home) / "data"
        shutil.rmtree(data)
        data.mkdir()
        await net.restart("node3")
        top = (await net.status("node1"))["height"]
        await net.wait_for_height(top, names=["node3"], timeout_s=60)
        status = await net.status("node3")
        assert status["committed_txs"] > 0
        await net.check_invariants(k=3, within_s=10)


async def test_partitioned_and_killed_nodes_converge_after_heal(tmp_path: Path):
    async with Localnet.start(nodes=4, path=tmp_path / "net", authorities=1, env=FAST, devices=2,
                              rate=50) as net:
        await net.wait_for_height(3, timeout_s=30)
        await net.partition(["node1", "node2"], ["node3", "node4"])
        split = (await net.status("node3"))["height"]
        await net.wait_for_height(split + 10, names=["node1"], timeout_s=30)
        assert (await net.status("node3"))["height"] <= split + 1  # cut off from the authority
        await net.kill("node2")
        await net.heal()
        await net.restart("node2")
        top = (await net.status("node1"))["height"]
        await net.wait_for_height(top, timeout_s=30)
        await net.check_invariants(k=3, within_s=10)
