"""Compact proposals: a proposed block travels without its transactions' bytes.

A :class:`~iomtnode.p2p.messages.ConsensusProposal` carries the signed proposal, the header
of the block it names, the ids of the block's transactions and the parent's certificate
(:func:`compact_proposal`). Gossip put the transactions in every mempool already, so the
receiver fills them in by id (:class:`TxFetcher`; the mempool holds the exact signed
transaction, its signature verified once). It asks for the ones it lacks with
``GetProposalTxs`` (block hash and indexes, at most :data:`MAX_IDS_PER_MESSAGE` a message)
from a peer that sent it the proposal; a node that holds a proposed block (its proposer,
every node that checked it; its head once committed) answers with ``ProposalTxs``
(:func:`answer_txs`, split at :data:`ANSWER_BYTES`). The block is then assembled with
:func:`~iomtnode.core.block.assemble_block`, which checks the transaction count and root
against the header, and checked like any proposed block.

Bounds and failures of a fetch:

- at most :data:`PENDING_BLOCKS` blocks wait for transactions; beyond, the oldest is dropped;
- the source asked is replaced by the next peer that sent the same compact proposal when it
  has not answered in full within :data:`ASK_TIMEOUT_S`, answers that it does not hold the
  block, or sends anything but the transactions asked for (that costs it
  :data:`~iomtnode.p2p.score.INVALID_MESSAGE`);
- a transaction missing from the mempool is often only queued for admission (a peer
  pushed it just before the proposal, and a loaded node admits behind its reader): while
  the gossip inbox holds transactions received before the proposal, the fetch waits, at
  most :data:`HOLD_S`, until they are admitted, then looks again and asks only for what
  is still missing (asking would make a peer send, and this node decode, every one twice);
- after :data:`PENDING_TIMEOUT_S` the block is dropped: the round's timeouts decided without
  it (with no proposal, the machine prevotes nil), and a copy sent again is checked anew;
- mempool copies that do not give the header's root (the same id, other signature bytes)
  are fetched again; when fetched transactions do not give it either, the ids were wrong:
  the peer whose compact proposal was used is penalised and the proposal dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog
import trio

from ..core.block import ZERO_HASH, Block, Commit, Header, MalformedBlockError, assemble_block
from ..core.crypto import blake2b256
from ..core.tx import MalformedTxError, SignedTx, decode_tx
from ..p2p import score
from ..p2p.messages import MAX_IDS_PER_MESSAGE
from .messages import (
    ConsensusProposal,
    ConsensusVote,
    GetProposalTxs,
    ProposalTxs,
)
from .votes import Proposal

log = structlog.get_logger(__name__)

PENDING_BLOCKS = 8  # proposed blocks waiting for transactions; beyond, the oldest goes
ASK_TIMEOUT_S = 1.0  # a source that has not answered in full by then: ask the next one
PENDING_TIMEOUT_S = 5.0  # a block still incomplete by then is dropped
ANSWER_BYTES = 1024 * 1024  # transaction bytes in one ProposalTxs; more are split
HOLD_S = 0.25  # how long missing transactions may be waited for from the gossip inbox


class InboxProgress(Protocol):
    """How far this node has admitted the transactions peers pushed to it
    (:class:`~iomtnode.admission.gossip.TxGossip`)."""

    def mark(self) -> int: ...

    def admitted(self, mark: int) -> bool: ...


class FetchNetwork(Protocol):
    """What fetching and relaying need of the p2p layer."""

    def broadcast_consensus(self, msg: ConsensusProposal | ConsensusVote,
                            exclude: frozenset[bytes] = frozenset()) -> None: ...

    def send_consensus(self, peer_id: bytes, msg: GetProposalTxs | ProposalTxs) -> bool: ...

    def penalize_peer(self, peer_id: bytes, points: int, reason: str) -> None: ...


def compact_proposal(signed: bytes, block: Block) -> ConsensusProposal:
    """The message for the signed proposal ``signed`` of ``block``."""
    return ConsensusProposal(signed, block.header_bytes, [tx.id for tx in block.txs],
                             block.last_commit.encode() if block.last_commit else b"")


def answer_txs(block_hash: bytes, block: Block | None, indexes: list[int]
               ) -> list[ProposalTxs]:
    """The answers to ``GetProposalTxs(block_hash, indexes)`` from a node holding ``block``
    (None: it does not): the transactions asked for, in order, at most
    :data:`ANSWER_BYTES` of them per message; indexes past the block's end are skipped."""
    if block is None or block.hash != block_hash:
        return [ProposalTxs(block_hash, [], [])]
    answers: list[ProposalTxs] = []
    at: list[int] = []
    raws: list[bytes] = []
    size = 0
    for index in indexes:
        if index >= len(block.txs):
            continue
        raw = block.txs[index].raw
        if raws and (size + len(raw) > ANSWER_BYTES or len(raws) == MAX_IDS_PER_MESSAGE):
            answers.append(ProposalTxs(block_hash, at, raws))
            at, raws, size = [], [], 0
        at.append(index)
        raws.append(raw)
        size += len(raw)
    if raws:
        answers.append(ProposalTxs(block_hash, at, raws))
    return answers or [ProposalTxs(block_hash, [], [])]


