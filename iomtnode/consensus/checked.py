"""A peer's consensus message that passed :class:`~.inbound.Inbound`'s checks."""

from __future__ import annotations

from dataclasses import dataclass

from ..chain.chain import BuiltBlock
from .machine import ProposalReceived, VoteReceived


@dataclass(frozen=True, slots=True)
class Checked:
    """A peer's message that passed every check, as the event to step the machine with;
    ``block`` is a proposal's block when it was checked here (valid, not held before)."""

    peer_id: bytes
    event: VoteReceived | ProposalReceived
    block: BuiltBlock | None = None

    @property
    def signer(self) -> bytes:
        """The authority that signed the message."""
        if isinstance(self.event, VoteReceived):
            return self.event.vote.validator
        return self.event.proposal.proposer

    @property
    def height(self) -> int:
        if isinstance(self.event, VoteReceived):
            return self.event.vote.height
        return self.event.proposal.height
