"""Checks of a peer's proposal before the consensus machine sees it (``Inbound``), seen
through a running driver: what authority A prevotes.

A runs alone at height 1 (its proposer of round 0 is B) with a persisted signing state,
so it signs at once. Its own prevote is the observable: the block's hash if the proposal
reached its machine as valid, nil (after the propose timeout or at once) if not.
"""

from __future__ import annotations

import structlog

from iomtnode.consensus.messages import ConsensusProposal, ConsensusVote
from iomtnode.consensus.proposals import compact_proposal
from iomtnode.consensus.votes import sign_proposal
from iomtnode.core.vote import NIL, VoteType, decode_vote
from iomtnode.p2p import score

from ..core.helpers import CHAIN_ID, key, pub
from .harness import Cluster, TNode, cluster, wait_until


def prevote_of(net: Cluster, node: TNode) -> bytes | None:
    """The block hash ``node`` prevoted at height 1, round 0 (None: not yet)."""
    for sender, msg in net.bus.sent:
        if sender == node.id and isinstance(msg, ConsensusVote):
            v = decode_vote(msg.vote)
            if (v.validator, v.type, v.height, v.round) == (node.id, VoteType.PREVOTE, 1, 0):
                return v.block_hash
    return None


async def test_a_proposal_with_a_bad_signature_costs_the_peer_and_is_never_prevoted(
        tmp_path, autojump_clock):
    """B's proposal of a valid block, signed for another chain: C, who passed it on, is
    charged for a bad signature, and A prevotes nil (its machine never had it)."""
    async with cluster(tmp_path, signed_before=True) as net:
        a = net["A"]
        await net.start("A")
        assert a.driver is not None
        block = net["B"].chain.build([], pub("B"), net.genesis.time_ms + 1).block
        proposal = sign_proposal(key("B"), "other-chain", 1, 0, block.hash)
        a.driver.on_message(pub("C"), compact_proposal(proposal.encode(), block))
        await wait_until(lambda: prevote_of(net, a) is not None)
        assert prevote_of(net, a) == NIL
        assert [(peer, points, reason.split(":")[0]) for peer, points, reason in
                a.network.penalties] == [(pub("C"), score.BAD_SIGNATURE, "consensus proposal")]
        assert not [m for s, m in net.bus.sent if s == a.id and isinstance(m, ConsensusProposal)]


async def test_the_same_proposal_well_signed_is_prevoted(tmp_path, autojump_clock):
    """The control of the test above: only the signature differs."""
    async with cluster(tmp_path, signed_before=True) as net:
        a = net["A"]
        await net.start("A")
        assert a.driver is not None
        block = net["B"].chain.build([], pub("B"), net.genesis.time_ms + 1).block
        proposal = sign_proposal(key("B"), CHAIN_ID, 1, 0, block.hash)
        a.driver.on_message(pub("C"), compact_proposal(proposal.encode(), block))
        await wait_until(lambda: prevote_of(net, a) is not None)
        assert prevote_of(net, a) == block.hash
        assert not a.network.penalties


async def test_a_new_block_naming_another_proposer_gets_a_nil_prevote(
        tmp_path, autojump_clock):
    """B proposes (round 0, no proof of lock) a block that names C, another authority, as
    its proposer: the block passes the chain's checks, but a new block is its proposer's.
    A prevotes nil; B is not charged (a relayer could not have known)."""
    async with cluster(tmp_path, signed_before=True) as net:
        a = net["A"]
        await net.start("A")
        assert a.driver is not None
        block = net["B"].chain.build([], pub("C"), net.genesis.time_ms + 1).block
        a.chain.check_proposal(block)  # valid as a block
        proposal = sign_proposal(key("B"), CHAIN_ID, 1, 0, block.hash)
        with structlog.testing.capture_logs() as logs:
            a.driver.on_message(pub("B"), compact_proposal(proposal.encode(), block))
            await wait_until(lambda: prevote_of(net, a) is not None)
        assert prevote_of(net, a) == NIL
        assert {"event": "proposed_block_invalid", "height": 1, "round": 0,
                "reason": "a new block names another proposer"}.items() <= next(
            e for e in logs if e["event"] == "proposed_block_invalid").items()
        assert not a.network.penalties
