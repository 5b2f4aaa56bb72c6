"""Consensus's message kinds: compact proposals and votes (their signed bytes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..core import fields as f
from ..core.block import MAX_IDS_PER_MESSAGE
from ..core.vote import MAX_VOTE_BYTES
from ..p2p.messages import list_of, message, raw_value
from .votes import MAX_PROPOSAL_BYTES


@message
@dataclass(frozen=True, slots=True)
class ConsensusProposal:
    """A signed consensus proposal (its exact bytes) with its block in compact form: the
    header, the ids of the transactions and the parent's certificate. The receiver fills
    the transactions in from its mempool and fetches the missing ones
    (:class:`~iomtnode.admission.messages.GetBlockTxs`)."""

    KIND: ClassVar[int] = 16
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.max_bytes(MAX_PROPOSAL_BYTES), f.max_bytes(1024),
        list_of(f.digest, MAX_IDS_PER_MESSAGE), raw_value,
    )
    proposal: bytes
    header: bytes
    tx_ids: list[bytes]
    last_commit: bytes


@message
@dataclass(frozen=True, slots=True)
class ConsensusVote:
    """A signed prevote or precommit (its exact bytes)."""

    KIND: ClassVar[int] = 17
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.max_bytes(MAX_VOTE_BYTES),)
    vote: bytes
