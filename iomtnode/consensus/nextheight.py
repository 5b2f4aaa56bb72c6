"""The next height's consensus messages, kept until the driver enters that height.

A peer one height ahead sends votes and proposals the driver cannot use yet; they are kept
here only after :class:`~iomtnode.consensus.inbound.Inbound` checked their signer (an
authority of that height; the round's proposer, for a proposal) and their signature, so
nobody else can push the genuine ones out. One slot per authority, round and vote type, and
one per proposal round: a copy (relayed by several peers, or replayed) is kept once and
checked once. The lowest rounds are kept, since they are decided first.
"""

from __future__ import annotations

from .messages import ConsensusProposal, ConsensusVote

NEXT_HEIGHT_VOTES_PER_AUTHORITY = 4  # next-height votes kept per authority (2 rounds' worth)
NEXT_HEIGHT_PROPOSALS = 4  # next-height proposals kept, of the lowest rounds

ConsensusMessage = ConsensusProposal | ConsensusVote
Kept = tuple[bytes, ConsensusMessage]  # (the peer that sent it, the message)


class NextHeight:
    """Bounded: :data:`NEXT_HEIGHT_VOTES_PER_AUTHORITY` votes per authority of the next
    height and :data:`NEXT_HEIGHT_PROPOSALS` proposals."""

    def __init__(self) -> None:
        self._votes: dict[bytes, dict[tuple[int, int], Kept]] = {}
        self._proposals: dict[int, Kept] = {}

    def has_vote(self, validator: bytes, round_: int, vote_type: int) -> bool:
        return (round_, vote_type) in self._votes.get(validator, {})

    def has_proposal(self, round_: int) -> bool:
        return round_ in self._proposals

    def keep_vote(self, validator: bytes, round_: int, vote_type: int, kept: Kept) -> None:
        """Keep a checked vote (the first of its slot)."""
        slots = self._votes.setdefault(validator, {})
        slots.setdefault((round_, vote_type), kept)
        if len(slots) > NEXT_HEIGHT_VOTES_PER_AUTHORITY:
            del slots[max(slots)]

    def keep_proposal(self, round_: int, kept: Kept) -> None:
        """Keep a checked proposal (the first of its round)."""
        self._proposals.setdefault(round_, kept)
        if len(self._proposals) > NEXT_HEIGHT_PROPOSALS:
            del self._proposals[max(self._proposals)]

    def take(self) -> list[Kept]:
        """Everything kept, proposals first, each by round; the buffer is empty after."""
        kept = [self._proposals[r] for r in sorted(self._proposals)]
        kept += [votes[slot] for votes in self._votes.values() for slot in sorted(votes)]
        self._votes.clear()
        self._proposals.clear()
        return kept
