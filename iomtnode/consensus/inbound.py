"""Peers' consensus messages, checked before the consensus machine sees them.

:class:`Inbound` is the driver's intake. Peer reader tasks hand it messages
(:meth:`Inbound.offer`, never blocks); the driver task takes them one at a time
(:meth:`Inbound.next`) and has each checked (:meth:`Inbound.check`), which answers the
:class:`Checked` machine events it makes (none; one; or, for the transactions that complete
a block, each proposal waiting for it). A message passes only if it is:

- well formed (a vote or proposal that decodes; a proposal's header, certificate and
  transaction count agree);
- for the driver's height; the next height's are kept for it (:meth:`Inbound.enter`)
  once their signer is checked to be an authority there (its round's proposer, for a
  proposal) and their signature holds, so nobody else can push the genuine ones out
  (:mod:`.nextheight`, bounded, copies kept once). Older or further ones are dropped
  unchecked;
- from an authority of the height (a vote), or from the round's proposer (a proposal),
  the first proposal of its round (a second one, the proposer equivocating or a relayer
  lagging, is dropped: the first stands);
- signed by that authority for this chain (domain-separated signatures);
- for a proposal, about the block whose header it carries; the block, assembled from the
  mempool and fetched transactions (:mod:`iomtnode.admission.assembly`: a proposal waits,
  boundedly, until its block is whole), passes :meth:`BlockMaker.check_proposal` as the
  next block (else it is passed on with ``block_valid=False``, so the machine prevotes
  nil; the sender is not charged, since the proposer, not the relayer, made it).

Garbage costs the sending peer (:mod:`iomtnode.p2p.score`): malformed, from a
non-authority or a non-proposer, or a bad signature. A message that passed is relayed
once, to the peers not known to hold or need it (a proposal only if its block is valid:
:mod:`.relay`), so a network need not be fully connected. Every message handled (and
every one this node signed, :meth:`Inbound.mark_own`) goes in the seen-cache, by hash of
its signed bytes: copies from other peers cost nothing more (a copy notes its sender as
holding it; of a proposal, also as a source of the transactions while they are fetched).

Queueing is bounded by count (:data:`INBOX_MESSAGES`) and by the bytes of compact proposals
and fetched transactions (:data:`INBOX_PROPOSAL_BYTES`); beyond, messages are dropped and
counted in :attr:`Inbound.dropped` (peers resend their own messages of an undecided height).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
import trio

from ..admission.assembly import Assembler
from ..admission.inbox import Progress
from ..admission.mempool import Mempool
from ..admission.messages import BlockTxs
from ..chain.chain import BuiltBlock, Chain, InvalidBlockError
from ..core.block import Block, MalformedBlockError, decode_commit, decode_header
from ..core.crypto import BadSignatureError, blake2b256
from ..core.vote import MalformedVoteError, Vote, decode_vote
from ..p2p import score
from ..p2p.lru import BoundedSet
from .blocks import BlockMaker
from .checked import Checked
from .machine import ProposalReceived, VoteReceived
from .messages import ConsensusProposal, ConsensusVote
from .nextheight import NextHeight
from .proposals import FetchNetwork, Waiting, check_compact
from .relay import PROPOSAL_FALLBACK_MAX_S, ProposalRelay, VoteRelay
from .votes import NO_ROUND, Proposal, decode_proposal

log = structlog.get_logger(__name__)

INBOX_MESSAGES = 1024  # peer messages waiting for the driver task; more are dropped
INBOX_PROPOSAL_BYTES = 64 * 1024 * 1024  # ... and bytes of proposals and fetched txs waiting
SEEN_MESSAGES = 16_384  # hashes of messages already handled (duplicates from many peers)

ConsensusMessage = ConsensusProposal | ConsensusVote
InboundMessage = ConsensusProposal | ConsensusVote | BlockTxs
ConsensusNetwork = FetchNetwork  # what the driver needs of the p2p layer


def _size(msg: InboundMessage) -> int:
    """The bytes a queued message counts for (:data:`INBOX_PROPOSAL_BYTES`)."""
    if isinstance(msg, ConsensusProposal):
        return 32 * len(msg.tx_ids) + len(msg.header) + len(msg.last_commit)
    if isinstance(msg, BlockTxs):
        return sum(len(raw) for raw in msg.txs)
    return 0


class Inbound:
    """Queue and check peers' consensus messages for one driver (see the module doc).

    ``known_block(hash)`` tells whether the driver holds a block already (checked, or
    built here), so a proposal of it is not checked again; ``own`` is this node's
    authority key (None: an observer). Proposed blocks' transactions
    come from ``mempool`` (once admission's ``inbox`` has caught up) or from peers."""

    def __init__(self, chain: Chain, blocks: BlockMaker, network: ConsensusNetwork,
                 mempool: Mempool, *, known_block: Callable[[bytes], bool],
                 inbox: Progress | None = None, own: bytes | None = None,
                 relay_max_s: float = PROPOSAL_FALLBACK_MAX_S) -> None:
        """``relay_max_s``: the longest a proposal waits here before it is relayed
        (:class:`~.relay.ProposalRelay`): half the round-0 propose timeout."""
        self._chain = chain
        self._blocks = blocks
        self._network = network
        self._known_block = known_block
        self._fetcher: Assembler[Waiting] = Assembler(
            mempool.get, network.send_consensus, network.penalize_peer, self._forget, inbox,
            verify=mempool.verifier.verify_now, what="proposal")
        self._whole: list[tuple[Block, list[Waiting]]] = []  # made whole by the mempool
        self._relay = ProposalRelay(network, own, fallback_max_s=relay_max_s)
        self._votes = VoteRelay(network, own)
        self._send, self._inbox = trio.open_memory_channel[
            tuple[bytes, InboundMessage] | None](INBOX_MESSAGES)
        self._queued_bytes = 0
        self._nudged = False
        self._seen = BoundedSet(SEEN_MESSAGES)
        self._next = NextHeight()  # the next height's checked messages
        self._height = 0
        self._validators: frozenset[bytes] = frozenset()
        self._next_validators: tuple[bytes, ...] = ()
        self._proposer: Callable[[int], bytes] = lambda round_: b""
        self._proposal_rounds: set[int] = set()
        self.dropped = 0  # peer messages dropped because the queue was full

    @property
    def pending_blocks(self) -> int:
        """Proposed blocks waiting for transactions."""
        return len(self._fetcher)

    @property
    def holding(self) -> bool:
        """Whether a proposed block waits for the gossip inbox's progress."""
        return self._fetcher.holding

    # from other tasks (never block) ----------------------------------------------------

    def expects(self, peer_id: bytes, block_hash: bytes) -> bool:
        """Whether transactions of ``block_hash`` were asked of ``peer_id``."""
        return self._fetcher.expects(peer_id, block_hash)

    def offer(self, peer_id: bytes, msg: InboundMessage) -> None:
        """Queue a peer's message for the driver task (dropped if the queue is full, a copy
        was handled already, or it answers nothing asked)."""
        if isinstance(msg, BlockTxs):
            if not self.expects(peer_id, msg.block_hash):
                return
        else:
            key = blake2b256(msg.proposal if isinstance(msg, ConsensusProposal) else msg.vote)
            if key in self._seen:
                if isinstance(msg, ConsensusProposal):
                    self._copy(key, peer_id, msg)
                else:
                    self._votes.holds(key, peer_id)
                return
        size = _size(msg)
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

    async def next(self, deadline: float) -> tuple[bytes, InboundMessage] | None:
        """The next queued message; None at ``deadline`` (trio clock) or when nudged.
        Meanwhile, fetches that are late go to the next source and relays that are due
        are sent."""
        item: tuple[bytes, InboundMessage] | None = None
        with trio.move_on_at(min(deadline, self._fetcher.deadline(), self._relay.deadline(),
                                 self._votes.deadline())):
            item = await self._inbox.receive()
            if item is None:
                self._nudged = False
        if item is not None:
            self._queued_bytes -= _size(item[1])
        now = trio.current_time()
        self._whole.extend(self._fetcher.tick(now))
        self._relay.tick(now)
        self._votes.tick(now)
        return item

    async def completed(self) -> list[Checked]:
        """The events of proposals whose blocks the mempool made whole (their transactions
        were waited for from the gossip inbox), each block checked."""
        checked: list[Checked] = []
        while self._whole:
            block, waiting = self._whole.pop(0)
            checked += await self._block_whole(block, waiting)
        return checked

    def mark_own(self, signed: bytes) -> None:
        """Remember a message this node signed, so peers' copies of it are ignored."""
        self._seen.add(blake2b256(signed))

    def holders(self, proposal: Proposal) -> frozenset[bytes]:
        """The peers known to hold ``proposal`` (they need not be sent it again)."""
        return self._relay.holders(proposal)

    def enter(self, height: int, validators: tuple[bytes, ...],
              proposer: Callable[[int], bytes], next_validators: tuple[bytes, ...]
              ) -> list[tuple[bytes, ConsensusMessage]]:
        """Check messages for ``height`` from now on (``proposer(round)`` names each round's
        proposer; ``next_validators`` are the authorities of ``height + 1``, whose
        messages are kept); returns the messages kept for it, to :meth:`check` now."""
        self._height = height
        self._validators = frozenset(validators)
        self._next_validators = next_validators
        self._proposer = proposer
        self._proposal_rounds = set()
        self._fetcher.clear()
        self._whole.clear()
        self._relay.enter(height, validators)
        self._votes.enter(height, validators)
        return self._next.take()

    async def check(self, peer_id: bytes, msg: InboundMessage) -> list[Checked]:
        """Check a peer's message (module doc); the events for the machine."""
        if isinstance(msg, ConsensusVote):
            checked = self._check_vote(peer_id, msg)
            return [] if checked is None else [checked]
        if isinstance(msg, BlockTxs):
            whole = self._fetcher.on_txs(peer_id, msg)
            return [] if whole is None else await self._block_whole(*whole)
        return await self._check_proposal(peer_id, msg)

    def _this_height(self, peer_id: bytes, msg: ConsensusMessage, signed: Vote | Proposal
                     ) -> bool:
        """True for this height; keeps a message of the next height for later if its
        signer is an authority there (the round's proposer, for a proposal) and its
        signature holds (else its sender is charged as for this height's)."""
        if signed.height != self._height + 1:
            return signed.height == self._height
        penalize = self._network.penalize_peer
        next_ = self._next_validators
        if isinstance(signed, Vote):
            signer, allowed = signed.validator, signed.validator in next_
        else:
            signer = signed.proposer
            allowed = bool(next_) and signer == next_[(signed.height + signed.round) % len(next_)]
        if not allowed:
            penalize(peer_id, score.INVALID_MESSAGE,
                     "consensus message of the next height: not from its authority")
            return False
        if (self._next.has_vote(signer, signed.round, int(signed.type))
                if isinstance(signed, Vote) else self._next.has_proposal(signed.round)):
            return False  # a copy (relayed by several peers): kept once, checked once
        try:
            signed.verify(self._chain.chain_id)
        except BadSignatureError as exc:
            penalize(peer_id, score.BAD_SIGNATURE, f"consensus message: {exc}")
            return False
        self._votes.ahead(signer)
        self._network.peer_committed(peer_id, self._height)  # it relays only its own height's
        if isinstance(signed, Vote):
            self._next.keep_vote(signer, signed.round, int(signed.type), (peer_id, msg))
        else:
            self._next.keep_proposal(signed.round, (peer_id, msg))
        return False

    def _check_vote(self, peer_id: bytes, msg: ConsensusVote) -> Checked | None:
        penalize = self._network.penalize_peer
        try:
            vote = decode_vote(msg.vote)
        except MalformedVoteError as exc:
            penalize(peer_id, score.INVALID_MESSAGE, f"consensus vote: {exc}")
            return None
        key = blake2b256(msg.vote)
        if key in self._seen:
            self._votes.holds(key, peer_id)  # a copy queued before the first was checked
            return None
        if not self._this_height(peer_id, msg, vote):
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
        if not vote.is_nil:  # its signer holds the proposal of that block in that round
            self._relay.holds(vote.round, vote.block_hash, vote.validator)
        self._votes.relay(key, msg, vote, peer_id)
        return Checked(peer_id, VoteReceived(vote))

    def _copy(self, key: bytes, peer_id: bytes, msg: ConsensusProposal) -> None:
        """A copy of a proposal handled already: its sender holds it, and may serve its
        transactions."""
        proposal = decode_proposal(msg.proposal)  # the same bytes passed every check
        if proposal.height == self._height:
            self._relay.holds(proposal.round, proposal.block_hash, peer_id)
            self._fetcher.add_source(key, peer_id, msg)

    def _forget(self, waiting: Waiting) -> None:
        """A proposal given up before its block was whole: a copy may be checked again."""
        self._seen.discard(waiting.key)
        self._proposal_rounds.discard(waiting.proposal.round)

    async def _check_proposal(self, peer_id: bytes, msg: ConsensusProposal) -> list[Checked]:
        penalize = self._network.penalize_peer
        try:
            proposal = decode_proposal(msg.proposal)
            header = decode_header(msg.header)
            last_commit = decode_commit(msg.last_commit) if msg.last_commit else None
        except (MalformedVoteError, MalformedBlockError) as exc:
            penalize(peer_id, score.INVALID_MESSAGE, f"consensus proposal: {exc}")
            return []
        key = blake2b256(msg.proposal)
        if key in self._seen:
            self._copy(key, peer_id, msg)
            return []
        if not self._this_height(peer_id, msg, proposal):
            return []
        if proposal.proposer != self._proposer(proposal.round):
            penalize(peer_id, score.INVALID_MESSAGE,
                     "consensus proposal: not from the round's proposer")
            return []
        if proposal.round in self._proposal_rounds:
            return []  # the proposer equivocates, or a relayer lags: the first one stands
        try:
            proposal.verify(self._chain.chain_id)
        except BadSignatureError as exc:
            penalize(peer_id, score.BAD_SIGNATURE, f"consensus proposal: {exc}")
            return []
        wrong = check_compact(msg, header, last_commit, proposal.block_hash)
        if wrong is not None:
            penalize(peer_id, score.INVALID_MESSAGE, f"consensus proposal: {wrong}")
            return []
        self._seen.add(key)
        self._proposal_rounds.add(proposal.round)
        waiting = Waiting(peer_id, msg, proposal, key)
        if self._known_block(proposal.block_hash):
            return self._verdict([waiting], True, None)
        reason = None
        if header.height != proposal.height:
            reason = "the block is of another height"
        elif proposal.pol_round == NO_ROUND and header.proposer != proposal.proposer:
            reason = "a new block names another proposer"  # a re-proposal keeps its maker
        if reason is not None:
            _log_invalid(proposal, reason)
            return self._verdict([waiting], False, None)
        try:
            block = self._fetcher.fill(proposal.block_hash, waiting, last_commit)
        except MalformedBlockError as exc:
            penalize(peer_id, score.INVALID_MESSAGE, f"consensus proposal: {exc}")
            self._forget(waiting)
            return []
        return [] if block is None else await self._block_whole(block, [waiting])

    async def _block_whole(self, block: Block, waiting: list[Waiting]) -> list[Checked]:
        """Check a proposed block now whole; the events of the proposals waiting for it."""
        built: BuiltBlock | None = None
        reason = None
        try:
            built = await self._blocks.check_proposal(block)
        except InvalidBlockError as exc:
            reason = str(exc)
        if built is None and reason is not None:
            _log_invalid(waiting[0].proposal, reason)
        return self._verdict(waiting, built is not None, built)

    def _verdict(self, waiting: list[Waiting], valid: bool, built: BuiltBlock | None
                 ) -> list[Checked]:
        """The machine events of proposals with a verdict on their block; valid ones are
        relayed. (``built`` goes with the first: the driver holds it once.)"""
        checked = []
        for w in waiting:
            if w.proposal.height != self._height:
                continue  # completed after the height moved on
            if valid:
                self._relay.relay(w.msg, w.proposal, w.peer_id)
            checked.append(Checked(w.peer_id, ProposalReceived(w.proposal, valid), built))
            built = None
        return checked


def _log_invalid(proposal: Proposal, reason: str) -> None:
    log.info("proposed_block_invalid", height=proposal.height, round=proposal.round,
             proposer=proposal.proposer.hex()[:16], reason=reason)
