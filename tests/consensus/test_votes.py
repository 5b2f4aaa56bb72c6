"""Votes, proposals, signing state, evidence and tallies."""

from __future__ import annotations

from dataclasses import replace

import pytest

from iomtnode.consensus.votes import (
    NO_ROUND,
    Proposal,
    SigningState,
    Step,
    commit_certificate,
    decode_proposal,
    sign_proposal,
)
from iomtnode.consensus.voteset import HeightVotes, VoteSet, skip_threshold
from iomtnode.core import codec
from iomtnode.core.block import Commit, InvalidCommitError, precommit_digest
from iomtnode.core.crypto import BadSignatureError, Domain, blake2b256, verify
from iomtnode.core.evidence import (
    Evidence,
    InvalidEvidenceError,
    MalformedEvidenceError,
    decode_evidence,
    make_evidence,
)
from iomtnode.core.vote import NIL, MalformedVoteError, Vote, VoteType, decode_vote, sign_vote

from ..core.helpers import CHAIN_ID, key, longer_form, pub

PREVOTE, PRECOMMIT = VoteType.PREVOTE, VoteType.PRECOMMIT
X = blake2b256(b"block X")
Y = blake2b256(b"block Y")
AUTHS = tuple(pub(n) for n in "ABCD")


def vote(name: str = "A", vote_type: VoteType = PREVOTE, height: int = 5, round_: int = 0,
         block: bytes = X) -> Vote:
    return sign_vote(key(name), CHAIN_ID, vote_type, height, round_, block)


# votes and proposals ------------------------------------------------------------------------


@pytest.mark.parametrize("vote_type", list(VoteType))
@pytest.mark.parametrize("block", [X, NIL])
@pytest.mark.parametrize("round_", [0, 7, 2**64 - 1])
def test_vote_round_trip(vote_type: VoteType, block: bytes, round_: int) -> None:
    v = vote(vote_type=vote_type, round_=round_, block=block)
    assert decode_vote(v.encode()) == v
    assert decode_vote(v.encode()).encode() == v.encode()
    assert v.is_nil == (block == NIL)
    v.verify(CHAIN_ID)


@pytest.mark.parametrize("pol_round", [NO_ROUND, 0, 2])
def test_proposal_round_trip(pol_round: int) -> None:
    p = sign_proposal(key("B"), CHAIN_ID, 5, 3, X, pol_round)
    assert decode_proposal(p.encode()) == p
    p.verify(CHAIN_ID)
    wire_pol = codec.decode(p.encode())[3]
    assert wire_pol == (None if pol_round == NO_ROUND else pol_round)  # -1 travels as nil


@pytest.mark.parametrize("change", [
    dict(height=6), dict(round=1), dict(block_hash=Y), dict(block_hash=NIL),
    dict(validator=pub("B")), dict(type=PRECOMMIT),
])
def test_tampered_vote_does_not_verify(change: dict[str, object]) -> None:
    tampered = replace(vote(), **change)
    with pytest.raises(BadSignatureError):
        tampered.verify(CHAIN_ID)


@pytest.mark.parametrize("change", [
    dict(height=6), dict(round=4), dict(block_hash=Y), dict(pol_round=1),
    dict(proposer=pub("C")),
])
def test_tampered_proposal_does_not_verify(change: dict[str, object]) -> None:
    tampered = replace(sign_proposal(key("B"), CHAIN_ID, 5, 3, X, 0), **change)
    with pytest.raises(BadSignatureError):
        tampered.verify(CHAIN_ID)


def test_signatures_are_bound_to_the_chain() -> None:
    with pytest.raises(BadSignatureError):
        vote().verify("other-chain")
    with pytest.raises(BadSignatureError):
        sign_proposal(key("B"), CHAIN_ID, 5, 0, X).verify("other-chain")


def test_domain_separation() -> None:
    prevote = vote(vote_type=PREVOTE)
    # the same (height, round, block) signed as a prevote is not a precommit...
    with pytest.raises(BadSignatureError):
        replace(prevote, type=PRECOMMIT).verify(CHAIN_ID)
    with pytest.raises(BadSignatureError):
        replace(vote(vote_type=PRECOMMIT), type=PREVOTE).verify(CHAIN_ID)
    # ...nor a proposal of that block...
    as_proposal = Proposal(5, 0, X, NO_ROUND, pub("A"), prevote.signature)
    with pytest.raises(BadSignatureError):
        as_proposal.verify(CHAIN_ID)
    with pytest.raises(BadSignatureError):
        verify(pub("A"), Domain.PROPOSAL, CHAIN_ID, prevote.digest(), prevote.signature)
    # ...nor a commit certificate signature
    fake = Commit(5, 0, X, tuple(sorted((pub(n), vote(n).signature) for n in "ABC")))
    with pytest.raises(InvalidCommitError):
        fake.verify(AUTHS, CHAIN_ID)


