"""Serving and routing a compact block's transactions: the reactor for
:class:`~.messages.GetBlockTxs` and :class:`~.messages.BlockTxs`.

A request is answered from whatever holds the block, asked in order (``lookups``: the
blocks consensus holds at the height being decided, then the chain's committed blocks, their
transactions served as stored, undecoded), split at :data:`ANSWER_BYTES` per message; a
block held nowhere is answered "not held" (no indexes), so the asker turns to its next
source at once. A request's indexes must be strictly increasing (no index twice) and, for a
block held here, below its count of transactions: so the answer is at most the block's
transactions, once each. A request that breaks either rule is not answered and costs its
sender :data:`~iomtnode.p2p.score.INVALID_MESSAGE` (``block_txs_request_refused``); how
often a peer may ask at all is the router's rate (:data:`RATES`).

Consensus (proposals) and sync (relayed blocks) may both ask one peer for the same block
(a follower that gets a proposal, then the committed compact block of that height, from
the same peer). So their requests go out through :class:`Asks`, which remembers, per peer
and in the order sent, which taker asked for which indexes of which block, until they are
answered; a peer answers its requests in order. An answer's transactions go, index by
index, to the oldest request still waiting for that index (each taker gets only what it
asked, once per request); a "not held" answers the oldest request for that block. An
answer nobody asked that peer for is dropped (late, or its request forgotten: harmless);
one with an index that no request for that block is waiting for costs the peer
:data:`~iomtnode.p2p.score.INVALID_MESSAGE` and counts as "not held" for every request
of that block from it, so each taker asks its next source at once. A request is
remembered as a bitmap of the indexes it still waits for (an eighth of a byte per
transaction in the span it asks for); at most :data:`ASKS_PER_PEER` unanswered requests
and :data:`ASK_BYTES_PER_PEER` bytes of bitmaps are remembered per peer (beyond, the
oldest are forgotten), none once the peer is gone. A peer answers a forgotten request
in turn too, so the blocks of its last :data:`FORGOTTEN_PER_PEER` forgotten requests are
remembered, and indexes of those blocks that no request waits for are dropped without a
charge.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

from ..chain.chain import Chain
from ..core.block import MAX_IDS_PER_MESSAGE
from ..p2p import score
from ..p2p.peer import Peer
from .messages import GET_BLOCK_TXS_RATE, BlockTxs, GetBlockTxs

KINDS = (GetBlockTxs, BlockTxs)
RATES = {GetBlockTxs: GET_BLOCK_TXS_RATE}  # per peer (the request kinds among KINDS)
ANSWER_BYTES = 1024 * 1024  # transaction bytes in one BlockTxs; more are split
ASKS_PER_PEER = 64  # unanswered requests remembered per peer; beyond, the oldest go
ASK_BYTES_PER_PEER = 64 * 1024  # bytes of requests' bitmaps per peer; beyond, the oldest go
FORGOTTEN_PER_PEER = 64  # block hashes of requests forgotten unanswered, per peer

TxsLookup = Callable[[bytes], Sequence[bytes] | None]  # block hash -> its raw txs, if held
Send = Callable[[bytes, GetBlockTxs], bool]  # (peer id, request) -> False: not connected
Penalize = Callable[[Peer, int, str], bool]  # :meth:`~iomtnode.p2p.router.Router.penalize`


class BadRequestError(ValueError):
    """A request for a block's transactions that is refused (its indexes break a rule)."""


class Taker(Protocol):
    """A reactor whose assembler asks peers for transactions (through :class:`Asks`)."""

    async def receive(self, peer: Peer, msg: Any) -> None: ...


class Network(Protocol):
    """What :class:`Asks` needs of the p2p router."""

    def get(self, node_id: bytes) -> Peer | None: ...

    def penalize(self, peer: Peer, points: int, reason: str) -> bool: ...


