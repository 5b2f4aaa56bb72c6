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