def test_precommits_make_a_commit_certificate() -> None:
    precommits = [vote(n, PRECOMMIT) for n in "CAB"]
    commit = commit_certificate(precommits)
    commit.verify(AUTHS, CHAIN_ID)
    assert [k for k, _ in commit.signatures] == sorted(pub(n) for n in "ABC")
    assert precommits[0].digest() == precommit_digest(5, 0, X)


@pytest.mark.parametrize("votes", [
    [],
    [vote("A", PREVOTE), vote("B"), vote("C")],  # prevotes are not a certificate
    [vote(n, PRECOMMIT, block=NIL) for n in "ABC"],  # nor are nil precommits
    [vote("A", PRECOMMIT), vote("B", PRECOMMIT, round_=1)],
    [vote("A", PRECOMMIT), vote("B", PRECOMMIT, block=Y)],
    [vote("A", PRECOMMIT), vote("A", PRECOMMIT)],
])
def test_commit_certificate_refuses_mixed_votes(votes: list[Vote]) -> None:
    with pytest.raises(ValueError):
        commit_certificate(votes)


GOOD_VOTE = vote().encode()
GOOD_FIELDS = codec.decode(GOOD_VOTE)


def vote_with(index: int, value: object) -> bytes:
    fields = list(GOOD_FIELDS)
    fields[index] = value
    return codec.encode(fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [
    b"",
    b"\xc1",
    codec.encode(GOOD_FIELDS[:5]),  # too few fields
    codec.encode([*GOOD_FIELDS, 0]),  # too many
    vote_with(0, 3),  # no such vote type
    vote_with(0, True),  # a bool is not a type
    vote_with(1, -1),  # negative height
    vote_with(2, "0"),  # round as text
    vote_with(3, X[:31]),  # short hash
    vote_with(4, pub("A") + b"\x00"),  # long key
    vote_with(5, b"\x00" * 63),  # short signature
    GOOD_VOTE + b"\x00",  # trailing bytes
    b"\xdc\x00\x06" + GOOD_VOTE[1:],  # array16 header for 6 items: not canonical
], ids=range(13))
def test_malformed_votes_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedVoteError):
        decode_vote(data)


def proposal_fields(round_: int, block: bytes, pol: object) -> bytes:
    p = sign_proposal(key("B"), CHAIN_ID, 5, 3, X, 1)
    return codec.encode([5, round_, block, pol, p.proposer, p.signature])  # type: ignore[list-item]


@pytest.mark.parametrize("data", [
    proposal_fields(3, NIL, None),  # a proposal names a block
    proposal_fields(3, X, 3),  # pol_round must be before the round
    proposal_fields(0, X, 0),
    proposal_fields(3, X, -1),  # -1 travels as nil, not as an integer
    proposal_fields(3, X, False),
    longer_form(sign_proposal(key("B"), CHAIN_ID, 5, 3, X, 1).encode()),  # not canonical
], ids=["nil-block", "pol-equal", "pol-round0", "pol-minus-one", "pol-bool", "array16"])
def test_malformed_proposals_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedVoteError):
        decode_proposal(data)


def test_votes_and_proposals_are_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # made: encoded on construction (what is sent); decoded: the received bytes are kept
    v, p = vote(), sign_proposal(key("B"), CHAIN_ID, 5, 3, X, 1)
    assert v.raw == codec.encode([1, 5, 0, X, pub("A"), v.signature])
    assert p.raw == codec.encode([5, 3, X, 1, pub("B"), p.signature])
    v_decoded, p_decoded = decode_vote(v.raw), decode_proposal(p.raw)

    def refuse(value: object) -> bytes:
        raise AssertionError(f"encoded again: {value!r:.60}")

    monkeypatch.setattr(codec, "encode", refuse)
    assert v.encode() == v_decoded.encode() == v.raw
    assert p.encode() == p_decoded.encode() == p.raw


def test_changed_votes_and_proposals_are_encoded_anew() -> None:
    v, p = vote(), sign_proposal(key("B"), CHAIN_ID, 5, 3, X, 1)
    assert decode_vote(replace(v, round=4).encode()).round == 4
    assert decode_proposal(replace(p, pol_round=NO_ROUND).encode()).pol_round == NO_ROUND


# signing state --------------------------------------------------------------------------


def test_signing_state_round_trip_and_order() -> None:
    state = SigningState(5, 2, Step.PRECOMMIT, X, 2, X, 2, X)
    assert SigningState.from_bytes(state.to_bytes()) == state
    assert SigningState.from_bytes(SigningState().to_bytes()) == SigningState()
    assert not state.permits(5, 2, Step.PRECOMMIT)  # never the same step twice
    assert not state.permits(5, 2, Step.PREVOTE)
    assert not state.permits(4, 9, Step.PROPOSE)
    assert state.permits(5, 3, Step.PROPOSE)
    assert state.permits(6, 0, Step.PROPOSE)


