"""Serving and routing a compact block's transactions: the reactor for
:class:`~.messages.GetBlockTxs` and :class:`~.messages.BlockTxs`.

A request is answered from whatever holds the block, asked in order (``lookups``: the
blocks consensus holds at the height being decided, then the chain's committed blocks, their
transactions served as stored, undecoded), split at :data:`ANSWER_BYTES` per message; a
block held nowhere is answered "not held" (no indexes), so the asker turns to its next
source at once.

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
of that block from it, so each taker asks its next source at once. At most
:data:`ASKS_PER_PEER` unanswered requests are remembered per peer (the oldest are
forgotten), none once the peer is gone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..chain.chain import Chain
from ..p2p import score
from ..p2p.messages import MAX_IDS_PER_MESSAGE
from ..p2p.peer import Peer
from .messages import BlockTxs, GetBlockTxs

KINDS = (GetBlockTxs, BlockTxs)
ANSWER_BYTES = 1024 * 1024  # transaction bytes in one BlockTxs; more are split
ASKS_PER_PEER = 64  # unanswered requests remembered per peer; beyond, the oldest go

TxsLookup = Callable[[bytes], Sequence[bytes] | None]  # block hash -> its raw txs, if held
Send = Callable[[bytes, GetBlockTxs], bool]  # (peer id, request) -> False: not connected


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
    left: set[int]  # indexes not answered yet


class Asks:
    """The requests for blocks' transactions sent and not yet answered (module doc)."""

    def __init__(self, router: Network) -> None:
        self._router = router
        self._asks: dict[bytes, deque[_Ask]] = {}  # peer id -> its requests, oldest first

    def sender(self, taker: str) -> Send:
        """How ``taker`` (its name in :class:`BlockTxsReactor`'s ``takers``) sends a
        request: ``send(peer_id, request)``, False if the peer is not connected."""

        def send(peer_id: bytes, msg: GetBlockTxs) -> bool:
            peer = self._router.get(peer_id)
            if peer is None:
                return False
            asks = self._asks.setdefault(peer_id, deque(maxlen=ASKS_PER_PEER))
            ask = _Ask(msg.block_hash, taker, set(msg.indexes))
            asks.append(ask)  # before an answer can come
            if peer.send(msg):
                return True
            asks.remove(ask)
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
        if len(msg.indexes) != len(msg.txs):
            wrong = "as many indexes as transactions are needed"
        else:
            for index, raw in zip(msg.indexes, msg.txs, strict=True):
                ask = next((a for a in mine if index in a.left), None)
                if ask is None:
                    wrong = f"index {index} was not asked for"
                    break
                ask.left.discard(index)
                indexes, txs = parts.setdefault(ask.taker, ([], []))
                indexes.append(index)
                txs.append(raw)
        if wrong is not None:
            self._router.penalize(peer, score.INVALID_MESSAGE, f"block txs: {wrong}")
            self._forget(peer.node_id, mine)
            not_held = BlockTxs(msg.block_hash, [], [])
            return [(taker, not_held) for taker in dict.fromkeys(a.taker for a in mine)]
        self._forget(peer.node_id, [ask for ask in mine if not ask.left])
        if len(parts) == 1:
            return [(next(iter(parts)), msg)]  # all for one taker: as it came
        return [(taker, BlockTxs(msg.block_hash, indexes, txs))
                for taker, (indexes, txs) in parts.items()]

    def disconnected(self, peer_id: bytes) -> None:
        """Forget the requests sent to ``peer_id``."""
        self._asks.pop(peer_id, None)

    def _forget(self, peer_id: bytes, done: list[_Ask]) -> None:
        if not done:
            return
        asks = self._asks[peer_id]
        for ask in done:
            asks.remove(ask)
        if not asks:
            del self._asks[peer_id]


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
    to the ``takers`` (by the names they send under, :meth:`Asks.sender`) that asked."""

    def __init__(self, lookups: Sequence[TxsLookup], asks: Asks,
                 takers: Mapping[str, Taker]) -> None:
        self._lookups = lookups
        self._asks = asks
        self._takers = takers

    async def receive(self, peer: Peer, msg: Any) -> None:
        match msg:
            case GetBlockTxs():
                for answer in serve(self._lookups, msg):
                    peer.send(answer)
            case BlockTxs():
                for taker, part in self._asks.route(peer, msg):
                    await self._takers[taker].receive(peer, part)

    def connected(self, peer: Peer) -> None:
        pass

    def disconnected(self, peer: Peer) -> None:
        self._asks.disconnected(peer.node_id)


def serve(lookups: Sequence[TxsLookup], msg: GetBlockTxs) -> list[BlockTxs]:
    """The answers to ``msg`` from the first lookup that holds the block."""
    for lookup in lookups:
        raws = lookup(msg.block_hash)
        if raws is not None:
            return answer_txs(msg.block_hash, raws, msg.indexes)
    return answer_txs(msg.block_hash, None, msg.indexes)


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
