"""Four authorities (real nodes: LevelDB) in one process on an in-memory network, under a
virtual clock: blocks are proposed in turn and final with a quorum (3 of 4) of precommits."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio_parallel

from iomtnode.core.crypto import SigningKey

from ..core import sealkit as kit
from .harness import BASE, FAST, Net, holds_for, start_net

pytestmark = pytest.mark.timeout(90)

CHAIN = "iomt-bft"


BFT = replace(BASE, block_interval_s=0.05)


def authorities(tmp_path: Path, n: int = 4) -> Net:
    return Net(tmp_path, n, chain_id=CHAIN, authorities=n, config=BFT, params=FAST)


def heights(net: Net) -> list[int]:
    return [n.chain.height for n in net.live()]


async def test_four_authorities_finalize_readings_in_turn(tmp_path, nursery, autojump_clock):
    net = await start_net(authorities(tmp_path), nursery)
    device, authority = SigningKey.generate(), net.keys[0]
    async with net.client(1) as client:
        start = (await client.call("status"))["finalized_height"]
        await net.enroll(client, authority, device)
        now = net.now_ms()
        txs = [kit.sealed_reading(device, seq, now, CHAIN).raw.hex() for seq in range(1, 31)]
        result = await client.call("submit_readings", txs=txs)
        assert result["accepted"] == 30
        last = bytes.fromhex(result["results"][-1]["id"])
        await net.wait(lambda: all(n.chain.store.tx_location(last) for n in net.live()),
                       "every reading final everywhere")
        status = await client.call("status")
    assert status["finalized_height"] > start
    await net.wait_height(5)
    assert net.same_chain()
    chain = net.node(0).chain
    proposers = {chain.block_at(h).header.proposer for h in range(1, chain.height + 1)}
    assert len(proposers) >= 3  # in turn, not one sealer
    for h in range(1, chain.height + 1):
        commit = chain.commit_at(h)
        assert commit is not None and len(commit.signatures) >= 3
    for node in net.live():
        assert not node.p2p.host.scoreboard.penalties, node.p2p.host.scoreboard.penalties
        assert node.consensus is not None and not node.consensus.evidence
        # each signature checked once per node, however the transaction reached it (push,
        # proposal, block): the admission, the stream's epoch and the 30 readings
        assert node.mempool is not None and node.mempool.verifier.verified_count == 32


async def test_three_of_four_go_on_two_of_four_stop_then_resume(tmp_path, nursery,
                                                                autojump_clock):
    net = await start_net(authorities(tmp_path), nursery)
    await net.wait_height(2)
    await net.stop(3)  # one of four down: 3 is still a quorum
    h = max(heights(net))
    await net.wait_height(h + 4)
    assert net.same_chain()

    await net.stop(2)  # two of four down: no quorum, no block
    stuck = max(heights(net))
    # a whole capped round's timeouts and more go by: nothing is decided (at most one block
    # was, as 2 went down)
    await holds_for(lambda: max(heights(net)) <= stuck + 1, 2.0, "a block without a quorum")

    for i in (2, 3):
        await net.start(nursery, i, (net.p2p(0),))
    top = max(heights(net))
    await net.wait_height(top + 3)
    assert net.same_chain()
    for node in net.live():
        assert node.consensus is not None and not node.consensus.evidence


async def test_an_equivocation_goes_on_every_ledger(tmp_path, nursery, autojump_clock):
    from iomtnode.consensus.messages import ConsensusVote
    from iomtnode.core.vote import VoteType, sign_vote

    net = await start_net(authorities(tmp_path), nursery)
    await net.wait_height(2)
    culprit, target = net.keys[3], net.node(0)
    height = target.chain.height + 2  # kept if it is the next height, checked if current
    for block_hash in (b"\x01" * 32, b"\x02" * 32):
        vote = sign_vote(culprit, CHAIN, VoteType.PREVOTE, height, 0, block_hash)
        target.consensus.on_message(culprit.public, ConsensusVote(vote.encode()))
    await net.wait(lambda: all(n.chain.evidence() for n in net.live()),
                   "evidence on every node's ledger")
    [record] = target.chain.evidence()  # one record, however many authorities reported
    assert record["authority"] == culprit.public.hex() and record["height"] == height
    assert record["type"] == "prevote" and record["round"] == 0
    assert record["reporter"] in {k.public.hex() for k in net.keys[:3]}
    for node in net.live():
        await net.wait(lambda n=node: n.chain.evidence() == [record], "the same record")
    async with net.client(2) as client:
        status = await client.call("status")
        report = await client.call("get_authorities")
    assert status["authorities_with_evidence"] == [culprit.public.hex()]
    assert [a["evidence"] for a in report["authorities"]] == [False, False, False, True]
    assert net.same_chain()


async def test_a_virtual_clocks_nodes_hand_no_work_to_worker_threads(
        tmp_path, nursery, autojump_clock, monkeypatch):
    """Signature checks (a batch of 30), LevelDB writes and the write-ahead record's fsync
    all run inline: a worker would let the virtual clock jump and fire timeouts."""
    handed: list[object] = []

    async def refused(fn, *args, **kwargs):
        handed.append(fn)
        raise AssertionError(f"{fn} handed to a worker")

    monkeypatch.setattr(trio.to_thread, "run_sync", refused)
    monkeypatch.setattr(trio_parallel, "run_sync", refused)
    net = await start_net(authorities(tmp_path), nursery)
    device, authority = SigningKey.generate(), net.keys[0]
    async with net.client(1) as client:
        await net.enroll(client, authority, device)
        txs = [kit.sealed_reading(device, seq, net.now_ms(), CHAIN).raw.hex()
               for seq in range(1, 31)]
        result = await client.call("submit_readings", txs=txs)
    last = bytes.fromhex(result["results"][-1]["id"])
    await net.wait(lambda: all(n.chain.store.tx_location(last) for n in net.live()),
                   "every reading final everywhere")
    assert handed == []