@dataclass(slots=True)
class _Ask:
    """A request sent and not yet answered in full."""

    block_hash: bytes
    taker: str
    first: int  # the lowest index asked
    bits: bytearray  # bit i set: index first + i is not answered yet
    left: int  # how many indexes are not answered yet

    @classmethod
    def of(cls, block_hash: bytes, taker: str, indexes: Sequence[int]) -> _Ask:
        first = min(indexes, default=0)
        span = max(indexes) - first + 1 if indexes else 0
        if span == len(indexes) == len(set(indexes)):  # a run: every index of the span
            whole, rest = divmod(span, 8)
            bits = bytearray(b"\xff" * whole + (bytes([(1 << rest) - 1]) if rest else b""))
            return cls(block_hash, taker, first, bits, span)
        bits = bytearray((span + 7) // 8)
        left = 0
        for index in indexes:
            at = index - first
            if not bits[at >> 3] >> (at & 7) & 1:
                bits[at >> 3] |= 1 << (at & 7)
                left += 1
        return cls(block_hash, taker, first, bits, left)

    def take(self, index: int) -> bool:
        """Whether it waits for ``index``; if so, no longer."""
        at = index - self.first
        if at < 0 or at >= len(self.bits) * 8 or not self.bits[at >> 3] >> (at & 7) & 1:
            return False
        self.bits[at >> 3] &= ~(1 << (at & 7))
        self.left -= 1
        return True


class Asks:
    """The requests for blocks' transactions sent and not yet answered (module doc)."""

    def __init__(self, router: Network) -> None:
        self._router = router
        self._asks: dict[bytes, deque[_Ask]] = {}  # peer id -> its requests, oldest first
        self._bytes: dict[bytes, int] = {}  # peer id -> bytes of its requests' bitmaps
        # peer id -> the blocks of its requests forgotten unanswered (the last ones)
        self._forgotten: dict[bytes, dict[bytes, None]] = {}

    def sender(self, taker: str) -> Send:
        """How ``taker`` (its name in :class:`BlockTxsReactor`'s ``takers``) sends a
        request: ``send(peer_id, request)``, False if the peer is not connected."""

        def send(peer_id: bytes, msg: GetBlockTxs) -> bool:
            peer = self._router.get(peer_id)
            if peer is None:
                return False
            asks = self._asks.setdefault(peer_id, deque())
            ask = _Ask.of(msg.block_hash, taker, msg.indexes)
            asks.append(ask)  # before an answer can come
            size = self._bytes[peer_id] = self._bytes.get(peer_id, 0) + len(ask.bits)
            while len(asks) > ASKS_PER_PEER or (size > ASK_BYTES_PER_PEER and len(asks) > 1):
                old = asks.popleft()
                size = self._bytes[peer_id] = size - len(old.bits)
                forgotten = self._forgotten.setdefault(peer_id, {})
                forgotten.pop(old.block_hash, None)
                forgotten[old.block_hash] = None  # the newest last
                if len(forgotten) > FORGOTTEN_PER_PEER:
                    del forgotten[next(iter(forgotten))]
            if peer.send(msg):
                return True
            self._forget(peer_id, [ask])
            return False

        return send

    def route(self, peer: Peer, msg: BlockTxs) -> list[tuple[str, BlockTxs]]:
        """The takers ``peer``'s answer goes to, each with the part it asked for."""
        mine = [ask for ask in self._asks.get(peer.node_id, ()) if ask.block_hash == msg.block_hash]
        if not mine:
            return []  # late, or never asked: dropped
        if not msg.indexes:  # not held: the answer to the oldest request for the block
            self._forget(peer.node_id, mine[:1])
            return [(mine[0].taker, msg)]
        wrong = None
        parts: dict[str, tuple[list[int], list[bytes]]] = {}
        forgotten = msg.block_hash in self._forgotten.get(peer.node_id, ())
        skipped = False
        if len(msg.indexes) != len(msg.txs):
            wrong = "as many indexes as transactions are needed"
        else:
            for index, raw in zip(msg.indexes, msg.txs, strict=True):
                ask = next((a for a in mine if a.take(index)), None)
                if ask is None and forgotten:  # the answer to a forgotten request
                    skipped = True
                    continue
                if ask is None:
                    wrong = f"index {index} was not asked for"
                    break
                indexes, txs = parts.setdefault(ask.taker, ([], []))
                indexes.append(index)
                txs.append(raw)
        if wrong is not None:
            self._router.penalize(peer, score.INVALID_MESSAGE, f"block txs: {wrong}")
            self._forget(peer.node_id, mine)
            not_held = BlockTxs(msg.block_hash, [], [])
            return [(taker, not_held) for taker in dict.fromkeys(a.taker for a in mine)]
        self._forget(peer.node_id, [ask for ask in mine if ask.left <= 0])
        if len(parts) == 1 and not skipped:
            return [(next(iter(parts)), msg)]  # all for one taker: as it came
        return [(taker, BlockTxs(msg.block_hash, indexes, txs))
                for taker, (indexes, txs) in parts.items()]

    def disconnected(self, peer_id: bytes) -> None:
        """Forget the requests sent to ``peer_id``."""
        self._asks.pop(peer_id, None)
        self._bytes.pop(peer_id, None)
        self._forgotten.pop(peer_id, None)

    def _forget(self, peer_id: bytes, done: list[_Ask]) -> None:
        if not done:
            return
        asks = self._asks[peer_id]
        for ask in done:
            asks.remove(ask)
            self._bytes[peer_id] -= len(ask.bits)
        if not asks:
            del self._asks[peer_id], self._bytes[peer_id]


def chain_txs(chain: Chain) -> TxsLookup:
    """The lookup of committed blocks' transactions, as stored."""

    def lookup(block_hash: bytes) -> Sequence[bytes] | None:
        try:
            return chain.block_tx_bytes(block_hash)
        except KeyError:
            return None

    return lookup


class BlockTxsReactor:
    """Answers requests for a block's transactions from ``lookups`` and routes the answers
    to the ``takers`` (by the names they send under, :meth:`Asks.sender`) that asked; a
    refused request costs its sender through ``penalize``."""

    def __init__(self, lookups: Sequence[TxsLookup], asks: Asks,
                 takers: Mapping[str, Taker], penalize: Penalize) -> None:
        self._lookups = lookups
        self._asks = asks
        self._takers = takers
        self._penalize = penalize

    async def receive(self, peer: Peer, msg: Any) -> None:
        match msg:
            case GetBlockTxs():
                try:
                    answers = serve(self._lookups, msg)
                except BadRequestError as exc:
                    self._penalize(peer, score.INVALID_MESSAGE,
                                   f"block_txs_request_refused: {exc}")
                    return
                for answer in answers:
                    peer.send(answer)
            case BlockTxs():
                for taker, part in self._asks.route(peer, msg):
                    await self._takers[taker].receive(peer, part)

    def connected(self, peer: Peer) -> None:
        pass

    def disconnected(self, peer: Peer) -> None:
        self._asks.disconnected(peer.node_id)


def serve(lookups: Sequence[TxsLookup], msg: GetBlockTxs) -> list[BlockTxs]:
    """The answers to ``msg`` from the first lookup that holds the block. Raises
    :class:`BadRequestError` if its indexes are not strictly increasing (checked before any
    lookup) or reach past the end of the block held here."""
    indexes = msg.indexes
    if not all(map(operator.lt, indexes, islice(indexes, 1, None))):  # one pass, in C
        raise BadRequestError(f"{len(indexes)} indexes not strictly increasing "
                              f"(each index at most once, in order)")
    for lookup in lookups:
        raws = lookup(msg.block_hash)
        if raws is not None:
            if indexes and indexes[-1] >= len(raws):
                raise BadRequestError(f"index {indexes[-1]} past the block's {len(raws)} "
                                      f"transactions")
            return answer_txs(msg.block_hash, raws, indexes)
    return answer_txs(msg.block_hash, None, indexes)


def answer_txs(block_hash: bytes, raws: Sequence[bytes] | None, indexes: list[int],
               answer_bytes: int = ANSWER_BYTES) -> list[BlockTxs]:
    """The answers to ``GetBlockTxs(block_hash, indexes)`` from a node holding a block whose
    transactions are ``raws`` (None: it does not hold it): the transactions asked for, in
    order, at most ``answer_bytes`` of them per message; indexes past the block's end are
    skipped. No indexes at all in the one answer: the block is not held here."""
    if raws is None:
        return [BlockTxs(block_hash, [], [])]
    answers: list[BlockTxs] = []
    at: list[int] = []
    sent: list[bytes] = []
    size = 0
    for index in indexes:
        if index >= len(raws):
            continue
        raw = raws[index]
        if sent and (size + len(raw) > answer_bytes or len(sent) == MAX_IDS_PER_MESSAGE):
            answers.append(BlockTxs(block_hash, at, sent))
            at, sent, size = [], [], 0
        at.append(index)
        sent.append(raw)
        size += len(raw)
    if sent:
        answers.append(BlockTxs(block_hash, at, sent))
    return answers or [BlockTxs(block_hash, [], [])]
