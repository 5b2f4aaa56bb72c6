"""The signer is the last line of defence against double-signing: at or below what it
signed it signs nothing but that same message again, whatever its caller asks."""

from __future__ import annotations

import pytest

from iomtnode.consensus.signing import ConflictingSignatureError, Signer
from iomtnode.consensus.votes import Proposal, SigningState, Step
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
    one before, and the prevotes for a block of earlier rounds; a new height starts empty."""
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
    # round 0's prevote for X (a proof of lock's part), then round 1: the previous one
    assert [m for _, m in after.signed_before] == [signed[1], *signed[3:5]]
    assert [r for r, _ in after.signed_before] == [0, 1, 1]
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


class Snapshots(MemoryMeta):
    """Every record written, in order: a crash leaves any one of them (the record file is
    one synced write; a torn one leaves the one before)."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[tuple[bytes, int]] = []  # (record, messages signed before it)
        self.signed: list[bytes] = []

    def put_meta(self, name: str, value: bytes) -> None:
        super().put_meta(name, value)
        self.written.append((value, len(self.signed)))


def test_a_restart_from_any_record_written_sends_only_what_was_signed_before_it():
    """Crash after any record write (before or after the signature it covers): what the
    record keeps is, byte for byte, messages signed before that write, at the recorded
    height and below the recorded step, so sending them again signs nothing; and the
    restarted signer still refuses every other message at or below the record."""
    from iomtnode.consensus.signing import META_SIGNING_STATE

    meta = Snapshots()
    signer = Signer(key("A"), CHAIN_ID, meta)
    # (state recorded, messages signed under it): one record may cover two signatures
    script = [((5, 0, Step.PROPOSE, X), [("P", 0, X)]),
              ((5, 0, Step.PREVOTE, X), [(PV, 0, X)]),
              ((5, 0, Step.PRECOMMIT, NIL), [(PC, 0, NIL)]),
              ((5, 1, Step.PRECOMMIT, X), [(PV, 1, X), (PC, 1, X)]),
              ((5, 2, Step.PREVOTE, NIL), [(PV, 2, NIL)]),
              ((5, 3, Step.PROPOSE, Y), [("P", 3, Y)]),
              ((5, 3, Step.PREVOTE, Y), [(PV, 3, Y)]),
              ((6, 0, Step.PREVOTE, NIL), [(PV, 0, NIL)])]
    for (height, round_, step, block), messages in script:
        signer.record(SigningState(height, round_, step, block))
        for kind, r, block_hash in messages:
            signed = (signer.proposal(height, r, block_hash) if kind == "P"
                      else signer.vote(kind, height, r, block_hash))
            meta.signed.append(signed.encode())
    assert len(meta.written) == len(script)
    for record, signed_then in meta.written:
        after = Signer(key("A"), CHAIN_ID, _holding(META_SIGNING_STATE, record))
        state = after.state
        at = (state.height, state.round, state.step)
        for round_, message in after.signed_before:
            assert message.encode() in meta.signed[:signed_then]
            step = Step.PROPOSE if isinstance(message, Proposal) else (
                Step.PREVOTE if message.type is PV else Step.PRECOMMIT)
            assert message.height == state.height
            assert round_ in (state.round - 1, state.round) or (
                step is Step.PREVOTE and message.block_hash != NIL)
            assert (message.height, message.round, step) < at
        for round_ in range(state.round + 1):  # nothing else at or below the record
            for step in (Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT):
                for block_hash in (X, Y, NIL):
                    if (state.height, round_, step) > at or (
                            (state.height, round_, step) == at and block_hash == state.block_hash):
                        continue
                    with pytest.raises(ConflictingSignatureError):
                        if step is Step.PROPOSE:
                            after.proposal(state.height, round_, block_hash)
                        else:
                            after.vote(PV if step is Step.PREVOTE else PC, state.height, round_,
                                       block_hash)


def _holding(name: str, value: bytes) -> MemoryMeta:
    meta = MemoryMeta()
    meta.put_meta(name, value)
    return meta


def test_of_earlier_rounds_the_record_keeps_the_newest_prevotes_for_a_block():
    """Before the last two rounds, only prevotes for a block can be part of a proof of lock
    (2f+1 prevotes for one block in one round): nil prevotes, precommits and proposals go,
    and of the prevotes for a block the newest KEPT_EARLIER stay."""
    from iomtnode.consensus.signing import KEPT_EARLIER

    meta = MemoryMeta()
    signer = Signer(key("A"), CHAIN_ID, meta)
    for_block = []
    last = 2 * KEPT_EARLIER
    for round_ in range(last):
        block_hash = NIL if round_ % 3 == 0 else X
        signer.record(SigningState(5, round_, Step.PROPOSE, Y))
        signer.proposal(5, round_, Y)
        signer.record(SigningState(5, round_, Step.PREVOTE, block_hash))
        prevote = signer.vote(PV, 5, round_, block_hash)
        if block_hash != NIL and round_ < last - 1:
            for_block.append(prevote)
        signer.record(SigningState(5, round_, Step.PRECOMMIT, NIL))
        signer.vote(PC, 5, round_, NIL)
    signer.record(SigningState(5, last, Step.PREVOTE, NIL))
    kept = Signer(key("A"), CHAIN_ID, meta).signed_before
    earlier = [m for r, m in kept if r < last - 1]
    assert earlier == for_block[-KEPT_EARLIER:] and len(for_block) > KEPT_EARLIER
    assert {r for r, _ in kept if r >= last - 1} == {last - 1}  # round last-1's three
    assert len(kept) == KEPT_EARLIER + 3


def test_the_fullest_record_is_read_back_and_fits_the_record_files_smallest_slot():
    """KEPT_SIGNED + KEPT_EARLIER messages of the largest kind beside the largest state:
    within what a record is read with (MAX_RECORD_BYTES: else the node would refuse to
    start), and, of the sizes signed messages have, within one slot of the smallest record
    file (each record stays one synced write)."""
    from iomtnode.consensus import recordfile
    from iomtnode.consensus.signing import (
        KEPT_EARLIER,
        KEPT_SIGNED,
        MAX_KEPT_BYTES,
        MAX_RECORD_BYTES,
        PROPOSAL,
        read_kept,
    )
    from iomtnode.consensus.votes import MAX_PROPOSAL_BYTES, MAX_SIGNING_STATE_BYTES
    from iomtnode.core import codec

    public = key("A").public
    most = KEPT_SIGNED + KEPT_EARLIER
    largest = codec.encode([public, b"\xff" * MAX_SIGNING_STATE_BYTES,
                            [[2**64 - 1, PROPOSAL, b"\xff" * MAX_KEPT_BYTES]] * most])
    assert len(largest) <= MAX_RECORD_BYTES
    assert len(read_kept(largest, public)) == most
    signed = codec.encode([public, b"\xff" * MAX_SIGNING_STATE_BYTES,
                           [[2**64 - 1, PROPOSAL, b"\xff" * MAX_PROPOSAL_BYTES]] * most])
    assert recordfile.HEADER.size + len(signed) <= recordfile.MIN_CAPACITY_BYTES
