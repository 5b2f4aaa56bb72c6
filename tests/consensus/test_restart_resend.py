"""A restart at the height last signed at gives the machine again what its record kept
(Signer.signed_before) and its last vote, re-signed, before the height starts: that can
neither change its lock nor make it sign anything its record does not cover, whatever
the run and wherever it crashed (after any record written).

A is the validator; B, C, D send it random (some conflicting) messages; timeouts fire at
random. A small driver does what Driver._step does: record, then sign, then deliver own
messages back."""

from __future__ import annotations

import random
from collections import deque

import pytest

from iomtnode.consensus.machine import (
    BlockReady,
    BroadcastProposal,
    BroadcastVote,
    BuildBlock,
    Event,
    Machine,
    ProposalReceived,
    ScheduleTimeout,
    Start,
    TimeoutFired,
    VoteReceived,
)
from iomtnode.consensus.signing import META_SIGNING_STATE, Signer
from iomtnode.consensus.votes import NO_ROUND, Proposal, Step, sign_proposal
from iomtnode.core.crypto import blake2b256
from iomtnode.core.vote import NIL, VoteType, sign_vote

from ..core.helpers import CHAIN_ID, key, pub
from .harness import MemoryMeta

H = 5
NAMES = "ABCD"
VALIDATORS = tuple(pub(n) for n in NAMES)
BLOCKS = (blake2b256(b"X"), blake2b256(b"Y"))


class Recording(MemoryMeta):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def put_meta(self, name: str, value: bytes) -> None:
        super().put_meta(name, value)
        self.written.append(value)


def drive(machine: Machine, signer: Signer, event: Event, timers: list[TimeoutFired]) -> int:
    """Driver._step: returns how many messages were signed."""
    signed = 0
    queue: deque[Event] = deque([event])
    while queue:
        actions = machine.step(queue.popleft())
        if any(isinstance(a, BroadcastProposal | BroadcastVote) for a in actions):
            signer.record(machine.signing_state)
        for action in actions:
            match action:
                case BroadcastProposal(height, round_, block_hash, pol_round):
                    queue.append(ProposalReceived(
                        signer.proposal(height, round_, block_hash, pol_round), True))
                    signed += 1
                case BroadcastVote(vote_type, height, round_, block_hash):
                    queue.append(VoteReceived(signer.vote(vote_type, height, round_,
                                                          block_hash)))
                    signed += 1
                case BuildBlock(_, round_):
                    queue.append(BlockReady(BLOCKS[round_ % 2]))
                case ScheduleTimeout(kind, height, round_, _):
                    timers.append(TimeoutFired(kind, height, round_))
    return signed


def peer_event(rng: random.Random, machine: Machine, timers: list[TimeoutFired]) -> Event:
    if timers and rng.random() < 0.3:
        return timers.pop(rng.randrange(len(timers)))
    round_ = rng.randrange(max(0, machine.round - 1), machine.round + 2)
    block_hash = rng.choice((*BLOCKS, NIL))
    proposer = machine.proposer(round_)
    if rng.random() < 0.2 and proposer != pub("A") and block_hash != NIL:
        pol = rng.choice((NO_ROUND, *range(round_)))
        name = NAMES[VALIDATORS.index(proposer)]
        return ProposalReceived(sign_proposal(key(name), CHAIN_ID, H, round_, block_hash, pol),
                                True)
    vote_type = rng.choice((VoteType.PREVOTE, VoteType.PRECOMMIT))
    return VoteReceived(sign_vote(key(rng.choice("BCD")), CHAIN_ID, vote_type, H, round_,
                                  block_hash))


