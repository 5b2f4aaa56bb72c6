"""Signed consensus messages (votes and proposals) and the record of what a validator signed.

Wire forms (canonical msgpack, see :mod:`iomtnode.core.codec`)::

    vote     = [type, height, round, block_hash, validator, signature]
    proposal = [height, round, block_hash, pol_round or nil, proposer, signature]
    signing state = [VERSION, height, round, step, block_hash,
                     locked_round or nil, locked_value, valid_round or nil, valid_value]

``type`` is 1 (prevote) or 2 (precommit); a nil vote has ``block_hash`` = :data:`NIL`
(32 zero bytes). A proposal names its block by hash; the block bytes travel separately.
"No round" (the paper's -1) is ``-1`` in memory and msgpack nil on the wire, so each
value has one encoding.

What is signed: ``blake2b256(encode([height, round, block_hash]))`` for a vote, in
:attr:`Domain.PREVOTE` or :attr:`Domain.PRECOMMIT` by type, so a precommit signature is
exactly a :class:`~iomtnode.core.block.Commit` certificate signature (see
:func:`commit_certificate`); ``blake2b256(encode([height, round, block_hash, pol]))`` in
:attr:`Domain.PROPOSAL` for a proposal. The domain tag and chain id are prefixed by
:func:`~iomtnode.core.crypto.signing_message`, so no signature verifies as another kind
or on another chain.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import InitVar, dataclass, field
from typing import Any

from ..core import codec
from ..core import fields as f
from ..core.block import Commit
from ..core.crypto import Domain, SigningKey, blake2b256, verify
from ..core.vote import NIL, MalformedVoteError, Vote, VoteType

NO_ROUND = -1  # the paper's -1: no lock, no valid value, no proof-of-lock round
MAX_PROPOSAL_BYTES = 180  # an encoded proposal is ~160 bytes
SIGNING_STATE_VERSION = 1
MAX_SIGNING_STATE_BYTES = 256


class Step(enum.IntEnum):
    """Steps of a round, in the order they happen; also what a validator last signed."""

    NONE = 0  # nothing signed yet (signing state only)
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3


def step_of(vote_type: VoteType) -> Step:
    return Step.PREVOTE if vote_type is VoteType.PREVOTE else Step.PRECOMMIT


def _round(name: str, value: Any) -> int:
    """A round field in memory: -1 or a u64."""
    if value == NO_ROUND and type(value) is int:
        return value
    return f.u64(name, value)


def _wire_round(value: int) -> int | None:
    return None if value == NO_ROUND else value


def _from_wire_round(name: str, value: Any) -> int:
    if value is None:
        return NO_ROUND
    return f.u64(name, value)


def commit_certificate(precommits: Iterable[Vote]) -> Commit:
    """The :class:`~iomtnode.core.block.Commit` made of precommits for one block.

    Raises ValueError unless all are precommits of one non-nil block at one height and
    round, one per validator. (Whether they make a quorum is :meth:`Commit.verify`'s job.)
    """
    votes = sorted(precommits, key=lambda v: v.validator)
    if not votes:
        raise ValueError("a commit certificate needs at least one precommit")
    first = votes[0]
    for v in votes:
        if v.type is not VoteType.PRECOMMIT or v.is_nil:
            raise ValueError("a commit certificate is made of non-nil precommits")
        if (v.height, v.round, v.block_hash) != (first.height, first.round, first.block_hash):
            raise ValueError("precommits of different heights, rounds or blocks")
    if len({v.validator for v in votes}) != len(votes):
        raise ValueError("two precommits from one validator")
    sigs = tuple((v.validator, v.signature) for v in votes)
    return Commit(first.height, first.round, first.block_hash, sigs)


# proposals -------------------------------------------------------------------------------


def proposal_digest(height: int, round_: int, block_hash: bytes, pol_round: int) -> bytes:
    return blake2b256(codec.encode([height, round_, block_hash, _wire_round(pol_round)]))


@dataclass(frozen=True, slots=True)
class Proposal:
    """A signed proposal of ``block_hash`` for ``round``; ``pol_round`` is -1 or the earlier
    round in which a quorum prevoted this block (the proof of lock the paper calls ``vr``).

    ``raw`` is the canonical wire form: the bytes :func:`decode_proposal` decoded, else
    encoded once on construction."""

    height: int
    round: int
    block_hash: bytes
    pol_round: int
    proposer: bytes
    signature: bytes
    raw: bytes = field(init=False, repr=False, compare=False)
    wire: InitVar[bytes] = b""  # the bytes it was decoded from; made from the fields if empty

    def __post_init__(self, wire: bytes) -> None:
        f.u64("proposal.height", self.height)
        f.u64("proposal.round", self.round)
        f.digest("proposal.block_hash", self.block_hash)
        if self.block_hash == NIL:
            raise f.FieldError("proposal.block_hash must name a block, not nil")
        _round("proposal.pol_round", self.pol_round)
        if self.pol_round >= self.round:
            raise f.FieldError(f"proposal.pol_round {self.pol_round} is not before "
                               f"round {self.round}")
        f.key("proposal.proposer", self.proposer)
        f.signature("proposal.signature", self.signature)
        object.__setattr__(self, "raw", wire or codec.encode(
            [self.height, self.round, self.block_hash, _wire_round(self.pol_round),
             self.proposer, self.signature]))

    def digest(self) -> bytes:
        return proposal_digest(self.height, self.round, self.block_hash, self.pol_round)

    def encode(self) -> bytes:
        """The canonical wire form (:attr:`raw`)."""
        return self.raw

    def verify(self, chain_id: str) -> None:
        """Raise :class:`~iomtnode.core.crypto.BadSignatureError` unless ``proposer`` signed it."""
        verify(self.proposer, Domain.PROPOSAL, chain_id, self.digest(), self.signature)


def sign_proposal(key: SigningKey, chain_id: str, height: int, round_: int, block_hash: bytes,
                  pol_round: int = NO_ROUND) -> Proposal:
    """A proposal signed by ``key``. The caller must have persisted its signing state first."""
    digest = proposal_digest(height, round_, block_hash, pol_round)
    signature = key.sign(Domain.PROPOSAL, chain_id, digest)
    return Proposal(height, round_, block_hash, pol_round, key.public, signature)


def decode_proposal(data: bytes) -> Proposal:
    """Decode a proposal from untrusted bytes (not its signature). Raises
    :class:`MalformedVoteError`."""
    try:
        value = f.record("proposal", codec.decode(data, max_bytes=MAX_PROPOSAL_BYTES), 6)
        pol = _from_wire_round("proposal.pol_round", value[3])
        return Proposal(value[0], value[1], value[2], pol, value[4], value[5], wire=bytes(data))
    except (codec.DecodeError, f.FieldError) as exc:
        raise MalformedVoteError(str(exc)) from None


# signing state ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SigningState:
    """What a validator last signed, with its lock: the value to persist before signing.

    ``(height, round, step)`` only ever grows; a validator signs a message at
    ``(h, r, s)`` only if that is strictly greater (see :meth:`permits`), so it signs at
    most one proposal, one prevote and one precommit per height and round, even across
    restarts. The locked and valid rounds and values are the paper's ``lockedRound``,
    ``lockedValue``, ``validRound`` and ``validValue`` at ``height`` (NIL when the round
    is -1); a restarted machine at the same height resumes with them.
    """

    height: int = 0
    round: int = 0
    step: Step = Step.NONE
    block_hash: bytes = NIL  # what was signed at (height, round, step); NIL for nil votes
    locked_round: int = NO_ROUND
    locked_value: bytes = NIL
    valid_round: int = NO_ROUND
    valid_value: bytes = NIL

    def __post_init__(self) -> None:
        f.u64("signing_state.height", self.height)
        f.u64("signing_state.round", self.round)
        if not isinstance(self.step, Step):
            raise f.FieldError(f"signing_state.step must be a Step, got {self.step!r:.40}")
        f.digest("signing_state.block_hash", self.block_hash)
        if self.step is Step.NONE and (self.height, self.round, self.block_hash) != (0, 0, NIL):
            raise f.FieldError("signing_state: nothing signed, yet a height, round or hash set")
        for name, round_, value in (("locked", self.locked_round, self.locked_value),
                                    ("valid", self.valid_round, self.valid_value)):
            _round(f"signing_state.{name}_round", round_)
            f.digest(f"signing_state.{name}_value", value)
            if (round_ == NO_ROUND) != (value == NIL):
                raise f.FieldError(f"signing_state: {name} round and value must be set together")

    def permits(self, height: int, round_: int, step: Step) -> bool:
        """Whether signing at ``(height, round_, step)`` cannot conflict with what was signed."""
        return (height, round_, step) > (self.height, self.round, self.step)

    def to_bytes(self) -> bytes:
        return codec.encode([
            SIGNING_STATE_VERSION, self.height, self.round, int(self.step), self.block_hash,
            _wire_round(self.locked_round), self.locked_value,
            _wire_round(self.valid_round), self.valid_value,
        ])

    @classmethod
    def from_bytes(cls, data: bytes) -> SigningState:
        """Decode a persisted signing state. Raises :class:`MalformedVoteError` if corrupt
        (refuse to sign then: a node that cannot tell what it signed must not sign)."""
        try:
            value = f.record("signing_state",
                             codec.decode(data, max_bytes=MAX_SIGNING_STATE_BYTES), 9)
            if type(value[0]) is not int or value[0] != SIGNING_STATE_VERSION:
                raise f.FieldError(f"signing state version {value[0]!r:.20} is not "
                                   f"{SIGNING_STATE_VERSION}")
            if type(value[3]) is not int or value[3] not in Step._value2member_map_:
                raise f.FieldError(f"signing_state.step {value[3]!r:.20} is not a step")
            return cls(value[1], value[2], Step(value[3]), value[4],
                       _from_wire_round("signing_state.locked_round", value[5]), value[6],
                       _from_wire_round("signing_state.valid_round", value[7]), value[8])
        except (codec.DecodeError, f.FieldError) as exc:
            raise MalformedVoteError(str(exc)) from None
