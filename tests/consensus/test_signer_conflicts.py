"""The signer is the last line of defence against double-signing: at or below what it
signed it signs nothing but that same message again, whatever its caller asks."""

from __future__ import annotations

import pytest

from iomtnode.consensus.signing import ConflictingSignatureError, Signer
from iomtnode.consensus.votes import SigningState, Step
from iomtnode.core.crypto import blake2b256
from iomtnode.core.vote import NIL, VoteType

from ..core.helpers import CHAIN_ID, key
from .harness import MemoryMeta

X, Y = blake2b256(b"X"), blake2b256(b"Y")
PV, PC = VoteType.PREVOTE, VoteType.PRECOMMIT


def restarted(state: SigningState) -> Signer:
    """A signer whose home recorded ``state`` (as after a restart)."""
    return Signer(key("A"), CHAIN_ID, MemoryMeta(state))


def test_the_recorded_vote_is_signed_again_byte_for_byte():
    signer = restarted(SigningState(5, 1, Step.PREVOTE, X))
    assert signer.vote(PV, 5, 1, X) == signer.vote(PV, 5, 1, X)


@pytest.mark.parametrize(("sign", "why"), [
    (lambda s: s.vote(PV, 5, 1, Y), "another block at the recorded step"),
    (lambda s: s.vote(PV, 5, 1, NIL), "nil at the recorded step"),
    (lambda s: s.proposal(5, 1, X), "an earlier step of the round"),
    (lambda s: s.vote(PC, 5, 0, X), "an earlier round"),
    (lambda s: s.vote(PV, 4, 3, X), "an earlier height"),
])
def test_a_conflict_at_or_below_the_record_is_refused(sign, why):
    signer = restarted(SigningState(5, 1, Step.PREVOTE, X))
    with pytest.raises(ConflictingSignatureError):
        sign(signer)


def test_a_conflict_with_what_this_process_signed_is_refused():
    """A step may record two messages at once (a prevote, then the precommit): each is
    signed in turn, but once the precommit is signed the prevote's step is closed."""
    signer = Signer(key("A"), CHAIN_ID, MemoryMeta(SigningState()))
    signer.record(SigningState(7, 0, Step.PRECOMMIT, X))
    signer.vote(PV, 7, 0, X)  # below the record, above the last signed: allowed
    signer.vote(PC, 7, 0, X)
    with pytest.raises(ConflictingSignatureError):
        signer.vote(PV, 7, 0, Y)
    with pytest.raises(ConflictingSignatureError):
        signer.vote(PC, 7, 0, Y)


def test_the_record_keeps_what_was_signed_before_the_last_message_of_the_last_two_rounds():
    """What a restart sends again (the driver: Outbox.send_again): the record written before
    a signature keeps the messages signed at that height before it, of that round and the
    one before, and a new height starts empty."""
    meta = MemoryMeta()
    signer = Signer(key("A"), CHAIN_ID, meta)
    steps = [(0, Step.PROPOSE), (0, Step.PREVOTE), (0, Step.PRECOMMIT),
             (1, Step.PREVOTE), (1, Step.PRECOMMIT), (2, Step.PREVOTE)]
    signed = []
    for round_, step in steps:
        signer.record(SigningState(5, round_, step, X))
        signed.append(signer.proposal(5, round_, X) if step is Step.PROPOSE
                      else signer.vote(PV if step is Step.PREVOTE else PC, 5, round_, X))
    after = Signer(key("A"), CHAIN_ID, meta)  # restarted: round 2's prevote was the last
    assert after.state == SigningState(5, 2, Step.PREVOTE, X)
    assert [m for _, m in after.signed_before] == signed[3:5]  # round 1: the previous one
    assert [r for r, _ in after.signed_before] == [1, 1]
    assert after.vote(PV, 5, 2, X) == signed[5]  # the last one, re-signed byte for byte
    after.record(SigningState(6, 0, Step.PREVOTE, X))
    assert Signer(key("A"), CHAIN_ID, meta).signed_before == []  # a new height


def test_a_record_without_kept_messages_or_with_a_bad_list_keeps_the_state():
    from iomtnode.consensus.signing import META_SIGNING_STATE, signing_record
    from iomtnode.core import codec

    state = SigningState(5, 1, Step.PRECOMMIT, X)
    old = MemoryMeta()
    old.put_meta(META_SIGNING_STATE, signing_record(key("A").public, state))  # 2 fields
    assert Signer(key("A"), CHAIN_ID, old).signed_before == []
    bad = MemoryMeta()
    bad.put_meta(META_SIGNING_STATE, codec.encode(
        [key("A").public, state.to_bytes(), [[1, 7, b"x"]]]))  # kind 7: no such kind
    signer = Signer(key("A"), CHAIN_ID, bad)
    assert signer.state == state and not signer.fresh and signer.signed_before == []
