"""The trio driver of the consensus machine, for every chain (one authority included).

The driver runs one :class:`~iomtnode.consensus.machine.Machine` per height and only
sleeps, signs, stores and sends; every decision is the machine's. Its contract:

- Heights: the machine of height ``h`` is made when the chain's head is ``h - 1``, with
  the authorities that certify block ``h`` (:meth:`Chain.next_authorities`) and the
  persisted signing state. It is started (``Start``) once ``block_interval_s`` has passed
  since the previous block and transactions are pending, or ``empty_block_interval_s``
  has passed (then the block may be empty), or as soon as another validator's valid
  message for ``h`` arrives (the others started). Whenever the chain's head reaches
  ``h`` by any path (this driver's commit, compact block relay, sync), the driver moves
  to the next height; ChainWriter listeners then relay the block to followers.
- Commit: on the machine's ``Commit``, the block (built here, or checked here when it was
  proposed) is committed through :meth:`ChainWriter.commit` with the certificate made of
  the decided precommits (:func:`~iomtnode.consensus.votes.commit_certificate`).
- Signing: after each step that signs, the machine's signing state is recorded
  (synced) through :class:`~iomtnode.consensus.signing.Signer` *before* any signature of
  that step; own messages are delivered back to the machine and then sent.
- A lost signing state: a signer that starts with none persisted (:attr:`Signer.fresh`:
  a new home, or a deleted ``signing_state`` file) may have signed before. It observes
  (``signing_deferred`` in the log, with why and until when) until its
  :class:`~iomtnode.consensus.signing.FreshStartGuard` fixes the height to sign above
  (the rule and why it is safe are in :mod:`iomtnode.consensus.signing`); if that
  allows the current height, a validator machine replaces the observer one, fed again
  the peers' messages it took.
- Timeouts: ``ScheduleTimeout`` goes to a heap; the one driver task sleeps until the
  earliest deadline or the next message, whichever is first. No task per message or timer.
- Peers' messages (:meth:`on_message`, from peer reader tasks; never blocks) are queued
  and checked by :class:`~iomtnode.consensus.inbound.Inbound`; checked ones step the
  machine. Proposals travel compact (:mod:`iomtnode.consensus.proposals`): a peer asking
  for transactions of a block this driver holds (built or checked at this height, or the
  head just committed) is answered at once, from the peer's reader task.
- Resending: messages are pushed once, so a peer that missed them (it restarted, or a
  link dropped) could leave a height stuck. While a started height is undecided, the
  driver resends its own messages of the current and previous round every
  ``resend_interval_s`` (peers drop copies they have, by the seen-cache; a proposal skips
  the peers known to hold it); and a validator
  restarted at the height it last signed at re-signs that exact vote (ed25519 signatures
  are deterministic: the same bytes, no conflict) and sends it again.
- Re-proposals go out with the prevotes of their proof-of-lock round, resent with them.
- Equivocations the machine reports go to an :class:`~iomtnode.consensus.evidencelog.EvidenceLog`
  (:attr:`Driver.evidence`; ``on_evidence`` once each).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from ..admission.mempool import Mempool
from ..chain.chain import BuiltBlock, Chain
from ..chain.writer import ChainWriter
from ..core.block import Block, Commit
from ..core.evidence import Evidence
from ..core.state import authorities_at
from ..core.vote import VoteType
from ..p2p.messages import ConsensusProposal, ConsensusVote, GetProposalTxs
from .evidencelog import EvidenceLog
from .held import HeldBlocks
from .inbound import Checked, ConsensusMessage, ConsensusNetwork, Inbound, InboundMessage
from .machine import (
    Action,
    BlockReady,
    BroadcastProposal,
    BroadcastVote,
    BuildBlock,
    Event,
    Machine,
    Params,
    ProposalReceived,
    ReportEvidence,
    ScheduleTimeout,
    Start,
    TimeoutFired,
    VoteReceived,
)
from .machine import Commit as Decision
from .proposals import InboxProgress, answer_txs, compact_proposal
from .signing import FreshStartGuard, MetaStore, Signer
from .votes import NO_ROUND, Step, commit_certificate, decode_proposal

__all__ = ["ConsensusMessage", "ConsensusNetwork", "Driver", "DriverConfig"]

log = structlog.get_logger(__name__)

MAX_REPLAY = 4096  # peer events kept while deferred, to feed a validator machine
GUARD_POLL_S = 0.25  # how often a deferred signer looks at its peers' heads again

PeerHeads = Callable[[], Mapping[bytes, int]]


def wall_clock_ms() -> int:
    """Block times: the wall clock, in ms (tests inject their own)."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class DriverConfig:
    block_interval_s: float  # the least time from one block to the next height's start
    empty_block_interval_s: float  # with nothing pending, start (an empty block) after this
    max_block_txs: int
    params: Params = field(default_factory=Params)  # round timeouts
    resend_interval_s: float = 2.0  # own messages of an undecided height are sent again
    # without persisted signing state, observe this long before signing (None: twice the
    # longest round-0 timeout, at least resend_interval_s)
    fresh_grace_s: float | None = None

    def fresh_grace(self) -> float:
        if self.fresh_grace_s is not None:
            return self.fresh_grace_s
        p = self.params
        longest = max(p.timeout_propose_s, p.timeout_prevote_s, p.timeout_precommit_s)
        return max(2 * longest, self.resend_interval_s)


