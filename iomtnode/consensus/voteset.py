"""Vote tallies of one height: per round and type, with equivocation detection.

Counting follows the paper, which counts *messages from distinct validators*:

- ``count_for(h)`` is the number of validators with a vote for block ``h`` (NIL for nil);
- ``count_any()`` is the number of validators with any vote in the set.

A validator that equivocates is caught at its first conflicting vote, which yields
:class:`~iomtnode.core.evidence.Evidence` once. Both of its votes are kept and each
counts for its own block (so a quorum that exists in the network is seen here too; two
quorums for different blocks still need more than f faulty validators), but it counts
once in ``count_any``. Its further conflicting votes are dropped, so a set holds at most
two votes per validator. Duplicates are not counted again.

Memory is bounded: :class:`HeightVotes` keeps every vote of the current and past rounds
(rounds are entered one at a time), and of rounds ahead of the current one at most
:data:`MAX_FUTURE_ROUNDS_PER_VALIDATOR` rounds per validator, its highest ones.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..core.block import quorum
from ..core.evidence import Evidence, make_evidence
from ..core.vote import Vote, VoteType

# An honest validator is in one round at a time and moves up, so its newest rounds are
# the ones that matter to a node behind it (the f+1 skip); a faulty one cannot use more.
MAX_FUTURE_ROUNDS_PER_VALIDATOR = 3

__all__ = ["MAX_FUTURE_ROUNDS_PER_VALIDATOR", "AddResult", "HeightVotes", "VoteSet",
           "quorum", "skip_threshold"]


def skip_threshold(n_validators: int) -> int:
    """f + 1 with f = floor((N-1)/3): enough validators that at least one is honest."""
    return (n_validators - 1) // 3 + 1


@dataclass(frozen=True, slots=True)
class AddResult:
    """What adding a vote did: ``counted`` if it changed a tally; ``evidence`` the first time
    its validator was seen to equivocate in this set."""

    counted: bool
    evidence: Evidence | None = None


class VoteSet:
    """Votes of one type in one round of one height; at most two per validator."""

    def __init__(self, height: int, round_: int, vote_type: VoteType) -> None:
        self.height = height
        self.round = round_
        self.type = vote_type
        self._by_validator: dict[bytes, list[Vote]] = {}
        self._counts: Counter[bytes] = Counter()

    def add(self, vote: Vote) -> AddResult:
        """Add ``vote`` (from a validator, for this set's height, round and type)."""
        if (vote.height, vote.round, vote.type) != (self.height, self.round, self.type):
            raise ValueError("a vote for another height, round or type than this set's")
        held = self._by_validator.setdefault(vote.validator, [])
        if any(v.block_hash == vote.block_hash for v in held):
            return AddResult(False)
        if len(held) >= 2:
            return AddResult(False)  # a third block from an equivocator: already reported
        held.append(vote)
        self._counts[vote.block_hash] += 1
        if len(held) == 2:
            return AddResult(True, make_evidence(held[0], vote))
        return AddResult(True)

    def remove(self, validator: bytes) -> None:
        """Forget ``validator``'s votes (to bound memory for rounds ahead)."""
        for vote in self._by_validator.pop(validator, []):
            self._counts[vote.block_hash] -= 1
            if not self._counts[vote.block_hash]:
                del self._counts[vote.block_hash]

    def count_for(self, block_hash: bytes) -> int:
        return self._counts.get(block_hash, 0)

    def count_any(self) -> int:
        return len(self._by_validator)

    def blocks_with(self, threshold: int) -> list[bytes]:
        """The block hashes (NIL included) with at least ``threshold`` votes, sorted."""
        return sorted(h for h, n in self._counts.items() if n >= threshold)

    def votes_for(self, block_hash: bytes) -> tuple[Vote, ...]:
        """The votes for ``block_hash``, one per validator, sorted by validator."""
        found = (v for held in self._by_validator.values() for v in held
                 if v.block_hash == block_hash)
        return tuple(sorted(found, key=lambda v: v.validator))

    def validators(self) -> frozenset[bytes]:
        return frozenset(self._by_validator)

    def __len__(self) -> int:
        return sum(len(held) for held in self._by_validator.values())


class HeightVotes:
    """All the votes of one height, by round and type, bounded for rounds ahead."""

    def __init__(self, height: int, validators: tuple[bytes, ...],
                 max_future_rounds: int = MAX_FUTURE_ROUNDS_PER_VALIDATOR) -> None:
        self.height = height
        self._members = frozenset(validators)
        self._max_future = max_future_rounds
        self._sets: dict[tuple[int, VoteType], VoteSet] = {}
        self._rounds_of: dict[bytes, set[int]] = {}  # validator -> rounds it has votes in

    def add(self, vote: Vote, current_round: int) -> AddResult:
        """Add a vote whose signature the caller verified. Votes for another height or from
        a non-validator are not counted; nor is a vote for a round ahead of
        ``current_round`` that is older than its validator's kept rounds ahead."""
        if vote.height != self.height or vote.validator not in self._members:
            return AddResult(False)
        rounds = self._rounds_of.setdefault(vote.validator, set())
        if vote.round > current_round and vote.round not in rounds:
            ahead = sorted(r for r in rounds if r > current_round)
            if len(ahead) >= self._max_future:
                if vote.round < ahead[0]:
                    return AddResult(False)
                self._forget(vote.validator, ahead[0])
        vote_set = self._sets.get((vote.round, vote.type))
        if vote_set is None:
            vote_set = self._sets[vote.round, vote.type] = VoteSet(
                self.height, vote.round, vote.type)
        result = vote_set.add(vote)
        if result.counted:
            rounds.add(vote.round)
        return result

    def _forget(self, validator: bytes, round_: int) -> None:
        for vote_type in VoteType:
            vote_set = self._sets.get((round_, vote_type))
            if vote_set is not None:
                vote_set.remove(validator)
                if not vote_set.count_any():
                    del self._sets[round_, vote_type]
        self._rounds_of[validator].discard(round_)

    def get(self, round_: int, vote_type: VoteType) -> VoteSet:
        """The votes of ``vote_type`` in ``round_`` (an empty set if there are none)."""
        return self._sets.get((round_, vote_type)) or VoteSet(self.height, round_, vote_type)

    def rounds(self) -> list[int]:
        """The rounds that hold votes, ascending."""
        return sorted({r for r, _ in self._sets})

    def senders(self, round_: int) -> int:
        """How many validators have any vote (prevote or precommit) in ``round_``."""
        return len(self.get(round_, VoteType.PREVOTE).validators()
                   | self.get(round_, VoteType.PRECOMMIT).validators())
