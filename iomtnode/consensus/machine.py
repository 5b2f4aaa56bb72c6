"""Tendermint consensus for one height, as a pure state machine (no I/O, no clock).

This is Algorithm 1 of Buchman, Kwon and Milosevic, "The latest gossip on BFT consensus"
(2018), for one height: a :class:`Machine` takes events (:data:`Event`) and returns
actions (:data:`Action`) for its driver to carry out. Line numbers in comments refer to
the paper's Algorithm 1. Differences, all safe:

- the decision (line 49) needs 2f+1 precommits for a block in some round and *a*
  proposal of that block at this height judged valid, not necessarily that round's;
- every node schedules the propose timeout, the proposer too (a proposer whose driver
  never answers :class:`BuildBlock` then prevotes nil instead of stalling);
- the f+1 round skip (line 55) counts validators with a vote in the higher round.

The driver's contract:

- Deliver every message this node signs back to it (:class:`ProposalReceived` with
  ``block_valid=True``, :class:`VoteReceived`), as if from the network: the machine
  counts its own votes only when they arrive.
- After each :meth:`Machine.step`, if :attr:`Machine.signing_state` changed, persist it
  durably (fsync) *before* signing any :class:`BroadcastProposal` or
  :class:`BroadcastVote` of that step; then sign, deliver to self, send. A crash then
  leaves at worst a vote persisted but never sent, never one sent but not persisted.
- Verify signatures and validate the block before passing messages in; messages for
  another height are ignored (``step`` returns ``[]``): the driver buffers the next
  height's, boundedly, and replays them into the next machine.
- Make one machine per height, from the persisted :class:`SigningState`; after
  :class:`Commit` the machine ignores every event.
"""

from __future__ import annotations

from ..core.block import quorum
from ..core.crypto import KEY_BYTES
from ..core.vote import NIL, VoteType
from .events import (
    Action,
    BlockReady,
    BroadcastProposal,
    BroadcastVote,
    BuildBlock,
    Commit,
    Event,
    Params,
    ProposalReceived,
    ReportEvidence,
    ScheduleTimeout,
    Start,
    TimeoutFired,
    TimeoutKind,
    VoteReceived,
)
from .votes import NO_ROUND, Proposal, SigningState, Step, step_of
from .voteset import HeightVotes, VoteSet, skip_threshold

__all__ = [  # the events and actions are declared in .events; the machine's users import them here
    "Action", "BlockReady", "BroadcastProposal", "BroadcastVote", "BuildBlock", "Commit", "Event",
    "Machine", "Params", "ProposalReceived", "ReportEvidence", "ScheduleTimeout", "Start",
    "TimeoutFired", "TimeoutKind", "VoteReceived",
]


