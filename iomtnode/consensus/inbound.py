"""Peers' consensus messages, checked before the consensus machine sees them.

:class:`Inbound` is the driver's intake. Peer reader tasks hand it messages
(:meth:`Inbound.offer`, never blocks); the driver task takes them one at a time
(:meth:`Inbound.next`) and has each checked (:meth:`Inbound.check`), which answers a
:class:`Checked` machine event or None. A message passes only if it is:

- well formed (a vote or proposal that decodes; a proposal's block decodes too);
- for the driver's height; the next height's are kept (bounded: :data:`NEXT_HEIGHT_VOTES`,
  :data:`NEXT_HEIGHT_PROPOSALS`) and handed back by :meth:`Inbound.enter` for that height;
  older or further ones are dropped unchecked;
- from an authority of the height (a vote), or from the round's proposer (a proposal),
  the first proposal of its round (a second one, the proposer equivocating or a relayer
  lagging, is dropped: the first stands);
- signed by that authority for this chain (domain-separated signatures);
- for a proposal, about the block it carries, and that block passes
  :meth:`ChainWriter.check_proposal` as the next block (else the proposal is passed on
  with ``block_valid=False``, so the machine prevotes nil; the sender is not charged,
  since the proposer, not the relayer, made it).

Garbage costs the sending peer (:mod:`iomtnode.p2p.score`): malformed, from a
non-authority or a non-proposer, or a bad signature. A message that passed is relayed
once to the other peers (a proposal only if its block is valid), so a network need not be
fully connected. Every message handled (and every one this node signed,
:meth:`Inbound.mark_own`) goes in the seen-cache, by hash of its signed bytes: copies
from other peers cost nothing more.

Equivocations the machine finds among checked votes go to an :class:`EvidenceLog`: logged
(``equivocation_detected``), the newest :data:`MAX_EVIDENCE` kept for status, and each
handed once (by evidence hash) to a hook (the node submits it to the ledger).

Queueing is bounded by count (:data:`INBOX_MESSAGES`) and by proposed-block bytes
(:data:`INBOX_PROPOSAL_BYTES`); beyond, messages are dropped and counted in
:attr:`Inbound.dropped` (peers resend their own messages of an undecided height).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
import trio

from ..chain.chain import BuiltBlock, Chain, InvalidBlockError
from ..chain.writer import ChainWriter
from ..core.block import Block, MalformedBlockError, decode_block
from ..core.crypto import BadSignatureError, blake2b256
from ..core.evidence import Evidence
from ..core.vote import MalformedVoteError, decode_vote
from ..p2p import score
from ..p2p.lru import BoundedSet
from ..p2p.messages import ConsensusProposal, ConsensusVote
from .machine import ProposalReceived, VoteReceived
from .votes import NO_ROUND, Proposal, decode_proposal

log = structlog.get_logger(__name__)

INBOX_MESSAGES = 1024  # peer messages waiting for the driver task; more are dropped
INBOX_PROPOSAL_BYTES = 64 * 1024 * 1024  # ... and bytes of proposed blocks waiting
NEXT_HEIGHT_VOTES = 512  # votes kept for the next height (4 per authority at 128)
NEXT_HEIGHT_PROPOSALS = 4  # proposals kept for the next height (rounds 0.. of a few)
SEEN_MESSAGES = 16_384  # hashes of messages already handled (duplicates from many peers)
MAX_EVIDENCE = 64  # equivocations kept for status
EVIDENCE_HASHES = 4096  # equivocations already reported (the hook is called once per hash)

ConsensusMessage = ConsensusProposal | ConsensusVote


class ConsensusNetwork(Protocol):
    """What the driver needs of the p2p layer (:class:`~iomtnode.p2p.service.P2PService`)."""

    def broadcast_consensus(self, msg: ConsensusMessage, exclude: bytes | None = None
                            ) -> None: ...

    def penalize_peer(self, peer_id: bytes, points: int, reason: str) -> None: ...


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


class Inbound:
    """Queue and check peers' consensus messages for one driver (see the module doc).

    ``known_block(hash)`` tells whether the driver holds a block already (checked, or
    built here), so a proposal of it is not checked again."""

    def __init__(self, chain: Chain, writer: ChainWriter, network: ConsensusNetwork, *,
                 known_block: Callable[[bytes], bool]) -> None:
        self._chain = chain
        self._writer = writer
        self._network = network
        self._known_block = known_block
        self._send, self._inbox = trio.open_memory_channel[
            tuple[bytes, ConsensusMessage] | None](INBOX_MESSAGES)
        self._queued_bytes = 0
        self._nudged = False
        self._seen = BoundedSet(SEEN_MESSAGES)
        self._next_votes: deque[tuple[bytes, ConsensusMessage]] = deque(maxlen=NEXT_HEIGHT_VOTES)
        self._next_proposals: deque[tuple[bytes, ConsensusMessage]] = deque(
            maxlen=NEXT_HEIGHT_PROPOSALS)
        self._height = 0
        self._validators: frozenset[bytes] = frozenset()
        self._proposer: Callable[[int], bytes] = lambda round_: b""
        self._proposal_rounds: set[int] = set()
        self.dropped = 0  # peer messages dropped because the queue was full

    # from other tasks (never block) ----------------------------------------------------

    def offer(self, peer_id: bytes, msg: ConsensusMessage) -> None:
        """Queue a peer's message for the driver task (dropped if the queue is full or a copy
        was handled already)."""
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

    def nudge(self) -> None:
        """Wake the driver task from :meth:`next` (at most one wake-up is queued)."""
        if not self._nudged:
            try:
                self._send.send_nowait(None)
                self._nudged = True
            except trio.WouldBlock:
                pass  # the driver task has plenty to wake up for

    # the driver task -------------------------------------------------------------------

    async def next(self, deadline: float) -> tuple[bytes, ConsensusMessage] | None:
        """The next queued message; None at ``deadline`` (trio clock) or when nudged."""
        item: tuple[bytes, ConsensusMessage] | None = None
        with trio.move_on_at(deadline):
            item = await self._inbox.receive()
            if item is None:
                self._nudged = False
        if item is not None and isinstance(item[1], ConsensusProposal):
            self._queued_bytes -= len(item[1].block)
        return item

    def mark_own(self, signed: bytes) -> None:
        """Remember a message this node signed, so peers' copies of it are ignored."""
        self._seen.add(blake2b256(signed))

    def enter(self, height: int, validators: tuple[bytes, ...],
              proposer: Callable[[int], bytes]) -> list[tuple[bytes, ConsensusMessage]]:
        """Check messages for ``height`` from now on (``proposer(round)`` names each round's
        proposer); returns the messages kept for it, to :meth:`check` now."""
        self._height = height
        self._validators = frozenset(validators)
        self._proposer = proposer
        self._proposal_rounds = set()
        kept = [*self._next_proposals, *self._next_votes]
        self._next_proposals.clear()
        self._next_votes.clear()
        return kept

    async def check(self, peer_id: bytes, msg: ConsensusMessage) -> Checked | None:
        """Check a peer's message (module doc); the event for the machine, or None."""
        if isinstance(msg, ConsensusProposal):
            return await self._check_proposal(peer_id, msg)
        return self._check_vote(peer_id, msg)

    def _this_height(self, peer_id: bytes, msg: ConsensusMessage, height: int) -> bool:
        """True for this height; keeps a message of the next height for later."""
        if height == self._height + 1:
            buffer = self._next_proposals if isinstance(msg, ConsensusProposal) else (
                self._next_votes)
            buffer.append((peer_id, msg))
        return height == self._height

    def _check_vote(self, peer_id: bytes, msg: ConsensusVote) -> Checked | None:
        penalize = self._network.penalize_peer
        try:
            vote = decode_vote(msg.vote)
        except MalformedVoteError as exc:
            penalize(peer_id, score.INVALID_MESSAGE, f"consensus vote: {exc}")
            return None
        key = blake2b256(msg.vote)
        if key in self._seen or not self._this_height(peer_id, msg, vote.height):
            return None
        if vote.validator not in self._validators:
            penalize(peer_id, score.INVALID_MESSAGE, "consensus vote: not an authority's")
            return None
        try:
            vote.verify(self._chain.chain_id)
        except BadSignatureError as exc:
            penalize(peer_id, score.BAD_SIGNATURE, f"consensus vote: {exc}")
            return None
        self._seen.add(key)
        self._network.broadcast_consensus(msg, exclude=peer_id)
        return Checked(peer_id, VoteReceived(vote))

    async def _check_proposal(self, peer_id: bytes, msg: ConsensusProposal) -> Checked | None:
        penalize = self._network.penalize_peer
        try:
            proposal = decode_proposal(msg.proposal)
            block = decode_block(msg.block)
        except (MalformedVoteError, MalformedBlockError) as exc:
            penalize(peer_id, score.INVALID_MESSAGE, f"consensus proposal: {exc}")
            return None
        key = blake2b256(msg.proposal)
        if key in self._seen or not self._this_height(peer_id, msg, proposal.height):
            return None
        if proposal.proposer != self._proposer(proposal.round):
            penalize(peer_id, score.INVALID_MESSAGE,
                     "consensus proposal: not from the round's proposer")
            return None
        if proposal.round in self._proposal_rounds:
            return None  # the proposer equivocates, or a relayer lags: the first one stands
        try:
            proposal.verify(self._chain.chain_id)
        except BadSignatureError as exc:
            penalize(peer_id, score.BAD_SIGNATURE, f"consensus proposal: {exc}")
            return None
        if block.hash != proposal.block_hash:
            penalize(peer_id, score.INVALID_MESSAGE,
                     "consensus proposal: the block is not the one signed")
            return None
        self._seen.add(key)
        self._proposal_rounds.add(proposal.round)
        valid, built = await self._check_block(proposal, block)
        if valid:
            self._network.broadcast_consensus(msg, exclude=peer_id)
        return Checked(peer_id, ProposalReceived(proposal, valid), built)

    async def _check_block(self, proposal: Proposal, block: Block
                           ) -> tuple[bool, BuiltBlock | None]:
        """Whether the proposed block is valid as the next block, and the block checked."""
        if self._known_block(block.hash):
            return True, None
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
                    return False, None  # the chain moved on meanwhile
                return True, built
        log.info("proposed_block_invalid", height=proposal.height, round=proposal.round,
                 proposer=proposal.proposer.hex()[:16], reason=reason)
        return False, None


class EvidenceLog:
    """Equivocations seen (module doc); ``hook(evidence)`` is called once per equivocation
    and must not block."""

    def __init__(self, hook: Callable[[Evidence], None] | None = None) -> None:
        self._hook = hook
        self._kept: deque[dict[str, Any]] = deque(maxlen=MAX_EVIDENCE)
        self._hashes = BoundedSet(EVIDENCE_HASHES)

    @property
    def entries(self) -> list[dict[str, Any]]:
        """The newest equivocations, oldest first (authority, height, round, type, hash)."""
        return list(self._kept)

    def report(self, evidence: Evidence) -> None:
        if not self._hashes.add(evidence.hash):
            return
        log.warning("equivocation_detected", authority=evidence.validator.hex(),
                    height=evidence.height, round=evidence.round, type=evidence.type.name)
        self._kept.append({
            "authority": evidence.validator.hex(), "height": evidence.height,
            "round": evidence.round, "type": evidence.type.name.lower(),
            "hash": evidence.hash.hex(),
        })
        if self._hook is not None:
            try:
                self._hook(evidence)
            except Exception:  # a failing hook must not stop consensus
                log.exception("evidence_hook_failed", hash=evidence.hash.hex()[:16])
