"""Consensus votes: a validator's signed prevote or precommit.

Votes live in ``core`` because the ledger carries them: a block's commit certificate is
made of precommit signatures (:class:`~iomtnode.core.block.Commit`), and an
:class:`~iomtnode.core.evidence.Evidence` transaction carries two conflicting votes.

Wire form (canonical msgpack)::

    vote = [type, height, round, block_hash, validator, signature]

``type`` is 1 (prevote) or 2 (precommit); a nil vote has ``block_hash`` = :data:`NIL`
(32 zero bytes). What is signed is ``blake2b256(encode([height, round, block_hash]))`` in
:attr:`Domain.PREVOTE` or :attr:`Domain.PRECOMMIT` by type, so a precommit signature is
exactly a commit certificate signature.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import InitVar, dataclass, field

from . import codec
from . import fields as f
from .crypto import HASH_BYTES, Domain, SigningKey, blake2b256, verify

NIL = bytes(HASH_BYTES)  # the block hash of a nil vote ("no block this round")
MAX_VOTE_BYTES = 160  # an encoded vote is ~150 bytes
PRECOMMITS_REMEMBERED = 1024  # precommit signatures that passed, kept (about 300 bytes
# each, 300 KB in all): 64 heights of 16 authorities


def precommit_digest(height: int, round_: int, block_hash: bytes) -> bytes:
    """What an authority signs (in :attr:`Domain.PRECOMMIT`) to finalize a block."""
    return blake2b256(codec.encode([height, round_, block_hash]))


PrecommitCheck = tuple[bytes, bytes, bytes, str]  # authority, digest, signature, chain id
_passed_precommits: OrderedDict[PrecommitCheck, None] = OrderedDict()


def verify_precommit(authority: bytes, chain_id: str, digest: bytes, signature: bytes) -> None:
    """:func:`~.crypto.verify` in :attr:`Domain.PRECOMMIT`, but a signature that passed
    here before (or was signed here) is not checked again.

    A block's certificate repeats the precommits its authorities sent as votes one height
    before, so every follower checked each of them already when the next proposal, which
    carries the certificate, comes. The key holds every input of the check, each apart
    (not concatenated: fields of other lengths cannot pass for them), so a remembered
    pass stands only for that exact check. Any thread may call it: each step on the
    memory is one operation on a C ``OrderedDict`` under the GIL."""
    key = (authority, digest, signature, chain_id)
    if key in _passed_precommits:
        return
    verify(authority, Domain.PRECOMMIT, chain_id, digest, signature)
    _remember_precommit(key)


def _remember_precommit(key: PrecommitCheck) -> None:
    _passed_precommits[key] = None
    if len(_passed_precommits) > PRECOMMITS_REMEMBERED:
        _passed_precommits.popitem(last=False)


class MalformedVoteError(ValueError):
    """Bytes or fields that do not make a well-formed vote, proposal or signing state."""


class VoteType(enum.IntEnum):
    PREVOTE = 1
    PRECOMMIT = 2

    @property
    def domain(self) -> Domain:
        return Domain.PREVOTE if self is VoteType.PREVOTE else Domain.PRECOMMIT



# votes -----------------------------------------------------------------------------------


def vote_digest(height: int, round_: int, block_hash: bytes) -> bytes:
    """The hash a validator signs for a vote (the vote's type picks the domain)."""
    return precommit_digest(height, round_, block_hash)


@dataclass(frozen=True, slots=True)
class Vote:
    """A signed prevote or precommit. Checks its fields on construction (not its signature).

    ``raw`` is the canonical wire form: the bytes :func:`decode_vote` decoded, else
    encoded once on construction."""

    type: VoteType
    height: int
    round: int
    block_hash: bytes
    validator: bytes
    signature: bytes
    raw: bytes = field(init=False, repr=False, compare=False)
    wire: InitVar[bytes] = b""  # the bytes it was decoded from; made from the fields if empty

    def __post_init__(self, wire: bytes) -> None:
        if not isinstance(self.type, VoteType):
            raise f.FieldError(f"vote.type must be a VoteType, got {self.type!r:.40}")
        f.u64("vote.height", self.height)
        f.u64("vote.round", self.round)
        f.digest("vote.block_hash", self.block_hash)
        f.key("vote.validator", self.validator)
        f.signature("vote.signature", self.signature)
        object.__setattr__(self, "raw", wire or codec.encode(
            [int(self.type), self.height, self.round, self.block_hash, self.validator,
             self.signature]))

    @property
    def is_nil(self) -> bool:
        return self.block_hash == NIL

    def digest(self) -> bytes:
        return vote_digest(self.height, self.round, self.block_hash)

    def encode(self) -> bytes:
        """The canonical wire form (:attr:`raw`)."""
        return self.raw

    def verify(self, chain_id: str) -> None:
        """Raise :class:`~iomtnode.core.crypto.BadSignatureError` unless ``validator`` signed it."""
        if self.type is VoteType.PRECOMMIT:
            verify_precommit(self.validator, chain_id, self.digest(), self.signature)
        else:
            verify(self.validator, Domain.PREVOTE, chain_id, self.digest(), self.signature)


def sign_vote(key: SigningKey, chain_id: str, vote_type: VoteType, height: int, round_: int,
              block_hash: bytes) -> Vote:
    """A vote signed by ``key``. The caller must have persisted its signing state first."""
    digest = vote_digest(height, round_, block_hash)
    signature = key.sign(vote_type.domain, chain_id, digest)
    if vote_type is VoteType.PRECOMMIT:  # this node's own: it goes into the next certificate
        _remember_precommit((key.public, digest, signature, chain_id))
    return Vote(vote_type, height, round_, block_hash, key.public, signature)


def decode_vote(data: bytes) -> Vote:
    """Decode a vote from untrusted bytes (not its signature). Raises
    :class:`MalformedVoteError`."""
    try:
        value = f.record("vote", codec.decode(data, max_bytes=MAX_VOTE_BYTES), 6)
        if type(value[0]) is not int or value[0] not in (1, 2):
            raise f.FieldError(f"vote.type must be 1 or 2, got {value[0]!r:.40}")
        return Vote(VoteType(value[0]), *value[1:], wire=bytes(data))
    except (codec.DecodeError, f.FieldError) as exc:
        raise MalformedVoteError(str(exc)) from None
