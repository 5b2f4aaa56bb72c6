"""Four authorities as real processes: faults that BFT finality must survive."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from iomtnode.core.block import decode_commit
from iomtnode.localnet import Localnet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

FAST = {"IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.3", "IOMTNODE_BLOCK_INTERVAL_S": "0.05"}


async def heights(net: Localnet, names: list[str] | None = None) -> dict[str, int]:
    return {n: (await net.status(n))["finalized_height"] for n in names or net.names}


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

        # an empty home but the key: no blocks and no record of what it signed; it
        # observes first, then signs only above a floor past anything it could have signed
        await net.stop("node2")
        home = Path(net.node("node2").home)
        shutil.rmtree(home / "data")
        (home / "data").mkdir()
        (home / "signing_state").unlink()
        await net.restart("node2")
        key = net.node("node2").node_id
        with trio.fail_after(60):
            while True:
                head = (await net.status("node1"))["finalized_height"]
                if key in await certificate_signers(net, "node1", head):
                    break
                await trio.sleep(0.2)
        await net.check_invariants(k=3, within_s=10)
        for name in net.names:
            assert (await net.status(name))["evidence_seen"] == []


async def certificate_signers(net: Localnet, name: str, height: int) -> set[str]:
    """The authorities (hex) whose precommits certify block ``height``, from ``name``'s API."""
    block = await net.call(name, "get_block", height=height)
    assert block["commit"], f"block {height} has no certificate"
    return {a.hex() for a, _ in decode_commit(bytes.fromhex(block["commit"])).signatures}


@pytest.mark.timeout(120)
async def test_an_authority_paused_for_10_s_catches_up_and_signs_again(tmp_path: Path):
    """SIGSTOP one of four authorities for 10 s while readings flow: the other three
    (a quorum) keep finalizing meanwhile; after SIGCONT it catches up and its precommits
    certify blocks again; no fork, no evidence anywhere."""
    async with Localnet.start(nodes=4, path=tmp_path / "net", env=FAST, devices=2,
                              rate=50) as net:
        await net.wait_for_height(3, timeout_s=40)
        others = ["node1", "node2", "node4"]
        paused = net.node("node3").node_id
        await net.pause("node3")
        paused_at = trio.current_time()
        before = max((await heights(net, others)).values())
        await net.wait_for_height(before + 3, names=others, timeout_s=9)
        await trio.sleep_until(paused_at + 10)  # the pause lasts 10 s, however fast that was
        during = min((await heights(net, others)).values())
        assert during >= before + 3, (before, during)
        await net.resume("node3")

        top = max((await heights(net, others)).values())
        await net.wait_for_height(top, names=["node3"], timeout_s=30)  # caught up
        with trio.fail_after(30):
            signed_at = top + 1
            while True:
                await net.wait_for_height(signed_at, names=["node1"], timeout_s=20)
                if paused in await certificate_signers(net, "node1", signed_at):
                    break
                signed_at += 1
        await net.wait_for_height(signed_at, timeout_s=20)
        await net.check_invariants(k=3, within_s=10)
        for name in net.names:
            status = await net.status(name)
            assert status["evidence_seen"] == [], (name, status["evidence_seen"])
            assert status["authorities_with_evidence"] == [], name
