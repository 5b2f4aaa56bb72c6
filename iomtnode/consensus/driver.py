"""The trio driver of the consensus machine, for every chain (one authority included).

The driver runs one :class:`~iomtnode.consensus.machine.Machine` per height and only
sleeps, signs, stores and sends; every decision is the machine's. Its contract:

- Heights: the machine of height ``h`` is made when the chain's head is ``h - 1``, with
  the authorities of block ``h`` (:meth:`Chain.next_authorities`) and the persisted
  signing state. It starts (``Start``) with transactions pending as soon as
  ``block_interval_s`` passed since it last started a height (since it entered ``h`` if it
  never did); with none, ``empty_block_interval_s`` after the previous block; or as soon as
  another validator's valid message for ``h`` arrives. Whenever the head reaches ``h`` by
  any path (this driver's commit, relay, sync), it moves on.
- Commit: on the machine's ``Commit``, the block (built here, or checked here) is
  committed through :meth:`ChainWriter.commit` with the certificate of the decided
  precommits (:func:`~iomtnode.consensus.votes.commit_certificate`).
- Signing: after each step that signs, the blocks signed for and the locked and valid
  values are made durable (:class:`~iomtnode.consensus.held.HeldBlocks`), then the
  signing state is recorded (synced) through :class:`~iomtnode.consensus.signing.Signer`,
  both *before* any signature of that step (in worker threads); own messages go back to
  the machine, then out through an :class:`~iomtnode.consensus.outbox.Outbox` (resent
  while undecided). A validator restarted at the height it last signed at holds its
  record's blocks again and sends again what it signed there: the messages its record
  kept, then its last vote, re-signed (deterministic ed25519: the same bytes).
- A lost signing state (:attr:`Signer.fresh`): the key may have signed before, so it
  observes (``signing_deferred``) until :class:`~iomtnode.consensus.fresh.FreshStartGuard`
  fixes the height to sign above (:mod:`iomtnode.consensus.fresh`); if that allows the
  current height, a validator machine replaces the observer one, fed again the peers'
  messages it took.
- Timeouts go to a heap; the one driver task sleeps until the earliest deadline or the
  next message. No task per message or timer.
- Peers' messages (:meth:`on_message`, from peer reader tasks; never blocks) are checked
  by :class:`~.inbound.Inbound`; a held block's transactions are served by :meth:`held_txs`.
  A peer that connects gets this validator's messages of the undecided height at once
  (:meth:`peer_connected`), not a resend later (a whole network restarting lost rounds).
- Equivocations go to an :class:`~iomtnode.consensus.evidencelog.EvidenceLog`
  (:attr:`Driver.evidence`; ``on_evidence`` once each).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
import trio

from ..admission.inbox import Progress
from ..admission.mempool import Mempool
from ..chain.chain import BuiltBlock, Chain
from ..chain.feed import each_block
from ..chain.writer import ChainWriter
from ..core.block import Block, Commit
from ..core.evidence import Evidence
from ..core.state import authorities_at
from ..core.vote import VoteType
from .blocks import BlockMaker
from .evidencelog import EvidenceLog
from .fresh import Deferral, PeerHeads
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
    ProposalReceived,
    ReportEvidence,
    ScheduleTimeout,
    Start,
    TimeoutFired,
    VoteReceived,
)
from .machine import Commit as Decision
from .messages import ConsensusVote
from .outbox import Outbox
from .proposals import compact_proposal
from .settings import ConsensusStats, DriverConfig, wall_clock_ms
from .signing import MetaStore, Signer
from .votes import NO_ROUND, Step, commit_certificate

__all__ = ["ConsensusMessage", "ConsensusNetwork", "Driver", "DriverConfig", "wall_clock_ms"]

log = structlog.get_logger(__name__)


class Driver:
    """Runs consensus for this node: as validator ``signer`` if it is one of the height's
    authorities, else (or with ``signer=None``) as an observer that checks, relays and
    commits what the authorities decide.

    ``on_evidence`` is called (in the driver task; it must not block) once per new
    equivocation. ``peer_heads()`` gives the heads peers reported (peer id -> height);
    with it, a signer without persisted state waits to hear from a quorum (module doc).
    ``inbox`` (admission's progress) lets a proposal wait for its queued transactions."""

    def __init__(self, chain: Chain, mempool: Mempool, writer: ChainWriter,
                 network: ConsensusNetwork, signer: Signer | None, config: DriverConfig, *,
                 now_ms: Callable[[], int] = wall_clock_ms,
                 on_evidence: Callable[[Evidence], None] | None = None,
                 peer_heads: PeerHeads | None = None, inbox: Progress | None = None,
                 wal: MetaStore | None = None) -> None:
        self._chain = chain
        self._mempool = mempool
        self._writer = writer
        self._network = network
        self._signer = signer
        self._config = config
        self._now_ms = now_ms
        if signer is not None and wal is None:
            raise ValueError("a signing driver needs its write-ahead record (wal)")
        self._held = HeldBlocks(wal if signer is not None else None, inline=config.inline_io)
        self._blocks = BlockMaker(writer, mempool)
        self._inbox = inbox
        self._inbound = Inbound(chain, self._blocks, network, mempool, inbox=inbox,
                                own=signer and signer.public, known_block=self._held.__contains__,
                                relay_max_s=config.params.timeout_propose_s / 2)
        self._outbox = Outbox(network, self._inbound, config.resend_interval_s)
        self._evidence = EvidenceLog(on_evidence)
        self._peer_heads = peer_heads
        self._deferral: Deferral | None = None
        self._timer_seq = itertools.count()
        self._validators: tuple[bytes, ...] = ()
        self._started_at = -math.inf  # when this driver started the height it decides
        self._reset(0, None)
        writer.feed.listen(each_block(self._on_committed))

    def _reset(self, height: int, machine: Machine | None) -> None:
        self.height = height
        self.machine = machine
        self._entered_at = trio.current_time() if machine is not None else 0.0
        started = self._started_at  # the last start here (none yet: count from this entry)
        self._previous_start = started if started > -math.inf else self._entered_at
        self._started_at = -math.inf
        self._started = False
        self._others_started = False
        self._timers: list[tuple[float, int, TimeoutFired]] = []
        self._held.reset(height)
        self._decision: Decision | None = None
        self._outbox.reset()

    # inputs from other tasks (never block) ---------------------------------------------

    def stats(self) -> ConsensusStats:
        """The driver's figures now."""
        at = None if self.machine is None else (self.machine.height, self.machine.round)
        return ConsensusStats(at, tuple(self._evidence.entries), self._inbound.dropped,
                              self._inbound.pending_blocks)

    @property
    def evidence(self) -> list[dict[str, Any]]:
        """The newest equivocations seen, oldest first (authority, height, round, type)."""
        return self._evidence.entries

    @property
    def signing_floor(self) -> int | None:
        """0 for a signer that had its state; else the height it signs above (None: not yet)."""
        return 0 if self._deferral is None else self._deferral.guard.floor

    async def _follow_inbox(self, inbox: Progress) -> None:
        """Wake the driver after each admission step if it waits for transactions."""
        while True:
            await inbox.wait_progress()
            if not self._started or self._inbound.holding:  # a height or proposal waits
                self._inbound.nudge()

    def on_message(self, peer_id: bytes, msg: InboundMessage) -> None:
        """Queue a peer's consensus message, or transactions it was asked for, for the driver
        task (dropped: the queue is full, a copy was handled already, nothing was asked)."""
        self._inbound.offer(peer_id, msg)

    def peer_connected(self, peer_id: bytes) -> None:
        """Send ``peer_id``, just connected, what a resend would send it (module doc)."""
        if self.machine is not None:
            self._outbox.send_to(peer_id, self.machine.round, self.machine.decision is not None)

    def held_txs(self, block_hash: bytes) -> list[bytes] | None:
        """The signed transactions of ``block_hash``, a block held at this height, or None."""
        held = self._held.get(block_hash)
        return None if held is None else [tx.raw for tx in held.block.txs]

    def holders(self, block: Block) -> frozenset[bytes]:
        """The validators whose prevote or precommit for ``block`` (of the height being decided;
        else none) this node counted: one votes for a block only with its proposal at hand."""
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

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive consensus until cancelled."""
        if self._signer is not None and self._signer.fresh:
            self._deferral = Deferral(self._signer.public, trio.current_time(),
                                      self._config.fresh_grace(), self._peer_heads)
        await self._enter_height()
        if self._deferral is not None and self._deferral.guard.own in self._validators:
            self._deferral.announce(self._config.fresh_grace())
        log.info("consensus_started", height=self.height, validators=len(self._validators),
                 validator=self.machine is not None and self.machine.own is not None)
        task_status.started()
        async with trio.open_nursery() as nursery:
            if self._inbox is not None:
                nursery.start_soon(self._follow_inbox, self._inbox)
            while True:
                item = await self._inbound.next(self._deadline())
                if item is not None:
                    await self._on_peer_message(*item)
                for checked in await self._inbound.completed():
                    await self._take(checked)
                await self._tick()

    def _deadline(self) -> float:
        deadline = min(self._timers[0][0] if self._timers else math.inf,
                       self._outbox.resend_at)
        if self._deferral is not None:
            deadline = min(deadline, self._deferral.deadline(trio.current_time()))
        return deadline if self._started else min(deadline, self._start_at())

    def _start_at(self) -> float:
        if self._others_started:
            return -math.inf
        if len(self._mempool):
            return max(self._entered_at, self._previous_start + self._config.block_interval_s)
        return self._entered_at + self._config.empty_block_interval_s

    async def _tick(self) -> None:
        """Do what is due: commit a decision, follow the head, fix the floor, start, timers."""
        while True:
            if self._decision is not None:
                await self._commit(self._decision)
            if self._chain.height >= self.height:
                await self._enter_height()
                continue
            replay = None if self._deferral is None else self._deferral.switch(
                trio.current_time(), self._chain.height, self._validators, self.height)
            if replay is not None:
                await self._become_validator(replay)
            now = trio.current_time()
            if not self._started and now >= self._start_at():
                self._started = True
                self._started_at = now
                self._outbox.started(now)
                await self._step(Start(now))
            elif self._timers and self._timers[0][0] <= now:
                await self._step(heapq.heappop(self._timers)[2])
            elif now >= self._outbox.resend_at:
                assert self.machine is not None
                self._outbox.resend(now, self.machine.round, self.machine.decision is not None)
            else:
                return

    async def _enter_height(self) -> None:
        height = self._chain.height + 1
        self._validators = self._chain.next_authorities()
        signer = self._signer
        own = signer.public if signer is not None else None
        restored = signer.state if signer is not None else None
        deferred = self._deferral is not None and self._deferral.entered(
            height, self._validators)
        self._reset(height, Machine(height, self._validators, None if deferred else own,
                                    self._config.params, restored))
        log.debug("height_entered", height=height, deferred=deferred)
        if restored is not None and restored.height == height:  # restarted at this height
            await self._held.restore(restored.round, self._blocks)
            for event in self._outbox.send_again(signer.signed_before, self._held.get,
                                                 restored.round):
                await self._step(event)
            if restored.step in (Step.PREVOTE, Step.PRECOMMIT):  # and the last vote, again
                kind = VoteType.PREVOTE if restored.step is Step.PREVOTE else VoteType.PRECOMMIT
                await self._step(self._sign_vote(kind, height, restored.round,
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

    async def _become_validator(self, events: list[Event]) -> None:
        """Replace the observer machine by a validator one fed the peer ``events`` it took."""
        assert self._signer is not None
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
                await self._held.make_durable([*signing, self.machine.locked_value,
                                               self.machine.valid_value])
                await self._signer.record_aside(self.machine.signing_state,
                                                inline=self._config.inline_io)
            for action in actions:
                await self._do(action, queue)

    async def _do(self, action: Action, queue: deque[Event]) -> None:
        signer = self._signer
        match action:
            case BuildBlock(height, round_):
                assert signer is not None
                built = await self._blocks.build_next(height, signer.public, self._now_ms(),
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
                self._outbox.send(round_, raw, compact_proposal(raw, held.block))
                if pol_round != NO_ROUND:
                    assert self.machine is not None
                    self._outbox.send_proof_of_lock(round_, self.machine.votes.get(
                        pol_round, VoteType.PREVOTE).votes_for(block_hash))
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
        self._outbox.send(round_, raw, ConsensusVote(raw))
        return VoteReceived(vote)

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
        if self._deferral is not None:
            self._deferral.took(event, checked.signer, checked.height)
        await self._step(event)