class Driver:
    """Runs consensus for this node: as validator ``signer`` if it is one of the height's
    authorities, else (or with ``signer=None``) as an observer that checks, relays and
    commits what the authorities decide.

    ``on_evidence`` is called (in the driver task; it must not block) once per new
    equivocation. ``peer_heads()`` gives the heads peers reported (peer id -> height);
    with it, a signer without persisted state waits to hear from a quorum (module doc).
    ``inbox`` (the gossip admission's progress) lets a proposal whose transactions are
    still queued for admission wait for them instead of fetching them again.
    """

    def __init__(self, chain: Chain, mempool: Mempool, writer: ChainWriter,
                 network: ConsensusNetwork, signer: Signer | None, config: DriverConfig, *,
                 now_ms: Callable[[], int] = wall_clock_ms,
                 on_evidence: Callable[[Evidence], None] | None = None,
                 peer_heads: PeerHeads | None = None,
                 inbox: InboxProgress | None = None,
                 wal: MetaStore | None = None) -> None:
        self._chain = chain
        self._mempool = mempool
        self._writer = writer
        self._network = network
        self._signer = signer
        self._config = config
        self._now_ms = now_ms
        self._peer_heads = peer_heads
        if signer is not None and wal is None:
            raise ValueError("a signing driver needs its write-ahead record (wal)")
        self._held = HeldBlocks(wal if signer is not None else None)
        self._inbound = Inbound(chain, writer, network, mempool, inbox=inbox,
                                known_block=lambda block_hash: block_hash in self._held)
        self._evidence = EvidenceLog(on_evidence)
        self._guard: FreshStartGuard | None = None
        self._timer_seq = itertools.count()
        self._validators: tuple[bytes, ...] = ()
        self._reset(0, None)
        writer.add_listener(self._on_committed)

    def _reset(self, height: int, machine: Machine | None) -> None:
        self.height = height
        self.machine = machine
        self._entered_at = trio.current_time() if machine is not None else 0.0
        self._started = False
        self._others_started = False
        self._timers: list[tuple[float, int, TimeoutFired]] = []
        self._held.reset(height)
        self._decision: Decision | None = None
        self._own_messages: list[tuple[int, ConsensusMessage]] = []  # (round, message)
        self._resend_at = math.inf
        # deferred at this height, floor not fixed yet: peer events, to replay into a
        # validator machine if the floor allows this height (None: no switch here)
        self._replay: list[Event] | None = None

    # inputs from other tasks (never block) ---------------------------------------------

    @property
    def evidence(self) -> list[dict[str, Any]]:
        """The newest equivocations seen, oldest first (authority, height, round, type)."""
        return self._evidence.entries

    @property
    def dropped(self) -> int:
        """Peer messages dropped because the queue was full."""
        return self._inbound.dropped

    @property
    def pending_blocks(self) -> int:
        """Proposed blocks waiting for transactions from peers."""
        return self._inbound.pending_blocks

    @property
    def signing_floor(self) -> int | None:
        """With no signing state at startup: the height signed only above (None while still
        observing); 0 for a signer that had its state."""
        return 0 if self._guard is None else self._guard.floor

    def wake(self) -> None:
        """Transactions are pending: start the height if it waits only for them."""
        if not self._started:
            self._inbound.nudge()

    def inbox_progressed(self) -> None:
        """The gossip inbox admitted more: wake the driver if a proposal waits for it."""
        if self._inbound.holding:
            self._inbound.nudge()

    def on_message(self, peer_id: bytes, msg: InboundMessage | GetProposalTxs) -> None:
        """Queue a peer's consensus message for the driver task (dropped if the queue is full
        or a copy was handled already); answer a request for a proposed block's
        transactions at once."""
        if isinstance(msg, GetProposalTxs):
            self._answer_txs(peer_id, msg)
        else:
            self._inbound.offer(peer_id, msg)

    def _answer_txs(self, peer_id: bytes, msg: GetProposalTxs) -> None:
        """Answer from the blocks held at this height, or the head (committed meanwhile);
        older blocks are not read back from the store for this."""
        held = self._held.get(msg.block_hash)
        block = held.block if held is not None else self._chain.head
        for answer in answer_txs(msg.block_hash, block, msg.indexes):
            self._network.send_consensus(peer_id, answer)

    def holders(self, block: Block) -> frozenset[bytes]:
        """The validators known to hold ``block``, at the height being decided: those whose
        prevote or precommit for it this node counted (a validator votes for a block only
        with its proposal at hand). Empty for any other height."""
        machine = self.machine
        if machine is None or machine.height != block.height:
            return frozenset()
        votes = machine.votes
        return frozenset(vote.validator for round_ in votes.rounds() for vote_type in VoteType
                         for vote in votes.get(round_, vote_type).votes_for(block.hash))

    def _on_committed(self, block: Block, commit: Commit, source: bytes | None) -> None:
        if block.height >= self.height:
            self._inbound.nudge()

    # the driver task -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Drive consensus until cancelled."""
        signer = self._signer
        if signer is not None and signer.fresh:
            grace = self._config.fresh_grace()
            self._guard = FreshStartGuard(signer.public, trio.current_time(), grace)
        await self._enter_height()
        if self._guard is not None and signer is not None and (
                signer.public in self._validators):
            log.warning("signing_deferred", phase="observing",
                        reason="no signing state at startup (a new home or a lost "
                               "signing_state file): this key may have signed before",
                        until=f"{self._config.fresh_grace():.1f} s from now and heard from a "
                              "quorum of the other authorities; then only above the highest "
                              "finalized height heard of + 2")
        log.info("consensus_started", height=self.height, validators=len(self._validators),
                 validator=self.machine is not None and self.machine.own is not None)
        task_status.started()
        while True:
            item = await self._inbound.next(self._deadline())
            if item is not None:
                await self._on_peer_message(*item)
            for checked in await self._inbound.completed():
                await self._take(checked)
            await self._tick()

    def _deadline(self) -> float:
        deadline = min(self._timers[0][0] if self._timers else math.inf, self._resend_at)
        guard = self._guard
        if guard is not None and not guard.resolved:
            deadline = min(deadline, max(guard.grace_until, trio.current_time() + GUARD_POLL_S))
        return deadline if self._started else min(deadline, self._start_at())

    def _start_at(self) -> float:
        if self._others_started:
            return -math.inf
        wait = (self._config.block_interval_s if len(self._mempool)
                else self._config.empty_block_interval_s)
        return self._entered_at + wait

    async def _tick(self) -> None:
        """Do everything that is due: commit a decision, follow the head, fix the signing
        floor, start, timeouts."""
        while True:
            if self._decision is not None:
                await self._commit(self._decision)
            if self._chain.height >= self.height:
                await self._enter_height()
                continue
            if self._check_guard():
                await self._become_validator()
            now = trio.current_time()
            if not self._started and now >= self._start_at():
                self._started = True
                self._resend_at = now + self._config.resend_interval_s
                await self._step(Start(now))
            elif self._timers and self._timers[0][0] <= now:
                await self._step(heapq.heappop(self._timers)[2])
            elif now >= self._resend_at:
                self._resend(now)
            else:
                return

    def _resend(self, now: float) -> None:
        assert self.machine is not None
        self._resend_at = now + self._config.resend_interval_s
        if self.machine.decision is None:
            for round_, msg in self._own_messages:
                if round_ >= self.machine.round - 1:
                    holders = self._inbound.holders(decode_proposal(msg.proposal)) if (
                        isinstance(msg, ConsensusProposal)) else frozenset()
                    self._network.broadcast_consensus(msg, exclude=holders)

    async def _enter_height(self) -> None:
        height = self._chain.height + 1
        self._validators = self._chain.next_authorities()
        signer, guard = self._signer, self._guard
        own = signer.public if signer is not None else None
        restored = signer.state if signer is not None else None
        deferred = own in self._validators and guard is not None and not guard.permits(height)
        self._reset(height, Machine(height, self._validators, None if deferred else own,
                                    self._config.params, restored))
        if deferred and guard is not None and not guard.resolved:
            self._replay = []
        log.debug("height_entered", height=height, validators=len(self._validators),
                  deferred=deferred)
        if guard is not None and own in self._validators and not deferred:
            guard.resumed(height)
        if restored is not None and restored.height == height:  # restarted at this height
            await self._held.restore(restored.round, self._writer)
        if restored is not None and restored.height == height and restored.step in (
                Step.PREVOTE, Step.PRECOMMIT):  # restarted: send the last vote again
            vote_type = VoteType.PREVOTE if restored.step is Step.PREVOTE else VoteType.PRECOMMIT
            await self._step(self._sign_vote(vote_type, height, restored.round,
                                             restored.block_hash))
        assert self.machine is not None
        next_validators = authorities_at(self._chain.state(), height + 1)
        for peer_id, msg in self._inbound.enter(height, self._validators, self.machine.proposer,
                                                next_validators):
            await self._on_peer_message(peer_id, msg)

    async def _commit(self, decision: Decision) -> None:
        self._decision = None
        built = self._held.get(decision.block_hash)
        if built is None:  # decided without the block at hand: relay or sync brings it
            log.warning("decided_block_missing", height=decision.height,
                        hash=decision.block_hash.hex()[:16])
            return
        committed = await self._writer.commit(built, commit_certificate(decision.precommits))
        log.info("block_finalized", height=decision.height, round=decision.round,
                 hash=decision.block_hash.hex()[:16], txs=len(built.block.txs),
                 signers=len(decision.precommits), committed_here=committed)

    # a signer without persisted state ---------------------------------------------------

    def _check_guard(self) -> bool:
        """Feed the guard; True if it just allowed the current height while this height's
        machine is an observer that can be replaced."""
        guard = self._guard
        if guard is None or not guard.update(
                trio.current_time(), self._chain.height,
                None if self._peer_heads is None else self._peer_heads(), self._validators,
                height=self.height):
            return False
        return self._replay is not None and guard.permits(self.height)

    async def _become_validator(self) -> None:
        """Replace this height's observer machine by a validator one, fed again the peer
        events the observer took (own timers start over with it)."""
        assert self._signer is not None and self._replay is not None
        events, self._replay = self._replay, None
        if self._guard is not None:
            self._guard.resumed(self.height)
        self.machine = Machine(self.height, self._validators, self._signer.public,
                               self._config.params, self._signer.state)
        self._timers = []
        for event in events:
            await self._step(event)
        if self._started:
            await self._step(Start(trio.current_time()))

    # the machine -----------------------------------------------------------------------

    async def _step(self, event: Event) -> None:
        """Step the machine with ``event`` and carry out the actions, own messages included."""
        assert self.machine is not None
        queue: deque[Event] = deque([event])
        while queue:
            actions = self.machine.step(queue.popleft())
            signing = [a.block_hash for a in actions
                       if isinstance(a, BroadcastProposal | BroadcastVote)]
            if self._signer is not None and signing:  # both synced, before signing
                await self._held.make_durable(
                    [*signing, self.machine.locked_value, self.machine.valid_value])
                self._signer.record(self.machine.signing_state)
            for action in actions:
                await self._do(action, queue)

    async def _do(self, action: Action, queue: deque[Event]) -> None:
        signer = self._signer
        match action:
            case BuildBlock(height, round_):
                assert signer is not None
                built = await self._writer.build_next(height, signer.public, self._now_ms(),
                                                      self._config.max_block_txs)
                if built is not None:
                    self._hold(round_, built)
                    queue.append(BlockReady(built.block.hash))
            case BroadcastProposal(height, round_, block_hash, pol_round):
                assert signer is not None
                held = self._held.get(block_hash)
                if held is None:
                    log.warning("proposal_block_missing", height=height, round=round_)
                    return
                proposal = signer.proposal(height, round_, block_hash, pol_round)
                raw = proposal.encode()
                self._send_own(round_, raw, compact_proposal(raw, held.block))
                self._send_proof_of_lock(round_, pol_round, block_hash)
                queue.append(ProposalReceived(proposal, True))
                log.debug("block_proposed", height=height, round=round_,
                          hash=block_hash.hex()[:16], txs=len(held.block.txs))
            case BroadcastVote(vote_type, height, round_, block_hash):
                queue.append(self._sign_vote(vote_type, height, round_, block_hash))
            case ScheduleTimeout(kind, height, round_, delay_s):
                heapq.heappush(self._timers, (trio.current_time() + delay_s,
                                              next(self._timer_seq),
                                              TimeoutFired(kind, height, round_)))
            case Decision():
                self._decision = action
            case ReportEvidence(evidence):
                self._evidence.report(evidence)

    def _sign_vote(self, vote_type: VoteType, height: int, round_: int, block_hash: bytes
                   ) -> VoteReceived:
        """Sign a vote (recorded already), send it; returns it to deliver to the machine."""
        assert self._signer is not None
        vote = self._signer.vote(vote_type, height, round_, block_hash)
        raw = vote.encode()
        self._send_own(round_, raw, ConsensusVote(raw))
        return VoteReceived(vote)

    def _send_own(self, round_: int, signed: bytes, msg: ConsensusMessage) -> None:
        """Send a message of ``round_`` (signed here, or proving a lock) and keep it to
        resend."""
        self._inbound.mark_own(signed)
        floor = round_ - 1  # what a resend sends; older rounds are done with
        self._own_messages = [(r, m) for r, m in self._own_messages if r >= floor]
        self._own_messages.append((round_, msg))
        self._network.broadcast_consensus(msg)

    def _send_proof_of_lock(self, round_: int, pol_round: int, block_hash: bytes) -> None:
        """With a re-proposal, send (and resend) the prevotes of ``pol_round`` that make its
        proof of lock: a peer that missed one (it was cut off, or its sender lost its
        state and stays silent) could never accept the re-proposal, and a network whose
        quorum is locked on that block would stall."""
        assert self.machine is not None
        if pol_round == NO_ROUND:
            return
        for vote in self.machine.votes.get(pol_round, VoteType.PREVOTE).votes_for(block_hash):
            raw = vote.encode()
            self._send_own(round_, raw, ConsensusVote(raw))

    def _hold(self, round_: int, built: BuiltBlock) -> None:
        machine = self.machine
        assert machine is not None
        self._held.hold(round_, built, (machine.locked_value, machine.valid_value))

    # peers' messages -------------------------------------------------------------------

    async def _on_peer_message(self, peer_id: bytes, msg: InboundMessage) -> None:
        for checked in await self._inbound.check(peer_id, msg):
            await self._take(checked)

    async def _take(self, checked: Checked) -> None:
        event = checked.event
        if checked.block is not None and isinstance(event, ProposalReceived):
            self._hold(event.proposal.round, checked.block)
        self._others_started = True
        if self._guard is not None:
            self._guard.saw_message(checked.signer, checked.height)
        if self._replay is not None:
            if len(self._replay) < MAX_REPLAY:
                self._replay.append(event)
            else:
                self._replay = None  # too much to replay: a validator from the next height
        await self._step(event)
