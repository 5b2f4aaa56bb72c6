"""What the consensus machine (:mod:`.machine`) takes and gives: its timeouts and their
settings, the events a driver feeds it and the actions it returns, each a frozen value.

The names are those of Buchman, Kwon and Milosevic, "The latest gossip on BFT consensus"
(2018), Algorithm 1; :mod:`.machine` says what each one does to a height.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..core.crypto import HASH_BYTES
from ..core.evidence import Evidence
from ..core.vote import NIL, Vote, VoteType
from .votes import Proposal


class TimeoutKind(enum.Enum):
    PROPOSE = "propose"
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"


@dataclass(frozen=True)
class Params:
    """Round timeouts: ``base + timeout_delta_s * round``, at most ``timeout_cap_s``."""

    timeout_propose_s: float = 1.0  # wait for the proposal (and its block)
    timeout_prevote_s: float = 0.5  # after 2f+1 prevotes for different things
    timeout_precommit_s: float = 0.5  # after 2f+1 precommits for different things
    timeout_delta_s: float = 0.5  # added per round, so slow networks get there eventually
    timeout_cap_s: float = 10.0  # no single timeout is longer than this

    def __post_init__(self) -> None:
        bases = (self.timeout_propose_s, self.timeout_prevote_s, self.timeout_precommit_s)
        if min(bases) <= 0 or self.timeout_delta_s < 0 or self.timeout_cap_s < max(bases):
            raise ValueError("timeouts must be positive, the delta >= 0, the cap >= each base")

    def timeout(self, kind: TimeoutKind, round_: int) -> float:
        """Seconds to wait for ``kind`` in ``round_``."""
        base = {TimeoutKind.PROPOSE: self.timeout_propose_s,
                TimeoutKind.PREVOTE: self.timeout_prevote_s,
                TimeoutKind.PRECOMMIT: self.timeout_precommit_s}[kind]
        return min(base + self.timeout_delta_s * round_, self.timeout_cap_s)


# events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Start the height (round 0, or the persisted round after a restart). ``now`` is the
    driver's clock in seconds, kept as :attr:`Machine.started_at`; timeouts are relative."""

    now: float


@dataclass(frozen=True, slots=True)
class ProposalReceived:
    """A proposal with a verified signature; ``block_valid`` is the driver's verdict on the
    block it names (decoded, parent and transactions checked against the chain). Pass it
    only once the block is at hand: the first proposal of a round is the one that counts."""

    proposal: Proposal
    block_valid: bool


@dataclass(frozen=True, slots=True)
class VoteReceived:
    """A vote with a verified signature."""

    vote: Vote


@dataclass(frozen=True, slots=True)
class TimeoutFired:
    kind: TimeoutKind
    height: int
    round: int

    def __post_init__(self) -> None:
        if not isinstance(self.kind, TimeoutKind):
            raise TypeError(f"kind must be a TimeoutKind, got {self.kind!r:.40}")


@dataclass(frozen=True, slots=True)
class BlockReady:
    """The answer to :class:`BuildBlock`: the hash of the block the driver built and holds.
    Ignored unless the machine still waits for it (still in the propose step)."""

    block_hash: bytes

    def __post_init__(self) -> None:
        if type(self.block_hash) is not bytes or len(self.block_hash) != HASH_BYTES or (
                self.block_hash == NIL):
            raise ValueError("block_hash must be a block's 32-byte hash")


Event = Start | ProposalReceived | VoteReceived | TimeoutFired | BlockReady


# actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuildBlock:
    """Build a block for ``height`` from the mempool and answer with :class:`BlockReady`."""

    height: int
    round: int


@dataclass(frozen=True, slots=True)
class BroadcastProposal:
    """Persist the signing state, then sign this proposal, deliver it to self and send it
    with the block's bytes."""

    height: int
    round: int
    block_hash: bytes
    pol_round: int


@dataclass(frozen=True, slots=True)
class BroadcastVote:
    """Persist the signing state, then sign this vote, deliver it to self and send it."""

    type: VoteType
    height: int
    round: int
    block_hash: bytes  # NIL for a nil vote


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Deliver ``TimeoutFired(kind, height, round)`` after ``delay_s`` seconds."""

    kind: TimeoutKind
    height: int
    round: int
    delay_s: float


@dataclass(frozen=True, slots=True)
class Commit:
    """``block_hash`` is decided at ``height``; ``precommits`` (sorted by validator, at least a
    quorum) make its certificate (:func:`~iomtnode.consensus.votes.commit_certificate`)."""

    height: int
    round: int
    block_hash: bytes
    precommits: tuple[Vote, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class ReportEvidence:
    """A validator equivocated: gossip the evidence and include it in a block."""

    evidence: Evidence


Action = BuildBlock | BroadcastProposal | BroadcastVote | ScheduleTimeout | Commit | ReportEvidence
