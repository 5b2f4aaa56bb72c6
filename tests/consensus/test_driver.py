"""The consensus driver with real chains (LevelDB in tmp_path) over an in-test message bus,
under trio's autojump clock (the harness is :mod:`tests.consensus.harness`).

Authorities are A, B, C, D (keys derived from the names). The proposer of height h,
round r is [A, B, C, D][(h + r) % 4]: height 1 round 0 is B, height 3 round 0 is D.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import trio

from iomtnode.chain.feed import each_block
from iomtnode.consensus.messages import ConsensusProposal, ConsensusVote
from iomtnode.consensus.proposals import compact_proposal
from iomtnode.consensus.signing import (
    Signer,
    SigningLock,
    SigningLockedError,
    UnrecordedSignatureError,
)
from iomtnode.consensus.votes import SigningState, Step, sign_proposal
from iomtnode.core.crypto import blake2b256
from iomtnode.core.vote import VoteType, sign_vote
from iomtnode.p2p import score
from iomtnode.store import BlockStore

from ..core.helpers import CHAIN_ID, key, pub
from .harness import (
    CONFIG,
    OUTSIDER,
    ConsensusMessage,
    admit_tx,
    assert_no_double_signing,
    assert_one_chain,
    cluster,
    signed_by,
    wait_heights,
    wait_until,
)

# scenarios -------------------------------------------------------------------------------


async def test_four_authorities_finalize_the_same_blocks(tmp_path, autojump_clock):
    async with cluster(tmp_path) as net:
        for node in net.nodes.values():
            node.mempool.add(admit_tx())  # pending: the first height starts after 0.1 s
        await net.start()
        await wait_heights(net.nodes.values(), 5)
        assert_one_chain(net.nodes.values(), net.genesis)
        a = net["A"]
        assert len(a.chain.block_at(1).txs) == 1 and a.chain.device(key("device1").public)
        assert all(len(a.chain.block_at(h).txs) == 0 for h in range(2, 6))  # heartbeats
        assert a.chain.block_at(1).header.proposer == pub("B")  # (1 + 0) % 4
        assert not any(n.network.penalties for n in net.nodes.values())
        assert all(n.driver and not n.driver.evidence for n in net.nodes.values())
        assert all(n.driver and n.driver.signing_floor == 0 for n in net.nodes.values())


async def test_at_commit_the_driver_names_the_validators_that_hold_the_block(
        tmp_path, autojump_clock):
    """What block relay skips: every validator whose vote for the block was counted (it had
    the proposal), at the moment the block is committed; nothing for other heights."""
    async with cluster(tmp_path) as net:
        a = net["A"]
        seen: list[tuple[int, frozenset[bytes], frozenset[bytes]]] = []

        def at_commit(block, commit, source) -> None:
            assert a.driver is not None
            signers = frozenset(signer for signer, _ in commit.signatures)
            seen.append((block.height, a.driver.holders(block), signers))

        a.feed.listen(each_block(at_commit))
        await net.start()
        await wait_heights(net.nodes.values(), 3)
        assert [h for h, _, _ in seen[:3]] == [1, 2, 3]
        for _, holders, signers in seen:
            assert signers <= holders <= {pub(n) for n in "ABCD"}
        assert a.driver is not None and a.driver.holders(a.chain.block_at(1)) == frozenset()


async def test_one_silent_authority_of_four_costs_rounds_not_progress(
        tmp_path, autojump_clock):
    async with cluster(tmp_path) as net:
        await net.start("ABC")  # D never speaks
        abc = [net[n] for n in "ABC"]
        await wait_heights(abc, 5)
        assert_one_chain(abc, net.genesis)
        commit = net["A"].chain.commit_at(3)
        assert commit is not None and commit.round >= 1  # D was the proposer of round 0
        assert net["A"].chain.block_at(3).header.proposer != pub("D")


async def test_relay_reaches_authorities_that_are_not_connected(
        tmp_path, autojump_clock):
    async with cluster(tmp_path) as net:
        line = ["A", "B", "C", "D"]  # A - B - C - D: only neighbours are connected
        net.bus.links = {frozenset((pub(x), pub(y))) for x, y in itertools.pairwise(line)}
        await net.start()
        await wait_heights(net.nodes.values(), 4)
        assert_one_chain(net.nodes.values(), net.genesis)


async def test_a_restarted_authority_never_double_signs(tmp_path, autojump_clock):
    """A, B and C run (D is silent), so every decision needs A. A crashes right after its
    prevote at height 2 and restarts at once; the proposal is resent only 30 s later, so
    for A's propose timeout (1 s) it has none: a prevote for nil there would conflict."""
    config = replace(CONFIG, resend_interval_s=30.0)
    async with cluster(tmp_path) as net:
        a = net["A"]
        crashed = trio.Event()

        def crash_after_first_prevote_at_2(sender: bytes, msg: ConsensusMessage) -> None:
            _, (height, _, step), _ = signed_by(msg)
            if sender == a.id and (height, step) == (2, Step.PREVOTE) and not crashed.is_set():
                a.stop()  # cancelled mid-height, its prevote persisted and sent
                crashed.set()

        net.bus.on_own = crash_after_first_prevote_at_2
        await net.start("ABC", config)
        await crashed.wait()
        sent_before = len(net.bus.sent)
        await net.start("A", config)  # the same store: the persisted signing state
        abc = [net[n] for n in "ABC"]
        await wait_heights(abc, 5)
        assert_one_chain(abc, net.genesis)
        assert_no_double_signing(net.bus, "A")
        assert any(sender == a.id for sender, _ in net.bus.sent[sent_before:])  # it went on


