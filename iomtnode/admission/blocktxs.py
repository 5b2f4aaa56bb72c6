"""Serving and routing a compact block's transactions: the reactor for
:class:`~.messages.GetBlockTxs` and :class:`~.messages.BlockTxs`.

A request is answered from whatever holds the block, asked in order (``lookups``: the
blocks consensus holds at the height being decided, then the chain's committed blocks, their
transactions served as stored, undecoded), split at :data:`ANSWER_BYTES` per message; a
block held nowhere is answered "not held" (no indexes), so the asker turns to its next
source at once. An answer goes to the assembler that asked that peer for that block
(``takers``: consensus's and sync's reactors); one nobody asked for is dropped (late, or
answered by another: harmless).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..chain.chain import Chain
from ..p2p.messages import MAX_IDS_PER_MESSAGE
from ..p2p.peer import Peer
from .messages import BlockTxs, GetBlockTxs

KINDS = (GetBlockTxs, BlockTxs)
ANSWER_BYTES = 1024 * 1024  # transaction bytes in one BlockTxs; more are split

TxsLookup = Callable[[bytes], Sequence[bytes] | None]  # block hash -> its raw txs, if held


class Taker(Protocol):
    """A reactor whose assembler asks peers for transactions."""

    def expects(self, peer_id: bytes, block_hash: bytes) -> bool:
        """Whether transactions of ``block_hash`` were asked of ``peer_id``."""

    async def receive(self, peer: Peer, msg: Any) -> None: ...


def chain_txs(chain: Chain) -> TxsLookup:
    """The lookup of committed blocks' transactions, as stored."""

    def lookup(block_hash: bytes) -> Sequence[bytes] | None:
        try:
            return chain.block_tx_bytes(block_hash)
        except KeyError:
            return None

    return lookup


class BlockTxsReactor:
    """Answers requests for a block's transactions and routes the answers (module doc)."""

    def __init__(self, lookups: Sequence[TxsLookup], takers: Sequence[Taker]) -> None:
        self._lookups = lookups
        self._takers = takers

    async def receive(self, peer: Peer, msg: Any) -> None:
        match msg:
            case GetBlockTxs():
                for answer in self.answer(msg):
                    peer.send(answer)
            case BlockTxs():
                for taker in self._takers:
                    if taker.expects(peer.node_id, msg.block_hash):
                        await taker.receive(peer, msg)
                        return

    def answer(self, msg: GetBlockTxs) -> list[BlockTxs]:
        """The answers to ``msg`` from the first lookup that holds the block."""
        for lookup in self._lookups:
            raws = lookup(msg.block_hash)
            if raws is not None:
                return answer_txs(msg.block_hash, raws, msg.indexes)
        return answer_txs(msg.block_hash, None, msg.indexes)

    def connected(self, peer: Peer) -> None:
        pass

    def disconnected(self, peer: Peer) -> None:
        pass


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