def check_compact(msg: ConsensusProposal, header: Header, last_commit: Commit | None,
                  block_hash: bytes) -> str | None:
    """What is wrong with a compact proposal's parts, if anything (the transactions'
    root is checked once they are at hand)."""
    if blake2b256(msg.header) != block_hash:
        return "the block is not the one signed"
    if header.tx_count != len(msg.tx_ids):
        return f"header says {header.tx_count} txs, {len(msg.tx_ids)} ids"
    last_hash = last_commit.hash if last_commit is not None else ZERO_HASH
    if last_hash != header.last_commit_hash or (
            last_commit is not None and last_commit.height != header.height - 1):
        return "the parent certificate is not the header's"
    return None


@dataclass(frozen=True, slots=True)
class Waiting:
    """A proposal whose signature and header passed, waiting for its block."""

    peer_id: bytes  # the peer it came from
    msg: ConsensusProposal
    proposal: Proposal
    key: bytes  # hash of the signed proposal (the inbound seen-cache key)


@dataclass(slots=True)
class _Fetch:
    msg: ConsensusProposal  # the compact proposal whose ids are used
    origin: bytes  # the peer it came from
    last_commit: Commit | None
    txs: list[SignedTx | None]
    waiting: list[Waiting]
    expires: float
    from_mempool: bool  # some transactions came from the mempool
    sources: list[bytes] = field(default_factory=list)  # peers that sent this compact form
    tried: set[bytes] = field(default_factory=set)
    asked: bytes | None = None
    asked_for: set[int] = field(default_factory=set)
    ask_until: float = math.inf
    hold_mark: int | None = None  # waiting for the gossip inbox to pass this mark...
    hold_until: float = math.inf  # ... until then at most


