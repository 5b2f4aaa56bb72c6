"""The one path by which blocks are committed on a node, whoever made them.

Commits are serialized (one writer at a time: the store's head is cached) and run in a
worker thread, since each one fsyncs. After a commit, the mempool drops the block's
transactions, API subscribers get the block, and listeners (block relay) are told.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
import trio

from ..admission.mempool import Mempool
from ..core.block import Block, Commit
from ..core.tx import SignedTx
from .chain import BuiltBlock, Chain
from .feed import BlockFeed

log = structlog.get_logger(__name__)

CommitListener = Callable[[Block, Commit, bytes | None], None]


class ChainWriter:
    def __init__(self, chain: Chain, mempool: Mempool, feed: BlockFeed) -> None:
        self.chain = chain
        self._mempool = mempool
        self._feed = feed
        self._lock = trio.Lock()
        self._listeners: list[CommitListener] = []

    def add_listener(self, listener: CommitListener) -> None:
        """Call ``listener(block, commit, source_peer)`` after each commit (must not block)."""
        self._listeners.append(listener)

    async def commit(self, built: BuiltBlock, commit: Commit, source: bytes | None = None
                     ) -> bool:
        """Commit ``built`` as the next block; False if another commit took its height first."""
        async with self._lock:
            if built.block.height != self.chain.height + 1:
                return False
            await self._commit_locked(built, commit, source)
        return True

    async def apply(self, block: Block, commit: Commit, source: bytes,
                    verified: Callable[[SignedTx], bool]) -> bool:
        """Check a block received from ``source`` against the head and commit it.

        Check and commit happen under the one writer lock, so a block is never checked
        against a head that another commit is replacing. Returns False (no fault of the
        sender) when the block is no longer the next one; raises
        :class:`~iomtnode.chain.chain.InvalidBlockError` when it is invalid.
        """
        async with self._lock:
            if block.height != self.chain.height + 1:
                return False
            built = self.chain.check(block, commit, verified)
            await self._commit_locked(built, commit, source)
        return True

    async def build_next(self, height: int, proposer: bytes, now_ms: int, max_txs: int
                         ) -> BuiltBlock | None:
        """Build block ``height`` from the pending transactions, under the writer lock (so
        never from a head being replaced); None if the chain is no longer at ``height - 1``."""
        async with self._lock:
            if height != self.chain.height + 1:
                return None
            built = self.chain.build(self._mempool.pending(max_txs), proposer, now_ms)
        for tx, reason in built.rejected:
            log.info("tx_dropped_from_block", tx=tx.id.hex()[:16], reason=str(reason))
        return built

    async def check_proposal(self, block: Block) -> BuiltBlock | None:
        """:meth:`Chain.check_proposal <iomtnode.chain.chain.Chain.check_proposal>` under the
        writer lock; None if ``block`` is no longer the next height. Raises
        :class:`~iomtnode.chain.chain.InvalidBlockError` when it is invalid."""
        async with self._lock:
            if block.height != self.chain.height + 1:
                return None
            return self.chain.check_proposal(block, self._mempool.verified)

    async def _commit_locked(self, built: BuiltBlock, commit: Commit, source: bytes | None
                             ) -> None:
        await trio.to_thread.run_sync(self.chain.commit, built, commit)
        block = built.block
        log.debug("block_committed", height=block.height, txs=len(block.txs),
                  hash=block.hash.hex()[:16], source=source.hex()[:16] if source else None)
        self._mempool.block_committed(block)
        self._feed.publish(block)
        for listener in self._listeners:
            listener(block, commit, source)
