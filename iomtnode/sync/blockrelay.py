"""Relaying final blocks as compact blocks: header, transaction ids and certificates.

Peers already hold almost every transaction of a new block (gossip put them in their
mempools), so a block travels as its header, the ids of its transactions, its parent's
certificate and its own. The receiver has it assembled
(:class:`~iomtnode.admission.assembly.Assembler`: filled in from the mempool, the missing
transactions asked of the sender by :class:`~iomtnode.admission.messages.GetBlockTxs`),
checks the block in full (signatures it has not verified yet, state rules, certificates)
and commits it; then it relays the compact block to its other peers. A block that is not
the next one is left to sync. While a block's transactions are fetched, each other peer
that sends the same compact block is a source too: the relay's own task (:meth:`BlockRelay.run`)
asks the next source when the one asked has not answered in full within
:data:`~iomtnode.admission.assembly.ASK_TIMEOUT_S`, and gives the block up to sync after
:data:`~iomtnode.admission.assembly.PENDING_TIMEOUT_S`.

A node that gets a compact block is one that missed the block in consensus: usually one
that fell behind, whose gossip inbox still holds transactions pushed to it, among them
the block's. Asked for at once, the sender sends them again and this node decodes each
twice (in one traffic run at saturation, a node that had fallen behind received 205 KB/s
of blocks' transactions that way, beside 698 KB/s pushed to it). So while the inbox has
not handled what it had received when the compact block came, the missing transactions
are waited for there, at most :data:`~iomtnode.admission.assembly.HOLD_S`, before the
sender is asked for what is still missing; unless more than :data:`INBOX_HOLD_TXS` are
queued, which the inbox could not admit in that time (the wait holds up this peer's other
messages, and a node that far behind needs the block now).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import trio

from ..admission.assembly import HOLD_S, Assembler
from ..admission.blocktxs import Send
from ..admission.inbox import Progress
from ..admission.mempool import Mempool
from ..admission.messages import BlockTxs
from ..chain.chain import Chain, InvalidBlockError
from ..chain.writer import ChainWriter
from ..core.block import (
    ZERO_HASH,
    Block,
    Commit,
    MalformedBlockError,
    decode_commit,
    decode_header,
)
from ..core.crypto import blake2b256
from ..p2p import score
from ..p2p.peer import Peer
from ..p2p.router import PeerSet
from .messages import CompactBlock

INBOX_HOLD_TXS = 512  # the inbox is waited for if at most this many are queued (~0.2 s)


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A compact block waiting for its transactions."""

    peer_id: bytes
    msg: CompactBlock
    key: bytes  # its block hash
    height: int
    commit: Commit


def compact(block: Block, commit: Commit) -> CompactBlock:
    return CompactBlock(block.header_bytes, [tx.id for tx in block.txs],
                        block.last_commit.encode() if block.last_commit else b"",
                        commit.encode())


class BlockRelay:
    """Relay new heads; take peers' compact blocks (module doc). ``router`` is the p2p
    router (peers, broadcast, penalize); transactions are asked of peers with ``ask``
    (:meth:`~iomtnode.admission.blocktxs.Asks.sender`)."""

    def __init__(self, router: PeerSet, chain: Chain, writer: ChainWriter, mempool: Mempool,
                 on_height: Callable[[bytes, int], None], ask: Send, *,
                 holders: Callable[[Block], Collection[bytes]] = lambda block: (),
                 inbox: Progress | None = None) -> None:
        self._router = router
        self._inbox = inbox
        self._holders = holders
        self._chain = chain
        self._writer = writer
        self._mempool = mempool
        self._on_height = on_height  # sync's saw_height(peer_id, height)
        self._assembler: Assembler[_Waiting] = Assembler(
            mempool.get, ask, router.penalize_id, lambda waiting: None, inbox,
            verify=mempool.verifier.verify_now, what="block", bad_ids_points=score.INVALID_BLOCK,
            hold_txs=INBOX_HOLD_TXS)
        self._changed = trio.Event()  # a fetch began or changed: the run task's deadline

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
            self._router.broadcast(compact(block, commit), exclude=skip)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Keep the fetches going between peers' messages (module doc): by each fetch's
        deadline, ask the next source of one not answered in full, drop one given up on,
        and apply a block the admission inbox made whole."""
        task_status.started()
        while True:
            with trio.move_on_at(self._assembler.deadline()):
                await self._changed.wait()
            self._changed = trio.Event()
            for block, (waiting, *_) in self._assembler.tick(trio.current_time()):
                await self._apply(block, waiting, waiting.peer_id)

    async def on_compact(self, peer: Peer, msg: CompactBlock) -> None:
        penalize = self._router.penalize
        try:
            header = decode_header(msg.header)
        except MalformedBlockError as exc:
            penalize(peer, score.INVALID_MESSAGE, f"compact block header: {exc}")
            return
        self._on_height(peer.node_id, header.height)
        if header.height != self._chain.height + 1:
            return
        block_hash = blake2b256(msg.header)
        try:
            last_commit = decode_commit(msg.last_commit) if msg.last_commit else None
            commit = decode_commit(msg.commit)
        except MalformedBlockError as exc:
            penalize(peer, score.INVALID_BLOCK, str(exc))
            return
        if (commit.block_hash != block_hash or commit.height != header.height or (
                last_commit.hash if last_commit else ZERO_HASH) != header.last_commit_hash):
            penalize(peer, score.INVALID_BLOCK,
                     f"compact block {header.height}: a certificate is not its header's")
            return
        if self._assembler.pending(block_hash):  # another sender: a source to ask next
            self._assembler.add_source(block_hash, peer.node_id, msg)
            self._changed.set()
            return
        waiting = _Waiting(peer.node_id, msg, block_hash, header.height, commit)
        try:
            block = self._assembler.fill(block_hash, waiting, last_commit)
        except MalformedBlockError as exc:  # no transactions, and not the header's count
            penalize(peer, score.INVALID_BLOCK, str(exc))
            return
        self._changed.set()  # a new fetch: its deadlines are the run task's
        if block is None and (mark := self._assembler.held(block_hash)) is not None:
            assert self._inbox is not None, "only an inbox makes a fetch wait"
            with trio.move_on_after(HOLD_S):
                await self._inbox.wait_admitted(mark)
            whole = self._assembler.release(block_hash)
            block = None if whole is None else whole[0]
        if block is not None:
            await self._apply(block, waiting, peer.node_id)

    async def on_block_txs(self, peer: Peer, msg: BlockTxs) -> None:
        """Transactions asked of ``peer`` (routed here by
        :class:`~iomtnode.admission.blocktxs.BlockTxsReactor`)."""
        whole = self._assembler.on_txs(peer.node_id, msg)
        self._changed.set()  # the next source may have been asked
        if whole is not None:
            block, (waiting, *_) = whole
            await self._apply(block, waiting, peer.node_id)

    async def _apply(self, block: Block, waiting: _Waiting, source: bytes) -> None:
        """Commit ``block``, whose last transactions came from ``source``. Its header,
        ids and certificates are those of ``waiting``'s compact block (the root checked
        the transactions against the header), so a block that breaks the rules is that
        sender's fault, never the fault of a later source that only answered."""
        try:
            await self._writer.apply(block, waiting.commit, source, self._mempool.verified)
        except InvalidBlockError as exc:
            self._router.penalize_id(waiting.peer_id, score.INVALID_BLOCK,
                                     f"invalid block: {exc}")