# peers' messages -------------------------------------------------------------------------


async def test_bad_messages_cost_the_peer_and_are_not_relayed(tmp_path, autojump_clock):
    async with cluster(tmp_path) as net:
        a = net["A"]
        await net.start("A")
        forged = sign_vote(key("X"), CHAIN_ID, VoteType.PREVOTE, 1, 0, blake2b256(b"b"))
        raw = forged.encode()
        raw = raw[: raw.index(forged.validator)] + pub("B") + raw[
            raw.index(forged.validator) + 32:]  # claims to be B's
        outsider = sign_vote(key("X"), CHAIN_ID, VoteType.PREVOTE, 1, 0, blake2b256(b"b"))
        wrong_chain = sign_vote(key("C"), "other-chain", VoteType.PREVOTE, 1, 0,
                                blake2b256(b"b"))
        other_block = net["B"].chain.build([], pub("B"), net.genesis.time_ms + 1).block
        proposal = sign_proposal(key("B"), CHAIN_ID, 1, 0, blake2b256(b"not that block"))
        assert a.driver is not None
        for msg in (ConsensusVote(raw), ConsensusVote(outsider.encode()),
                    ConsensusVote(wrong_chain.encode()), ConsensusVote(b"\x01garbage"),
                    compact_proposal(proposal.encode(), other_block)):
            a.driver.on_message(OUTSIDER, msg)
        await wait_until(lambda: len(a.network.penalties) >= 5)
        reasons = sorted((points, reason.split(":")[0]) for _, points, reason in
                         a.network.penalties)
        assert reasons == [(score.INVALID_MESSAGE, "consensus proposal"),
                           (score.INVALID_MESSAGE, "consensus vote"),
                           (score.INVALID_MESSAGE, "consensus vote"),
                           (score.BAD_SIGNATURE, "consensus vote"),
                           (score.BAD_SIGNATURE, "consensus vote")]
        assert not [m for s, m in net.bus.sent if s == a.id and signed_by(m)[0] != a.id]


async def test_valid_messages_are_relayed_once_and_equivocation_is_reported_once(
        tmp_path, autojump_clock):
    async with cluster(tmp_path) as net:
        a = net["A"]
        await net.start("A")
        assert a.driver is not None
        x = sign_vote(key("B"), CHAIN_ID, VoteType.PREVOTE, 1, 0, blake2b256(b"x"))
        y = sign_vote(key("B"), CHAIN_ID, VoteType.PREVOTE, 1, 0, blake2b256(b"y"))
        z = sign_vote(key("B"), CHAIN_ID, VoteType.PREVOTE, 1, 0, blake2b256(b"z"))
        for peer, msg in ((pub("C"), x), (pub("C"), x), (pub("C"), y), (pub("D"), y),
                          (pub("D"), z)):  # copies from two peers; a third block
            a.driver.on_message(peer, ConsensusVote(msg.encode()))
        await wait_until(lambda: len(a.reported) >= 1)
        relayed = [m for s, m in net.bus.sent if s == a.id and signed_by(m)[0] == pub("B")]
        assert relayed[:2] == [ConsensusVote(x.encode()), ConsensusVote(y.encode())]
        assert [e["authority"] for e in a.driver.evidence] == [pub("B").hex()]
        assert a.driver.evidence[0]["height"] == 1 and a.driver.evidence[0]["type"] == "prevote"
        assert [(e.validator, e.height, e.round) for e in a.reported] == [(pub("B"), 1, 0)]
        assert a.reported[0].hash.hex() == a.driver.evidence[0]["hash"]
        # the same pair again (a new round is a new equivocation, the same one is not)
        p = sign_vote(key("B"), CHAIN_ID, VoteType.PRECOMMIT, 1, 0, blake2b256(b"x"))
        q = sign_vote(key("B"), CHAIN_ID, VoteType.PRECOMMIT, 1, 0, blake2b256(b"y"))
        for msg in (p, q, p, q):
            a.driver.on_message(pub("C"), ConsensusVote(msg.encode()))
        await wait_until(lambda: len(a.reported) >= 2)
        assert [e.type for e in a.reported] == [VoteType.PREVOTE, VoteType.PRECOMMIT]
        assert len(a.driver.evidence) == 2
        assert not a.network.penalties


