"""The trio driver of the consensus machine, for networks of two or more authorities.

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
- Timeouts: ``ScheduleTimeout`` goes to a heap; the one driver task sleeps until the
  earliest deadline or the next message, whichever is first. No task per message or timer.
- Peers' messages (:meth:`on_message`, called by peer reader tasks; never blocks) are
  queued (bounded: count, and bytes of proposals), then checked in the driver task:
  decoded, from the round's proposer or an authority of the height, signature verified
  (domain-separated, this chain), the proposed block the one signed and checked as the
  next block (:meth:`ChainWriter.check_proposal`). Garbage costs the sending peer
  (:mod:`iomtnode.p2p.score`); valid messages are relayed once to the other peers
  (seen-cache by hash of the signed bytes), so a network need not be fully connected.
  Messages for the next height are kept (bounded) and replayed there; others dropped.
- Resending: messages are pushed once, so a peer that missed them (it restarted, or a
  link dropped) could leave a height stuck. While a started height is undecided, the
  driver resends its own messages of the current and previous round every
  ``resend_interval_s`` (peers drop copies they have, by the seen-cache); and a validator
  restarted at the height it last signed at re-signs that exact vote (ed25519 signatures
  are deterministic: the same bytes, no conflict) and sends it again.
- Equivocation the machine reports is logged (``equivocation_detected``) and kept, the
  newest :data:`MAX_EVIDENCE`, in :attr:`Driver.evidence` (for status).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
import trio

from ..admission.mempool import Mempool
from ..chain.chain import BuiltBlock, Chain, InvalidBlockError
from ..chain.writer import ChainWriter
from ..core.block import Block, Commit, MalformedBlockError, decode_block
from ..core.crypto import BadSignatureError, blake2b256
from ..core.evidence import Evidence
from ..core.vote import MalformedVoteError, VoteType, decode_vote
from ..p2p import score
from ..p2p.lru import BoundedSet
from ..p2p.messages import ConsensusProposal, ConsensusVote
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
from .signing import Signer
from .solo import wall_clock_ms
from .votes import NO_ROUND, Proposal, Step, commit_certificate, decode_proposal

log = structlog.get_logger(__name__)

INBOX_MESSAGES = 1024  # peer messages waiting for the driver task; more are dropped
INBOX_PROPOSAL_BYTES = 64 * 1024 * 1024  # ... and bytes of proposed blocks waiting
NEXT_HEIGHT_VOTES = 512  # votes kept for the next height (4 per authority at 128)
NEXT_HEIGHT_PROPOSALS = 4  # proposals kept for the next height (rounds 0.. of a few)
SEEN_MESSAGES = 16_384  # hashes of messages already handled (duplicates from many peers)
HELD_BLOCKS = 16  # proposed blocks of this height kept; beyond, the oldest rounds go
MAX_EVIDENCE = 64  # equivocations kept for status

ConsensusMessage = ConsensusProposal | ConsensusVote


class ConsensusNetwork(Protocol):
    """What the driver needs of the p2p layer (:class:`~iomtnode.p2p.service.P2PService`)."""

    def broadcast_consensus(self, msg: ConsensusMessage, exclude: bytes | None = None
                            ) -> None: ...

    def penalize_peer(self, peer_id: bytes, points: int, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class DriverConfig:
    block_interval_s: float  # the least time from one block to the next height's start
    empty_block_interval_s: float  # with nothing pending, start (an empty block) after this
    max_block_txs: int
    params: Params = field(default_factory=Params)  # round timeouts
    resend_interval_s: float = 2.0  # own messages of an undecided height are sent again


class Driver:
    """Runs consensus for this node: as validator ``signer`` if it is one of the height's
    authorities, else (or with ``signer=None``) as an observer that checks, relays and
    commits what the authorities decide."""

    def __init__(self, chain: Chain, mempool: Mempool, writer: ChainWriter,
                 network: ConsensusNetwork, signer: Signer | None, config: DriverConfig, *,
                 now_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._chain = chain
        self._mempool = mempool
        self._writer = writer
        self._network = network
        self._signer = signer
        self._config = config
        self._now_ms = now_ms
        self._send, self._inbox = trio.open_memory_channel[tuple[bytes, ConsensusMessage] | None](
            INBOX_MESSAGES)
        self._queued_bytes = 0
        self._nudged = False
        self._seen = BoundedSet(SEEN_MESSAGES)
        self._next_votes: deque[tuple[bytes, ConsensusMessage]] = deque(maxlen=NEXT_HEIGHT_VOTES)
        self._next_proposals: deque[tuple[bytes, ConsensusMessage]] = deque(
            maxlen=NEXT_HEIGHT_PROPOSALS)
        self._evidence: deque[dict[str, Any]] = deque(maxlen=MAX_EVIDENCE)
        self._timer_seq = itertools.count()
        self.dropped = 0  # peer messages dropped because the inbox was full
        self._reset(0, None)
        writer.add_listener(self._on_committed)

    def _reset(self, height: int, machine: Machine | None) -> None:
        self.height = height
        self.machine = machine
        self._entered_at = trio.current_time() if machine is not None else 0.0
        self._started = False
        self._others_started = False
        self._timers: list[tuple[float, int, TimeoutFired]] = []
        self._blocks: dict[bytes, tuple[int, BuiltBlock]] = {}  # hash -> (round, built)
        self._proposal_rounds: set[int] = set()
        self._decision: Decision | None = None
        self._own_messages: list[tuple[int, ConsensusMessage]] = []  # (round, message)
        self._resend_at = math.inf

    # inputs from other tasks (never block) ---------------------------------------------

    @property
    def evidence(self) -> list[dict[str, Any]]:
        """The newest equivocations seen, oldest first (authority, height, round, type)."""
        return list(self._evidence)

    def wake(self) -> None:
        """Transactions are pending: start the height if it waits only for them."""
        if not self._started:
            self._nudge()

    def on_message(self, peer_id: bytes, msg: ConsensusMessage) -> None:
        """Queue a peer's consensus message for the driver task (dropped if the queue is full
        or a copy was handled already)."""
        signed = msg.proposal if isinstance(msg, ConsensusProposal) else msg.vote
        if blake2b256(signed) in self._seen:
            return
        size = len(msg.block) if isinstance(msg, ConsensusProposal) else 0
        if self._queued_bytes + size > INBOX_PROPOSAL_BYTES:
            self.dropped += 1
            return
        try:
            self._send.send_nowait((peer_id, msg))
        except trio.WouldBlock:
            self.dropped += 1
            return
        self._queued_bytes += size

    def _on_committed(self, block: Block, commit: Commit, source: bytes | None) -> None:
        if block.height >= self.height:
            self._nudge()

    def _nudge(self) -> None:
        if not self._nudged:
            try:
                self._send.send_nowait(None)
                self._nudged = True
            except trio.WouldBlock:
                pass  # the driver task has plenty to wake up for

    # the driver task -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Drive consensus until cancelled."""
        await self._enter_height()
        log.info("consensus_started", height=self.height, validators=len(self._validators),
                 validator=self.machine is not None and self.machine.own is not None)
        task_status.started()
        while True:
            item: tuple[bytes, ConsensusMessage] | None = None
            with trio.move_on_at(self._deadline()):
                item = await self._inbox.receive()
                self._nudged = self._nudged and item is not None
            if item is not None:
                peer_id, msg = item
                if isinstance(msg, ConsensusProposal):
                    self._queued_bytes -= len(msg.block)
                await self._on_peer_message(peer_id, msg)
            await self._tick()

    def _deadline(self) -> float:
        deadline = min(self._timers[0][0] if self._timers else math.inf, self._resend_at)
        return deadline if self._started else min(deadline, self._start_at())

    def _start_at(self) -> float:
        if self._others_started:
            return -math.inf
        wait = (self._config.block_interval_s if len(self._mempool)
                else self._config.empty_block_interval_s)
        return self._entered_at + wait

    async def _tick(self) -> None:
        """Do everything that is due: commit a decision, follow the head, start, timeouts."""
        while True:
            if self._decision is not None:
                await self._commit(self._decision)
            if self._chain.height >= self.height:
                await self._enter_height()
                continue
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
                    self._network.broadcast_consensus(msg)

    async def _enter_height(self) -> None:
        height = self._chain.height + 1
        self._validators = self._chain.next_authorities()
        own = self._signer.public if self._signer is not None else None
        restored = self._signer.state if self._signer is not None else None
        self._reset(height, Machine(height, self._validators, own, self._config.params,
                                    restored))
        log.debug("height_entered", height=height, validators=len(self._validators))
        if restored is not None and restored.height == height and restored.step in (
                Step.PREVOTE, Step.PRECOMMIT):  # restarted: send the last vote again
            vote_type = VoteType.PREVOTE if restored.step is Step.PREVOTE else VoteType.PRECOMMIT
            await self._step(self._sign_vote(vote_type, height, restored.round,
                                             restored.block_hash))
        buffered = [*self._next_proposals, *self._next_votes]
        self._next_proposals.clear()
        self._next_votes.clear()
        for peer_id, msg in buffered:
            await self._on_peer_message(peer_id, msg)

    async def _commit(self, decision: Decision) -> None:
        self._decision = None
        held = self._blocks.get(decision.block_hash)
        if held is None:  # decided without the block at hand: relay or sync brings it
            log.warning("decided_block_missing", height=decision.height,
                        hash=decision.block_hash.hex()[:16])
            return
        built = held[1]
        committed = await self._writer.commit(built, commit_certificate(decision.precommits))
        log.info("block_finalized", height=decision.height, round=decision.round,
                 hash=decision.block_hash.hex()[:16], txs=len(built.block.txs),
                 signers=len(decision.precommits), committed_here=committed)

    # the machine -----------------------------------------------------------------------

    async def _step(self, event: Event) -> None:
        """Step the machine with ``event`` and carry out the actions, own messages included."""
        assert self.machine is not None
        queue: deque[Event] = deque([event])
        while queue:
            actions = self.machine.step(queue.popleft())
            if self._signer is not None and any(
                    isinstance(a, BroadcastProposal | BroadcastVote) for a in actions):
                self._signer.record(self.machine.signing_state)  # synced, before signing
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
                held = self._blocks.get(block_hash)
                if held is None:
                    log.warning("proposal_block_missing", height=height, round=round_)
                    return
                proposal = signer.proposal(height, round_, block_hash, pol_round)
                raw = proposal.encode()
                self._send_own(round_, raw, ConsensusProposal(raw, held[1].block.encode()))
                queue.append(ProposalReceived(proposal, True))
                log.debug("block_proposed", height=height, round=round_,
                          hash=block_hash.hex()[:16], txs=len(held[1].block.txs))
            case BroadcastVote(vote_type, height, round_, block_hash):
                queue.append(self._sign_vote(vote_type, height, round_, block_hash))
            case ScheduleTimeout(kind, height, round_, delay_s):
                heapq.heappush(self._timers, (trio.current_time() + delay_s,
                                              next(self._timer_seq),
                                              TimeoutFired(kind, height, round_)))
            case Decision():
                self._decision = action
            case ReportEvidence(evidence):
                self._report(evidence)

    def _sign_vote(self, vote_type: VoteType, height: int, round_: int, block_hash: bytes
                   ) -> VoteReceived:
        """Sign a vote (recorded already), send it; returns it to deliver to the machine."""
        assert self._signer is not None
        vote = self._signer.vote(vote_type, height, round_, block_hash)
        raw = vote.encode()
        self._send_own(round_, raw, ConsensusVote(raw))
        return VoteReceived(vote)

    def _send_own(self, round_: int, signed: bytes, msg: ConsensusMessage) -> None:
        self._seen.add(blake2b256(signed))
        floor = round_ - 1  # what a resend sends; older rounds are done with
        self._own_messages = [(r, m) for r, m in self._own_messages if r >= floor]
        self._own_messages.append((round_, msg))
        self._network.broadcast_consensus(msg)

    def _hold(self, round_: int, built: BuiltBlock) -> None:
        self._blocks[built.block.hash] = (round_, built)
        machine = self.machine
        assert machine is not None
        keep = {machine.locked_value, machine.valid_value}
        while len(self._blocks) > HELD_BLOCKS:
            evictable = [(r, h) for h, (r, _) in self._blocks.items() if h not in keep]
            del self._blocks[min(evictable)[1]]

    def _report(self, evidence: Evidence) -> None:
        log.warning("equivocation_detected", authority=evidence.validator.hex(),
                    height=evidence.height, round=evidence.round, type=evidence.type.name)
        self._evidence.append({
            "authority": evidence.validator.hex(), "height": evidence.height,
            "round": evidence.round, "type": evidence.type.name.lower(),
            "hash": evidence.hash.hex(),
        })

    # peers' messages -------------------------------------------------------------------

    async def _on_peer_message(self, peer_id: bytes, msg: ConsensusMessage) -> None:
        if isinstance(msg, ConsensusProposal):
            await self._on_proposal(peer_id, msg)
        else:
            await self._on_vote(peer_id, msg)

    def _this_height(self, peer_id: bytes, msg: ConsensusMessage, height: int) -> bool:
        """True for this height; keeps a message of the next height for later."""
        if height == self.height + 1:
            buffer = self._next_proposals if isinstance(msg, ConsensusProposal) else (
                self._next_votes)
            buffer.append((peer_id, msg))
        return height == self.height

    async def _on_vote(self, peer_id: bytes, msg: ConsensusVote) -> None:
        penalize = self._network.penalize_peer
        try:
            vote = decode_vote(msg.vote)
        except MalformedVoteError as exc:
            penalize(peer_id, score.INVALID_MESSAGE, f"consensus vote: {exc}")
            return
        key = blake2b256(msg.vote)
        if key in self._seen or not self._this_height(peer_id, msg, vote.height):
            return
        if vote.validator not in self._validators:
            penalize(peer_id, score.INVALID_MESSAGE, "consensus vote: not an authority's")
            return
        try:
            vote.verify(self._chain.chain_id)
        except BadSignatureError as exc:
            penalize(peer_id, score.BAD_SIGNATURE, f"consensus vote: {exc}")
            return
        self._seen.add(key)
        self._network.broadcast_consensus(msg, exclude=peer_id)
        self._others_started = True
        await self._step(VoteReceived(vote))

    async def _on_proposal(self, peer_id: bytes, msg: ConsensusProposal) -> None:
        assert self.machine is not None
        penalize = self._network.penalize_peer
        try:
            proposal = decode_proposal(msg.proposal)
            block = decode_block(msg.block)
        except (MalformedVoteError, MalformedBlockError) as exc:
            penalize(peer_id, score.INVALID_MESSAGE, f"consensus proposal: {exc}")
            return
        key = blake2b256(msg.proposal)
        if key in self._seen or not self._this_height(peer_id, msg, proposal.height):
            return
        if proposal.proposer != self.machine.proposer(proposal.round):
            penalize(peer_id, score.INVALID_MESSAGE,
                     "consensus proposal: not from the round's proposer")
            return
        if proposal.round in self._proposal_rounds:
            return  # the proposer equivocates, or a relayer lags: the first one stands
        try:
            proposal.verify(self._chain.chain_id)
        except BadSignatureError as exc:
            penalize(peer_id, score.BAD_SIGNATURE, f"consensus proposal: {exc}")
            return
        if block.hash != proposal.block_hash:
            penalize(peer_id, score.INVALID_MESSAGE,
                     "consensus proposal: the block is not the one signed")
            return
        self._seen.add(key)
        self._proposal_rounds.add(proposal.round)
        valid = await self._check_block(proposal, block)
        if valid:
            self._network.broadcast_consensus(msg, exclude=peer_id)
        self._others_started = True
        await self._step(ProposalReceived(proposal, valid))

    async def _check_block(self, proposal: Proposal, block: Block) -> bool:
        if block.hash in self._blocks:
            return True
        reason = None
        if proposal.pol_round == NO_ROUND and block.header.proposer != proposal.proposer:
            reason = "a new block names another proposer"  # a re-proposal keeps its maker
        else:
            try:
                built = await self._writer.check_proposal(block)
            except InvalidBlockError as exc:
                reason = str(exc)
            else:
                if built is None:
                    return False  # the chain moved on meanwhile
                self._hold(proposal.round, built)
                return True
        log.info("proposed_block_invalid", height=proposal.height, round=proposal.round,
                 proposer=proposal.proposer.hex()[:16], reason=reason)
        return False