@pytest.mark.parametrize("seed", range(12))
def test_what_a_restart_gives_its_machine_again_signs_nothing_the_record_does_not_cover(seed):
    rng = random.Random(seed)
    meta = Recording()
    signer = Signer(key("A"), CHAIN_ID, meta)
    machine = Machine(H, VALIDATORS, pub("A"), None, signer.state)
    timers: list[TimeoutFired] = []
    drive(machine, signer, Start(0.0), timers)
    for _ in range(400):
        drive(machine, signer, peer_event(rng, machine, timers), timers)
    assert len(meta.written) >= 3
    for record in meta.written:  # a crash after this write, before or after its signature
        store = MemoryMeta()
        store.put_meta(META_SIGNING_STATE, record)
        after = Signer(key("A"), CHAIN_ID, store)
        state = after.state
        again = Machine(H, VALIDATORS, pub("A"), None, state)
        lock = (again.locked_round, again.locked_value, again.valid_round, again.valid_value)
        events: list[Event] = [ProposalReceived(m, True) if isinstance(m, Proposal)
                               else VoteReceived(m) for _, m in after.signed_before]
        if state.step is not Step.PROPOSE:
            kind = VoteType.PREVOTE if state.step is Step.PREVOTE else VoteType.PRECOMMIT
            events.append(VoteReceived(after.vote(kind, H, state.round, state.block_hash)))
        for event in events:  # before the height starts: taken in, nothing done
            assert again.step(event) == []
        assert (again.locked_round, again.locked_value, again.valid_round,
                again.valid_value) == lock == (state.locked_round, state.locked_value,
                                               state.valid_round, state.valid_value)
        assert again.signing_state == state
        # then it runs on: each signature is recorded first and none conflicts (the
        # signer raises otherwise), and none is at or below the record
        more: list[TimeoutFired] = []
        drive(again, after, Start(1.0), more)
        for _ in range(60):
            drive(again, after, peer_event(rng, again, more), more)
        assert (after.state.height, after.state.round, after.state.step) >= (
            state.height, state.round, state.step)


class Sent:
    """The network and inbound sides an Outbox uses: what it broadcast."""

    def __init__(self) -> None:
        self.messages: list[object] = []
        self.only: list[frozenset[bytes] | None] = []  # each message's ``only``

    def broadcast_consensus(self, msg: object, exclude: frozenset[bytes] = frozenset(),
                            only: frozenset[bytes] | None = None) -> None:
        self.messages.append(msg)
        self.only.append(only)

    def mark_own(self, signed: bytes) -> None:
        pass

    def holders(self, proposal: Proposal) -> frozenset[bytes]:
        return frozenset()


def test_a_kept_proposal_goes_out_only_with_its_block_and_an_earlier_prevote_with_this_round():
    """Outbox.send_again: a proposal whose block is not held is neither sent nor given to
    the machine (a peer could not check it); a prevote older than the previous round (part
    of a proof of lock) is resent while the restarted round is, not dropped at once."""
    from iomtnode.consensus.messages import ConsensusVote
    from iomtnode.consensus.outbox import Outbox

    sent = Sent()
    outbox = Outbox(sent, sent, 1.0)  # type: ignore[arg-type]
    old = sign_vote(key("A"), CHAIN_ID, VoteType.PREVOTE, H, 0, BLOCKS[0])
    proposal = sign_proposal(key("A"), CHAIN_ID, H, 6, BLOCKS[1], NO_ROUND)
    events = outbox.send_again([(0, old), (6, proposal)], lambda block_hash: None, 7)
    assert events == [VoteReceived(old)]
    assert sent.messages == [ConsensusVote(old.encode())]
    outbox.started(0.0)
    sent.messages.clear()
    outbox.resend(1.0, 7, False)
    outbox.resend(2.0, 8, False)
    assert sent.messages == [ConsensusVote(old.encode())] * 2


def test_a_peer_that_connects_is_sent_the_kept_messages_of_this_round_and_the_last_alone():
    """Outbox.send_to: what a resend would send (the current round and the one before),
    to the connecting peer only, and nothing once the height is decided."""
    from iomtnode.consensus.messages import ConsensusVote
    from iomtnode.consensus.outbox import Outbox

    sent = Sent()
    outbox = Outbox(sent, sent, 2.0)  # type: ignore[arg-type]
    votes = [sign_vote(key("A"), CHAIN_ID, VoteType.PREVOTE, H, r, BLOCKS[0]) for r in (3, 4, 5)]
    for round_, vote in zip((3, 4, 5), votes, strict=True):
        outbox.send(round_, vote.encode(), ConsensusVote(vote.encode()))
    sent.messages.clear()
    sent.only.clear()
    outbox.send_to(pub("B"), 5, False)
    assert sent.messages == [ConsensusVote(v.encode()) for v in votes[1:]]
    assert sent.only == [frozenset((pub("B"),))] * 2
    outbox.send_to(pub("C"), 5, True)  # decided: nothing
    assert len(sent.messages) == 2