@pytest.mark.parametrize("fields", [
    [1, 5, 2, 3, X, 2, NIL, None, NIL],  # locked round without a value
    [1, 5, 2, 3, X, None, X, None, NIL],  # locked value without a round
    [1, 5, 2, 4, X, None, NIL, None, NIL],  # no step 4
    [1, 5, 2, 0, X, None, NIL, None, NIL],  # "nothing signed" with a hash
    [2, 5, 2, 3, X, None, NIL, None, NIL],  # unknown version
    [1, 5, 2, 3, X, None, NIL, None],  # a field short
])
def test_corrupt_signing_state_is_refused(fields: list[object]) -> None:
    with pytest.raises(MalformedVoteError):
        SigningState.from_bytes(codec.encode(fields))  # type: ignore[arg-type]


# evidence ------------------------------------------------------------------------------


@pytest.mark.parametrize("other", [
    vote(block=Y),  # two blocks
    vote(block=NIL),  # a block and nil
])
def test_evidence_of_conflicting_votes(other: Vote) -> None:
    ev = make_evidence(vote(), other)
    assert ev == make_evidence(other, vote())  # one equivocation, one evidence
    assert decode_evidence(ev.encode()) == ev
    ev.verify(CHAIN_ID)
    ev.verify(CHAIN_ID, AUTHS)
    assert (ev.validator, ev.height, ev.round, ev.type) == (pub("A"), 5, 0, PREVOTE)


@pytest.mark.parametrize("a, b", [
    (vote(), vote()),  # identical votes
    (vote(), vote(round_=1, block=Y)),  # different rounds
    (vote(), vote(height=6, block=Y)),  # different heights
    (vote(), vote(vote_type=PRECOMMIT, block=Y)),  # a prevote and a precommit
    (vote("A"), vote("B", block=Y)),  # different validators
], ids=["identical", "rounds", "heights", "types", "validators"])
def test_evidence_refuses_votes_that_do_not_conflict(a: Vote, b: Vote) -> None:
    with pytest.raises(InvalidEvidenceError):
        make_evidence(a, b)
    data = codec.encode(sorted([a.encode(), b.encode()]))
    with pytest.raises(MalformedEvidenceError):
        decode_evidence(data)


def test_evidence_checks_signatures_and_membership() -> None:
    forged = replace(vote(block=Y), signature=vote(block=NIL).signature)
    with pytest.raises(InvalidEvidenceError):
        make_evidence(vote(), forged).verify(CHAIN_ID)
    with pytest.raises(InvalidEvidenceError):
        make_evidence(vote("E"), vote("E", block=Y)).verify(CHAIN_ID, AUTHS)


def test_evidence_encoding_is_canonical() -> None:
    ev = make_evidence(vote(), vote(block=Y))
    swapped = codec.encode([ev.second.encode(), ev.first.encode()])
    with pytest.raises(MalformedEvidenceError):
        decode_evidence(swapped)
    with pytest.raises(InvalidEvidenceError):
        Evidence(ev.second, ev.first)


# tallies -------------------------------------------------------------------------------


def test_thresholds() -> None:
    assert [skip_threshold(n) for n in (1, 3, 4, 6, 7, 10)] == [1, 1, 2, 2, 3, 4]


def test_voteset_counts_each_validator_once() -> None:
    s = VoteSet(5, 0, PREVOTE)
    assert s.add(vote("A")).counted
    assert not s.add(vote("A")).counted  # a duplicate
    first = s.add(vote("B", block=Y))
    conflict = s.add(vote("B", block=NIL))  # B equivocates: reported, counted for nil
    third = s.add(vote("B"))  # and again: dropped, not reported again
    assert first.evidence is None and conflict.evidence is not None and third.evidence is None
    assert (s.count_any(), s.count_for(X), s.count_for(Y), s.count_for(NIL)) == (2, 1, 1, 1)
    assert len(s) == 3
    assert s.votes_for(NIL) == (vote("B", block=NIL),)


def test_height_votes_keep_few_rounds_ahead_per_validator() -> None:
    hv = HeightVotes(5, AUTHS, max_future_rounds=2)
    for r in (3, 4):
        assert hv.add(vote("B", round_=r), current_round=0).counted
    assert not hv.add(vote("B", round_=2), current_round=0).counted  # older than those kept
    assert hv.add(vote("B", round_=9), current_round=0).counted  # newest wins: round 3 goes
    assert hv.rounds() == [4, 9]
    assert hv.add(vote("B", round_=0), current_round=0).counted  # current rounds: no limit
    assert hv.add(vote("C", round_=3), current_round=0).counted  # the limit is per validator
    assert hv.senders(9) == 1 and hv.senders(3) == 1
    assert not hv.add(vote("E"), current_round=0).counted  # not a validator
    assert not hv.add(vote("A", height=6), current_round=0).counted  # another height