class Machine:
    """One height of consensus, as seen by validator ``own`` (None: an observer).

    ``step(event)`` is the only input and returns the actions it caused; everything the
    machine knows came through it or the constructor, so a run is a function of its
    inputs. ``restored`` is the persisted :class:`SigningState` (of any height): the
    machine never signs at or below its ``(height, round, step)``, and at the same height
    it resumes with its lock and valid value from its round.
    """

    def __init__(self, height: int, validators: tuple[bytes, ...], own: bytes | None,
                 params: Params | None = None, restored: SigningState | None = None) -> None:
        if not validators or len(set(validators)) != len(validators):
            raise ValueError("validators must be a non-empty tuple of distinct keys")
        if any(type(v) is not bytes or len(v) != KEY_BYTES for v in validators):
            raise ValueError(f"each validator is a {KEY_BYTES}-byte public key")
        self.height = height
        self.validators = tuple(validators)
        self.own = own if own in self.validators else None
        self.params = params or Params()
        self.quorum = quorum(len(validators))
        self.skip = skip_threshold(len(validators))
        signed = restored or SigningState()
        self._signed = signed  # what was signed last, at any height
        self.round = 0
        self.round_step = Step.PROPOSE
        self.locked_round, self.locked_value = NO_ROUND, NIL
        self.valid_round, self.valid_value = NO_ROUND, NIL
        if signed.height == height:
            self.round = signed.round
            self.locked_round, self.locked_value = signed.locked_round, signed.locked_value
            self.valid_round, self.valid_value = signed.valid_round, signed.valid_value
        self.started_at: float | None = None
        self.decision: Commit | None = None
        self.votes = HeightVotes(height, self.validators)
        self._proposals: dict[int, tuple[Proposal, bool]] = {}
        self._valid_blocks: set[bytes] = set()
        self._fired: set[str] = set()  # the "for the first time" rules done this round
        self._awaiting_block = False

    # queries ---------------------------------------------------------------------------

    def proposer(self, round_: int) -> bytes:
        """The proposer of ``round_`` at this height: validators[(height + round) mod N]."""
        return self.validators[(self.height + round_) % len(self.validators)]

    @property
    def signing_state(self) -> SigningState:
        """What to persist before signing: the last signed step and the lock (this height)."""
        s = self._signed
        if s.height != self.height:  # nothing signed at this height, so no lock yet either
            return s
        return SigningState(s.height, s.round, s.step, s.block_hash,
                            self.locked_round, self.locked_value,
                            self.valid_round, self.valid_value)

    # the one input ---------------------------------------------------------------------

    def step(self, event: Event) -> list[Action]:
        """Apply one event; return the actions it causes, in the order to carry them out."""
        out: list[Action] = []
        if self.decision is not None:
            return out
        match event:
            case Start(now):
                if self.started_at is None:
                    self.started_at = now
                    self._start_round(self.round, out)
            case ProposalReceived(proposal, block_valid):
                self._add_proposal(proposal, block_valid)
            case VoteReceived(vote):
                result = self.votes.add(vote, self.round)
                if result.evidence is not None:
                    out.append(ReportEvidence(result.evidence))
            case TimeoutFired(kind, height, round_):
                if self.started_at is not None and (height, round_) == (self.height, self.round):
                    self._on_timeout(kind, out)
            case BlockReady(block_hash):
                if self._awaiting_block and self.round_step is Step.PROPOSE:
                    self._awaiting_block = False
                    self._propose(block_hash, NO_ROUND, out)
        if self.started_at is not None:
            while self.decision is None and self._apply_rule(out):
                pass
        return out

    # event handlers --------------------------------------------------------------------

    def _add_proposal(self, p: Proposal, block_valid: bool) -> None:
        if p.height != self.height or p.proposer != self.proposer(p.round):
            return
        if p.round in self._proposals:
            return  # a duplicate, or the proposer equivocating: the first one stands
        if p.round > self.round:  # keep one proposal ahead per proposer, its highest round
            ahead = [r for r, (q, _) in self._proposals.items()
                     if r > self.round and q.proposer == p.proposer]
            if ahead and max(ahead) > p.round:
                return
            for r in ahead:
                del self._proposals[r]
        self._proposals[p.round] = (p, block_valid)
        if block_valid:
            self._valid_blocks.add(p.block_hash)

    def _on_timeout(self, kind: TimeoutKind, out: list[Action]) -> None:
        if kind is TimeoutKind.PROPOSE and self.round_step is Step.PROPOSE:  # line 57
            self._vote(VoteType.PREVOTE, NIL, out)
        elif kind is TimeoutKind.PREVOTE and self.round_step is Step.PREVOTE:  # line 61
            self._vote(VoteType.PRECOMMIT, NIL, out)
        elif kind is TimeoutKind.PRECOMMIT:  # line 65
            self._start_round(self.round + 1, out)

    # the paper's functions -------------------------------------------------------------

    def _start_round(self, round_: int, out: list[Action]) -> None:  # line 11
        self.round = round_
        self.round_step = Step.PROPOSE
        self._fired.clear()
        self._awaiting_block = False
        if self.own is not None and self.own == self.proposer(round_) and self._may_sign(
                Step.PROPOSE):
            if self.valid_value != NIL:
                self._propose(self.valid_value, self.valid_round, out)
            else:
                self._awaiting_block = True
                out.append(BuildBlock(self.height, round_))
        self._schedule(TimeoutKind.PROPOSE, out)

    def _propose(self, block_hash: bytes, pol_round: int, out: list[Action]) -> None:
        if self._may_sign(Step.PROPOSE):
            self._record_signed(Step.PROPOSE, block_hash)
            out.append(BroadcastProposal(self.height, self.round, block_hash, pol_round))

    def _vote(self, vote_type: VoteType, block_hash: bytes, out: list[Action]) -> None:
        """Cast a vote in the current round and move to its step; a vote this validator
        signed before a restart at this step or later is not signed again."""
        step = step_of(vote_type)
        self.round_step = step
        if self.own is not None and self._may_sign(step):
            self._record_signed(step, block_hash)
            out.append(BroadcastVote(vote_type, self.height, self.round, block_hash))

    def _may_sign(self, step: Step) -> bool:
        return self._signed.permits(self.height, self.round, step)

    def _record_signed(self, step: Step, block_hash: bytes) -> None:
        self._signed = SigningState(self.height, self.round, step, block_hash)

    def _schedule(self, kind: TimeoutKind, out: list[Action]) -> None:
        delay = self.params.timeout(kind, self.round)
        out.append(ScheduleTimeout(kind, self.height, self.round, delay))

    # the upon-rules --------------------------------------------------------------------

    def _apply_rule(self, out: list[Action]) -> bool:
        """Fire the first upon-rule whose condition holds; False if none does."""
        if self._try_decide(out):  # line 49
            return True
        ahead = [r for r in self.votes.rounds()
                 if r > self.round and self.votes.senders(r) >= self.skip]
        if ahead:  # line 55
            self._start_round(max(ahead), out)
            return True
        entry = self._proposals.get(self.round)
        prevotes = self.votes.get(self.round, VoteType.PREVOTE)
        if self.round_step is Step.PROPOSE and entry is not None and self._on_proposal(entry,
                                                                                        out):
            return True
        if (self.round_step is Step.PREVOTE and "prevote_any" not in self._fired
                and prevotes.count_any() >= self.quorum):  # line 34
            self._fired.add("prevote_any")
            self._schedule(TimeoutKind.PREVOTE, out)
            return True
        if (self.round_step >= Step.PREVOTE and "polka" not in self._fired
                and entry is not None and entry[1]
                and prevotes.count_for(entry[0].block_hash) >= self.quorum):  # line 36
            self._fired.add("polka")
            value = entry[0].block_hash
            if self.round_step is Step.PREVOTE:
                self.locked_round, self.locked_value = self.round, value
                self._vote(VoteType.PRECOMMIT, value, out)
            self.valid_round, self.valid_value = self.round, value
            return True
        if self.round_step is Step.PREVOTE and prevotes.count_for(NIL) >= self.quorum:  # line 44
            self._vote(VoteType.PRECOMMIT, NIL, out)
            return True
        precommits = self.votes.get(self.round, VoteType.PRECOMMIT)
        if "precommit_any" not in self._fired and precommits.count_any() >= self.quorum:  # 47
            self._fired.add("precommit_any")
            self._schedule(TimeoutKind.PRECOMMIT, out)
            return True
        return False

    def _on_proposal(self, entry: tuple[Proposal, bool], out: list[Action]) -> bool:
        """Lines 22 and 28: prevote on this round's proposal (step is propose)."""
        p, block_valid = entry
        if p.pol_round == NO_ROUND:  # line 22
            good = block_valid and (self.locked_round == NO_ROUND
                                    or self.locked_value == p.block_hash)
        else:  # line 28: only once 2f+1 prevotes for it in pol_round are here
            pol = self.votes.get(p.pol_round, VoteType.PREVOTE)
            if pol.count_for(p.block_hash) < self.quorum:
                return False
            good = block_valid and (self.locked_round <= p.pol_round
                                    or self.locked_value == p.block_hash)
        self._vote(VoteType.PREVOTE, p.block_hash if good else NIL, out)
        return True

    def _try_decide(self, out: list[Action]) -> bool:
        for round_ in self.votes.rounds():
            precommits: VoteSet = self.votes.get(round_, VoteType.PRECOMMIT)
            for block_hash in precommits.blocks_with(self.quorum):
                if block_hash != NIL and block_hash in self._valid_blocks:
                    self.decision = Commit(self.height, round_, block_hash,
                                           precommits.votes_for(block_hash))
                    out.append(self.decision)
                    return True
        return False
