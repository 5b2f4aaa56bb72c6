"""Messages of the next height are kept only once their signer is checked to be an
authority of that height (its round's proposer, for a proposal) and their signature
holds: a non-authority cannot push the genuine ones out of the bounded buffer.

Authorities are A, B, C, D; X is no authority. Height 2's round-0 proposer is C.
"""

from __future__ import annotations

from pathlib import Path

from iomtnode.chain.chain import Chain
from iomtnode.consensus.messages import ConsensusVote
from iomtnode.consensus.proposals import compact_proposal
from iomtnode.consensus.votes import Step, sign_proposal
from iomtnode.core.block import Block, Commit, sign_commit
from iomtnode.core.vote import VoteType, sign_vote
from iomtnode.p2p import score
from iomtnode.store import BlockStore

from ..core.helpers import CHAIN_ID, key, pub
from .harness import OUTSIDER, Cluster, cluster, signed_by, wait_heights, wait_until

FLOOD = 600  # more than any bound a buffer of the next height had


def elsewhere(net: Cluster, tmp_path: Path) -> tuple[Block, Commit, Block]:
    """Block 1 as B, C and D certified it, on a chain apart (A does not have it yet), and
    block 2 built on it by C."""
    with BlockStore.open(tmp_path / "elsewhere") as store:
        chain = Chain(store, net.genesis)
        built = chain.build([], pub("B"), net.genesis.time_ms + 1000)
        commit1 = sign_commit([key(n) for n in "BCD"], CHAIN_ID, 1, 0, built.block.hash)
        chain.commit(built, commit1)
        block2 = chain.build([], pub("C"), net.genesis.time_ms + 2000).block
    return built.block, commit1, block2


async def test_a_non_authority_cannot_evict_the_next_heights_votes(tmp_path, autojump_clock):
    async with cluster(tmp_path, signed_before=True) as net:
        a = net["A"]
        await net.start("A")
        assert a.driver is not None
        genuine = sign_vote(key("B"), CHAIN_ID, VoteType.PREVOTE, 2, 0, b"\x05" * 32)
        a.driver.on_message(pub("B"), ConsensusVote(genuine.encode()))
        for round_ in range(FLOOD):
            bogus = sign_vote(key("X"), CHAIN_ID, VoteType.PREVOTE, 2, round_, b"\x05" * 32)
            a.driver.on_message(OUTSIDER, ConsensusVote(bogus.encode()))
        bad_sig = sign_vote(key("C"), CHAIN_ID, VoteType.PREVOTE, 2, 0, b"\x05" * 32)
        a.driver.on_message(OUTSIDER, ConsensusVote(
            bad_sig.encode()[:-64] + genuine.signature))
        await wait_until(lambda: len(a.network.penalties) >= FLOOD + 1)
        reasons = {(points, reason) for _, points, reason in a.network.penalties}
        assert (score.INVALID_MESSAGE,
                "consensus message of the next height: not from its authority") in reasons
        assert any(points == score.BAD_SIGNATURE for points, _ in reasons)
        block1, commit1, _ = elsewhere(net, tmp_path)
        await a.writer.apply(block1, commit1, pub("B"), lambda tx: False)
        await wait_heights([a], 1)
        # A, at height 2, checks what it kept: B's vote, relayed
        await wait_until(lambda: ConsensusVote(genuine.encode()) in [
            m for s, m in net.bus.sent if s == a.id])


async def test_a_non_proposer_cannot_evict_the_next_heights_proposal(tmp_path, autojump_clock):
    async with cluster(tmp_path, signed_before=True) as net:
        a = net["A"]
        await net.start("A")
        assert a.driver is not None
        block1, commit1, block2 = elsewhere(net, tmp_path)
        genuine = sign_proposal(key("C"), CHAIN_ID, 2, 0, block2.hash)
        a.driver.on_message(pub("B"), compact_proposal(genuine.encode(), block2))
        for round_ in range(8):
            bogus = sign_proposal(key("X"), CHAIN_ID, 2, round_, block2.hash)
            a.driver.on_message(OUTSIDER, compact_proposal(bogus.encode(), block2))
        await wait_until(lambda: len(a.network.penalties) >= 8)
        await a.writer.apply(block1, commit1, pub("B"), lambda tx: False)
        await wait_heights([a], 1)
        # A, at height 2, checks the proposal it kept and prevotes its block
        await wait_until(lambda: any(
            signed_by(m) == (a.id, (2, 0, Step.PREVOTE), block2.hash)
            for s, m in net.bus.sent if s == a.id))


async def test_copies_of_a_genuine_vote_do_not_evict_that_authoritys_other_votes(
        tmp_path, autojump_clock):
    """Peers already at the next height relay each vote they check: a node still deciding
    gets several copies of one vote, and a Byzantine peer may replay it at will. A copy is
    kept once, so B's precommit stays beside its prevote."""
    async with cluster(tmp_path, signed_before=True) as net:
        a = net["A"]
        await net.start("A")
        assert a.driver is not None
        precommit = sign_vote(key("B"), CHAIN_ID, VoteType.PRECOMMIT, 2, 0, b"\x05" * 32)
        prevote = sign_vote(key("B"), CHAIN_ID, VoteType.PREVOTE, 2, 0, b"\x05" * 32)
        a.driver.on_message(pub("B"), ConsensusVote(precommit.encode()))
        for _ in range(FLOOD):
            a.driver.on_message(OUTSIDER, ConsensusVote(prevote.encode()))
        block1, commit1, _ = elsewhere(net, tmp_path)
        await a.writer.apply(block1, commit1, pub("B"), lambda tx: False)
        await wait_heights([a], 1)

        def relayed() -> list[ConsensusVote]:
            return [m for s, m in net.bus.sent if s == a.id and isinstance(m, ConsensusVote)]

        await wait_until(lambda: ConsensusVote(prevote.encode()) in relayed())
        await wait_until(lambda: ConsensusVote(precommit.encode()) in relayed())
