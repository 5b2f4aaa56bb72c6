"""Relaying final blocks as compact blocks: header, transaction ids and certificates.

Peers already hold almost every transaction of a new block (gossip put them in their
mempools), so a block travels as its header, the ids of its transactions, its parent's
certificate and its own. The receiver fills the transactions in from its mempool, asks
the sender for the ones it lacks (``GetBlockTxs``), checks the block in full (signatures
it has not verified yet, state rules, certificates) and commits it; then it relays the
compact block to its other peers. A block that is not the next one is left to sync.

A node that gets a compact block is one that missed the block in consensus: usually one
that fell behind, whose gossip inbox still holds transactions pushed to it, among them
the block's. Asked for at once, the sender sends them again and this node decodes each
twice (in one traffic run at saturation, a node that had fallen behind received 205 KB/s
of blocks' transactions that way, beside 698 KB/s pushed to it). So while the inbox has
not handled what it had received when the compact block came, the missing transactions
are waited for there, at most :data:`INBOX_HOLD_S`, before the sender is asked for what
is still missing; unless more than :data:`INBOX_HOLD_TXS` are queued, which the inbox
could not admit in that time (the wait holds up this peer's other messages, and a node
that far behind needs the block now).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
import trio

from ..admission.mempool import Mempool
from ..chain.chain import Chain, InvalidBlockError
from ..chain.writer import ChainWriter
from ..core.block import (
    Block,
    Commit,
    MalformedBlockError,
    assemble_block,
    decode_commit,
    decode_header,
)
from ..core.crypto import blake2b256
from ..core.tx import MalformedTxError, SignedTx, decode_tx
from ..p2p import score
from .messages import BlockTxs, CompactBlock, GetBlockTxs

log = structlog.get_logger(__name__)

PENDING_BLOCKS = 8  # compact blocks waiting for their missing transactions
FETCH_TIMEOUT_S = 5.0  # after this a pending compact block is forgotten (sync takes over)
INBOX_HOLD_S = 0.25  # how long missing transactions may be waited for from the gossip inbox
INBOX_HOLD_TXS = 512  # ... if at most this many are queued there (~0.2 s of admission)


class InboxWait(Protocol):
    """How far this node has admitted the transactions peers pushed to it, how much is
    queued, and a wait for a mark (:class:`~iomtnode.admission.gossip.TxGossip`)."""

    def mark(self) -> int: ...

    def admitted(self, mark: int) -> bool: ...

    def backlog(self) -> int: ...

    async def wait_admitted(self, mark: int) -> None: ...


@dataclass
class _Pending:
    peer_id: bytes
    msg: CompactBlock
    txs: list[SignedTx | None]
    since: float


def compact(block: Block, commit: Commit) -> CompactBlock:
    return CompactBlock(block.header_bytes, [tx.id for tx in block.txs],
                        block.last_commit.encode() if block.last_commit else b"",
                        commit.encode())


class BlockRelay:
    def __init__(self, host: Any, chain: Chain, writer: ChainWriter, mempool: Mempool,
                 on_height: Any, *,
                 holders: Callable[[Block], Collection[bytes]] = lambda block: (),
                 inbox: InboxWait | None = None) -> None:
        self._host = host
        self._inbox = inbox
        self._holders = holders
        self._chain = chain
        self._writer = writer
        self._mempool = mempool
        self._on_height = on_height  # sync's saw_height(peer_id, height)
        self._pending: dict[bytes, _Pending] = {}

    def on_committed(self, block: Block, commit: Commit, source: bytes | None) -> None:
        """ChainWriter listener: relay every new head to every peer but its source and the
        authorities known to hold it: those whose precommits certify it and those whose
        votes for it consensus saw here (``holders``; a vote for a block means its proposal
        was at hand). One that lost it meanwhile syncs it. Of a synced range only the last
        block is relayed: peers ahead of it do not need it, peers behind it sync."""
        if block.height == self._chain.height:
            skip = {signer for signer, _ in commit.signatures}
            skip.update(self._holders(block))
            if source is not None:
                skip.add(source)
            self._host.broadcast(compact(block, commit), exclude=skip)

    async def on_compact(self, peer: Any, msg: CompactBlock) -> None:
        try:
            header = decode_header(msg.header)
        except MalformedBlockError as exc:
            self._host.penalize(peer, score.INVALID_MESSAGE, f"compact block header: {exc}")
            return
        self._on_height(peer.node_id, header.height)
        if header.height != self._chain.height + 1:
            return
        block_hash = blake2b256(msg.header)
        if block_hash in self._pending:
            return
        txs: list[SignedTx | None] = [None] * len(msg.tx_ids)
        missing = self._fill(txs, msg.tx_ids, range(len(txs)))
        if not missing:
            await self._apply(peer, msg, txs, fetched=False)
            return
        now = trio.current_time()
        for key, pending in list(self._pending.items()):
            if now - pending.since > FETCH_TIMEOUT_S:
                del self._pending[key]
        if len(self._pending) >= PENDING_BLOCKS:
            return
        pending = self._pending[block_hash] = _Pending(peer.node_id, msg, txs, now)
        inbox = self._inbox
        if inbox is not None and 0 < inbox.backlog() <= INBOX_HOLD_TXS:
            with trio.move_on_after(INBOX_HOLD_S):
                await inbox.wait_admitted(inbox.mark())
            if self._pending.get(block_hash) is not pending:
                return  # forgotten meanwhile
            missing = self._fill(txs, msg.tx_ids, missing)
            if not missing:
                del self._pending[block_hash]
                await self._apply(peer, msg, txs, fetched=False)
                return
        peer.send(GetBlockTxs(block_hash, missing))

    def _fill(self, txs: list[SignedTx | None], tx_ids: Sequence[bytes],
              indexes: Iterable[int]) -> list[int]:
        """Fill ``txs`` at ``indexes`` from the mempool; the indexes still missing."""
        missing = []
        for i in indexes:
            txs[i] = tx = self._mempool.get(tx_ids[i])
            if tx is None:
                missing.append(i)
        return missing

    async def on_block_txs(self, peer: Any, msg: BlockTxs) -> None:
        pending = self._pending.get(msg.block_hash)
        if pending is None or pending.peer_id != peer.node_id:
            return  # late or unasked-for: harmless, and sync covers any gap
        del self._pending[msg.block_hash]
        missing = [i for i, tx in enumerate(pending.txs) if tx is None]
        if len(msg.txs) != len(missing):
            self._host.penalize(peer, score.INVALID_MESSAGE, "wrong number of block txs")
            return
        for index, raw in zip(missing, msg.txs, strict=True):
            try:
                tx = decode_tx(raw)
            except MalformedTxError as exc:
                self._host.penalize(peer, score.INVALID_MESSAGE, f"block tx: {exc}")
                return
            if tx.id != pending.msg.tx_ids[index]:
                self._host.penalize(peer, score.INVALID_MESSAGE, "block tx has another id")
                return
            pending.txs[index] = tx
        await self._apply(peer, pending.msg, pending.txs, fetched=True)

    async def _apply(self, peer: Any, msg: CompactBlock, txs: list[SignedTx | None],
                     fetched: bool) -> None:
        try:
            last_commit = decode_commit(msg.last_commit) if msg.last_commit else None
            commit = decode_commit(msg.commit)
            block = assemble_block(msg.header, tuple(t for t in txs if t is not None),
                                   last_commit)
        except MalformedBlockError as exc:
            if fetched or not msg.tx_ids:
                self._host.penalize(peer, score.INVALID_BLOCK, str(exc))
            return  # else our mempool copy may differ; sync will fetch the whole block
        try:
            await self._writer.apply(block, commit, peer.node_id, self._mempool.verified)
        except InvalidBlockError as exc:
            self._host.penalize(peer, score.INVALID_BLOCK, f"invalid block: {exc}")

    def on_get_block_txs(self, peer: Any, msg: GetBlockTxs) -> None:
        try:
            raws = self._chain.block_tx_bytes(msg.block_hash)  # served as stored, undecoded
        except KeyError:
            return
        txs = [raws[i] for i in msg.indexes if i < len(raws)]
        peer.send(BlockTxs(msg.block_hash, txs))