async def test_a_re_proposal_carries_its_proof_of_lock(tmp_path, autojump_clock):
    """A sees B's block X prevoted by B, C and D in round 0 (a polka: A locks on X), then
    C and D in round 3, where A is the proposer: A proposes X again with pol_round 0 and
    sends the round-0 prevotes with it, so a peer that missed some can accept it."""
    async with cluster(tmp_path, signed_before=True) as net:
        a = net["A"]
        await net.start("A")
        assert a.driver is not None
        block = net["B"].chain.build([], pub("B"), net.genesis.time_ms + 1).block
        proposal = sign_proposal(key("B"), CHAIN_ID, 1, 0, block.hash)
        a.driver.on_message(pub("B"), compact_proposal(proposal.encode(), block))
        pol = [sign_vote(key(n), CHAIN_ID, VoteType.PREVOTE, 1, 0, block.hash) for n in "BCD"]
        for vote in pol:
            a.driver.on_message(pub("B"), ConsensusVote(vote.encode()))
        await wait_until(lambda: a.driver is not None and a.driver.machine is not None
                         and a.driver.machine.locked_value == block.hash)
        sent_before = len(net.bus.sent)
        for n in "CD":  # f + 1 validators in round 3: A skips ahead to it
            vote = sign_vote(key(n), CHAIN_ID, VoteType.PREVOTE, 1, 3, blake2b256(b"nil?"))
            a.driver.on_message(pub(n), ConsensusVote(vote.encode()))
        await wait_until(lambda: any(signed_by(m)[:2] == (a.id, (1, 3, Step.PROPOSE))
                                     for _, m in net.bus.sent))
        later = [m for s, m in net.bus.sent[sent_before:] if s == a.id]
        reproposed = [m for m in later if isinstance(m, ConsensusProposal)]
        assert [signed_by(m)[2] for m in reproposed] == [block.hash]
        forwarded = {m.vote for m in later if isinstance(m, ConsensusVote)}
        assert {v.encode() for v in pol} <= forwarded


async def test_next_height_messages_wait_for_their_height(tmp_path, autojump_clock):
    async with cluster(tmp_path) as net:
        a = net["A"]
        await net.start("A")
        assert a.driver is not None
        early = sign_vote(key("B"), CHAIN_ID, VoteType.PREVOTE, 2, 7, blake2b256(b"x"))
        a.driver.on_message(pub("C"), ConsensusVote(early.encode()))
        fenced = sign_vote(key("B"), CHAIN_ID, VoteType.PREVOTE, 1, 0, blake2b256(b"x"))
        a.driver.on_message(pub("C"), ConsensusVote(fenced.encode()))  # handled after it
        await wait_until(lambda: any(m == ConsensusVote(fenced.encode())
                                     for s, m in net.bus.sent if s == a.id))
        assert ConsensusVote(early.encode()) not in [m for s, m in net.bus.sent if s == a.id]
        # height 1 finalized by B, C and D elsewhere reaches A (as relay or sync would)
        await net.start("BCD")
        await wait_heights([a], 1)
        # A replays what it kept for height 2: verified, then relayed
        await wait_until(lambda: ConsensusVote(early.encode()) in [
            m for s, m in net.bus.sent if s == a.id])


# the signer ------------------------------------------------------------------------------


def test_the_signing_lock_refuses_a_second_holder(tmp_path):
    path = tmp_path / "signing.lock"
    with SigningLock.acquire(path), pytest.raises(SigningLockedError,
                                                  match="locked by another process"):
        SigningLock.acquire(path)
    SigningLock.acquire(path).release()  # free again once released


def test_the_signer_signs_only_what_it_recorded(tmp_path):
    with BlockStore.open(tmp_path / "db") as store:
        signer = Signer(key("A"), CHAIN_ID, store)
        with pytest.raises(UnrecordedSignatureError):
            signer.vote(VoteType.PREVOTE, 1, 0, blake2b256(b"x"))
        signer.record(SigningState(1, 0, Step.PREVOTE, blake2b256(b"x")))
        assert signer.vote(VoteType.PREVOTE, 1, 0, blake2b256(b"x")).validator == pub("A")
        with pytest.raises(UnrecordedSignatureError):
            signer.vote(VoteType.PRECOMMIT, 1, 0, blake2b256(b"x"))
        with pytest.raises(ValueError, match="going back"):
            signer.record(SigningState(1, 0, Step.PROPOSE, blake2b256(b"x")))
        again = Signer(key("A"), CHAIN_ID, store)  # as after a restart
        assert again.state == SigningState(1, 0, Step.PREVOTE, blake2b256(b"x"))