class TxFetcher:
    """Fill proposed blocks' transactions from the mempool (``lookup(id)``) and fetch the
    missing ones from peers (module doc). ``on_drop(waiting)`` is told of each proposal
    given up (timed out, evicted, or with wrong ids). With ``inbox``, missing transactions
    are first waited for from the gossip inbox (module doc)."""

    def __init__(self, lookup: Callable[[bytes], SignedTx | None], network: FetchNetwork,
                 on_drop: Callable[[Waiting], None], inbox: InboxProgress | None = None
                 ) -> None:
        self._lookup = lookup
        self._network = network
        self._on_drop = on_drop
        self._inbox = inbox
        self._fetches: dict[bytes, _Fetch] = {}  # block hash -> fetch, oldest first
        self._keys: dict[bytes, bytes] = {}  # proposal key -> block hash

    def __len__(self) -> int:
        return len(self._fetches)

    def fill(self, waiting: Waiting, last_commit: Commit | None) -> Block | None:
        """The block of ``waiting`` if the mempool holds all its transactions (or raises
        MalformedBlockError: count or certificate not those of the header); else None,
        and the missing ones are being fetched."""
        block_hash = waiting.proposal.block_hash
        fetch = self._fetches.get(block_hash)
        if fetch is not None:  # another proposal of a block being fetched (re-proposal)
            fetch.waiting.append(waiting)
            self._keys[waiting.key] = block_hash
            self.add_source(waiting.key, waiting.peer_id, waiting.msg)
            return None
        msg = waiting.msg
        txs = [self._lookup(tx_id) for tx_id in msg.tx_ids]
        other_bytes = False
        if all(tx is not None for tx in txs):
            try:
                return assemble_block(msg.header, tuple(t for t in txs if t is not None),
                                      last_commit)
            except MalformedBlockError:
                if not txs:
                    raise
                txs = [None] * len(txs)  # copies with other bytes: fetch them all
                other_bytes = True  # ... at once: the inbox cannot help
        now = trio.current_time()
        fetch = _Fetch(msg, waiting.peer_id, last_commit, txs, [waiting],
                       now + PENDING_TIMEOUT_S, any(tx is not None for tx in txs),
                       [waiting.peer_id])
        while len(self._fetches) >= PENDING_BLOCKS:
            self._drop(next(iter(self._fetches)), "too many pending")
        self._fetches[block_hash] = fetch
        self._keys[waiting.key] = block_hash
        log.debug("proposal_txs_missing", height=waiting.proposal.height,
                  round=waiting.proposal.round, missing=txs.count(None), txs=len(txs))
        inbox = self._inbox
        if inbox is not None and not other_bytes and not inbox.admitted(mark := inbox.mark()):
            fetch.hold_mark, fetch.hold_until = mark, now + HOLD_S
        else:
            self._ask(block_hash, fetch, now)
        return None

    @property
    def holding(self) -> bool:
        """Whether a fetch waits for the gossip inbox."""
        return any(f.hold_mark is not None for f in self._fetches.values())

    def _release(self, block_hash: bytes, fetch: _Fetch, now: float
                 ) -> tuple[Block, list[Waiting]] | None:
        """End a fetch's wait for the inbox: take what the mempool now holds; the block if
        that makes it whole, else ask for the rest."""
        fetch.hold_mark, fetch.hold_until = None, math.inf
        for index, tx_id in enumerate(fetch.msg.tx_ids):
            if fetch.txs[index] is None and (tx := self._lookup(tx_id)) is not None:
                fetch.txs[index] = tx
                fetch.from_mempool = True
        if any(tx is None for tx in fetch.txs):
            self._ask(block_hash, fetch, now)
            return None
        block = self._complete(block_hash, fetch, now)
        return None if block is None else (block, fetch.waiting)

    def pending(self, key: bytes) -> bool:
        """Whether the proposal with hash ``key`` waits for transactions."""
        return key in self._keys

    def expects(self, peer_id: bytes, block_hash: bytes) -> bool:
        """Whether transactions of ``block_hash`` were asked of ``peer_id``."""
        fetch = self._fetches.get(block_hash)
        return fetch is not None and fetch.asked == peer_id

    def add_source(self, key: bytes, peer_id: bytes, msg: ConsensusProposal) -> None:
        """``peer_id`` sent a copy of the pending proposal ``key``: ask it too, if it sent
        the same ids and nobody is being asked."""
        fetch = self._fetches.get(self._keys.get(key, b""))
        if fetch is None or peer_id in fetch.sources or msg.tx_ids != fetch.msg.tx_ids or (
                msg.last_commit != fetch.msg.last_commit):
            return
        fetch.sources.append(peer_id)
        if fetch.asked is None and fetch.hold_mark is None:
            self._ask(fetch.waiting[0].proposal.block_hash, fetch, trio.current_time())

    def on_txs(self, peer_id: bytes, msg: ProposalTxs) -> tuple[Block, list[Waiting]] | None:
        """Take an answer; the block and the proposals waiting for it once it is whole."""
        fetch = self._fetches.get(msg.block_hash)
        if fetch is None or fetch.asked != peer_id:
            return None  # late (answered by another, or given up): harmless
        now = trio.current_time()
        if not msg.indexes:  # it does not hold the block
            self._ask(msg.block_hash, fetch, now)
            return None
        wrong = self._take(fetch, msg)
        if wrong is not None:
            self._network.penalize_peer(peer_id, score.INVALID_MESSAGE,
                                        f"proposal txs: {wrong}")
            self._ask(msg.block_hash, fetch, now)
            return None
        if fetch.asked_for:
            return None  # more answers to come
        block = self._complete(msg.block_hash, fetch, now)
        if block is None:
            return None
        log.debug("proposal_txs_fetched", height=block.height, txs=len(block.txs),
                  source=peer_id.hex()[:16])
        return block, fetch.waiting

    def _complete(self, block_hash: bytes, fetch: _Fetch, now: float) -> Block | None:
        """The block of a fetch whose transactions are all at hand (the fetch is done);
        None when mempool copies had other bytes (all are fetched now) or, with every
        transaction fetched, the ids were not the block's (the proposal's sender is
        penalised and the block dropped)."""
        txs = tuple(t for t in fetch.txs if t is not None)
        try:
            block = assemble_block(fetch.msg.header, txs, fetch.last_commit)
        except MalformedBlockError as exc:
            if fetch.from_mempool:  # a mempool copy has other bytes: fetch them all
                fetch.from_mempool = False
                fetch.txs = [None] * len(fetch.txs)
                fetch.tried.clear()
                self._ask(block_hash, fetch, now)
                return None
            self._network.penalize_peer(fetch.origin, score.INVALID_MESSAGE,
                                        f"consensus proposal: ids not those of the block: {exc}")
            self._drop(block_hash, "ids not those of the block")
            return None
        self._forget(block_hash)
        return block

    def _take(self, fetch: _Fetch, msg: ProposalTxs) -> str | None:
        """Fill in the answered transactions; what is wrong with the answer, if anything."""
        if len(msg.indexes) != len(msg.txs):
            return "as many indexes as transactions are needed"
        for index, raw in zip(msg.indexes, msg.txs, strict=True):
            if index not in fetch.asked_for:
                return f"index {index} was not asked for"
            try:
                tx = decode_tx(raw)
            except MalformedTxError as exc:
                return str(exc)
            if tx.id != fetch.msg.tx_ids[index]:
                return f"the transaction at {index} is not the one asked for"
            fetch.txs[index] = tx
            fetch.asked_for.discard(index)
        return None

    def _ask(self, block_hash: bytes, fetch: _Fetch, now: float) -> None:
        """Ask the next untried source for every missing transaction."""
        fetch.asked, fetch.asked_for, fetch.ask_until = None, set(), math.inf
        missing = [i for i, tx in enumerate(fetch.txs) if tx is None]
        for peer_id in fetch.sources:
            if peer_id in fetch.tried:
                continue
            fetch.tried.add(peer_id)
            fetch.asked, fetch.asked_for = peer_id, set(missing)  # before an answer can come
            fetch.ask_until = now + ASK_TIMEOUT_S
            if all(self._network.send_consensus(
                    peer_id, GetProposalTxs(block_hash, missing[i:i + MAX_IDS_PER_MESSAGE]))
                    for i in range(0, len(missing), MAX_IDS_PER_MESSAGE)):
                return
            fetch.asked, fetch.asked_for, fetch.ask_until = None, set(), math.inf

    def deadline(self) -> float:
        """When :meth:`tick` has something to do (trio clock)."""
        return min((min(f.expires, f.ask_until, f.hold_until) for f in self._fetches.values()),
                   default=math.inf)

    def tick(self, now: float) -> list[tuple[Block, list[Waiting]]]:
        """Drop the blocks waited for too long; ask the next source where one is slow; end
        the waits for the inbox that are over. Returns the blocks that the mempool made
        whole meanwhile, each with the proposals waiting for it."""
        whole = []
        for block_hash, fetch in list(self._fetches.items()):
            if now >= fetch.expires:
                self._drop(block_hash, "timed out")
            elif fetch.hold_mark is not None:
                assert self._inbox is not None, "only an inbox makes a fetch wait"
                over = now >= fetch.hold_until or self._inbox.admitted(fetch.hold_mark)
                if over and (done := self._release(block_hash, fetch, now)) is not None:
                    whole.append(done)
            elif now >= fetch.ask_until:
                self._ask(block_hash, fetch, now)
        return whole

    def clear(self) -> None:
        """Forget every fetch (a new height)."""
        self._fetches.clear()
        self._keys.clear()

    def _forget(self, block_hash: bytes) -> _Fetch:
        fetch = self._fetches.pop(block_hash)
        for waiting in fetch.waiting:
            self._keys.pop(waiting.key, None)
        return fetch

    def _drop(self, block_hash: bytes, why: str) -> None:
        fetch = self._forget(block_hash)
        first = fetch.waiting[0].proposal
        log.info("proposal_txs_given_up", height=first.height, round=first.round, reason=why,
                 missing=fetch.txs.count(None), sources=len(fetch.sources))
        for waiting in fetch.waiting:
            self._on_drop(waiting)
