"""Evidence of equivocation: two conflicting signed votes from one validator.

Two votes conflict when they have the same validator, height, round and type and name
different blocks (nil counts as a block here: a nil and a non-nil prevote in one round
conflict). An honest validator never signs both, so the pair proves misbehaviour to
anyone who knows the chain id: :meth:`Evidence.verify` checks both signatures.

Wire form (canonical msgpack)::

    evidence = [vote_a_bytes, vote_b_bytes]      vote_a_bytes < vote_b_bytes

The two votes are kept in byte order, so one equivocation has one encoding and one hash.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import codec
from . import fields as f
from .crypto import BadSignatureError, blake2b256
from .vote import MAX_VOTE_BYTES, MalformedVoteError, Vote, VoteType, decode_vote

MAX_EVIDENCE_BYTES = 2 * (MAX_VOTE_BYTES + 2) + 1  # two bin-wrapped votes in an array


class InvalidEvidenceError(ValueError):
    """A pair of votes that does not prove equivocation (says which check failed)."""


class MalformedEvidenceError(ValueError):
    """Bytes that do not decode to a well-formed evidence record."""


def conflict_reason(a: Vote, b: Vote) -> str | None:
    """Why ``a`` and ``b`` are not an equivocation, or None if they are one."""
    if a.validator != b.validator:
        return "the votes are from different validators"
    if a.type is not b.type:
        return "the votes are of different types"
    if a.height != b.height:
        return "the votes are at different heights"
    if a.round != b.round:
        return "the votes are in different rounds"
    if a.block_hash == b.block_hash:
        return "the votes name the same block"
    return None


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two conflicting votes, ``first`` encoding before ``second``. Use :func:`make_evidence`
    to build one from two votes in any order. Checks the conflict, not the signatures."""

    first: Vote
    second: Vote

    def __post_init__(self) -> None:
        reason = conflict_reason(self.first, self.second)
        if reason is not None:
            raise InvalidEvidenceError(reason)
        if self.first.encode() >= self.second.encode():
            raise InvalidEvidenceError("evidence votes must be in byte order")

    @property
    def validator(self) -> bytes:
        return self.first.validator

    @property
    def height(self) -> int:
        return self.first.height

    @property
    def round(self) -> int:
        return self.first.round

    @property
    def type(self) -> VoteType:
        return self.first.type

    def encode(self) -> bytes:
        return codec.encode([self.first.encode(), self.second.encode()])

    @property
    def hash(self) -> bytes:
        return blake2b256(self.encode())

    def verify(self, chain_id: str, validators: tuple[bytes, ...] | None = None) -> None:
        """Raise :class:`InvalidEvidenceError` unless both votes are validly signed (and, when
        ``validators`` is given, the signer is one of them)."""
        if validators is not None and self.validator not in validators:
            raise InvalidEvidenceError(f"{self.validator.hex()[:16]} is not a validator")
        for vote in (self.first, self.second):
            try:
                vote.verify(chain_id)
            except BadSignatureError as exc:
                raise InvalidEvidenceError(f"evidence vote: {exc}") from None


def make_evidence(a: Vote, b: Vote) -> Evidence:
    """Evidence from two conflicting votes in either order; raises
    :class:`InvalidEvidenceError` if they do not conflict."""
    first, second = sorted((a, b), key=Vote.encode)
    return Evidence(first, second)


def decode_evidence(data: bytes) -> Evidence:
    """Decode evidence from untrusted bytes (not its signatures). Raises
    :class:`MalformedEvidenceError` for bad bytes and for votes that do not conflict."""
    try:
        value = f.record("evidence", codec.decode(data, max_bytes=MAX_EVIDENCE_BYTES), 2)
        raw = [f.max_bytes(MAX_VOTE_BYTES)(f"evidence.vote{i}", v) for i, v in enumerate(value)]
        return Evidence(decode_vote(raw[0]), decode_vote(raw[1]))
    except (codec.DecodeError, f.FieldError, MalformedVoteError, InvalidEvidenceError) as exc:
        raise MalformedEvidenceError(f"evidence: {exc}") from None
