"""The one path by which blocks are committed on a node, whoever made them.

Commits are serialized (one writer at a time: the store's head is cached) and run in a
worker thread, since each one fsyncs. After a commit, the mempool drops the block's
transactions, API subscribers get the block, and listeners (block relay) are told.

Signatures of received blocks' transactions that this node has not verified yet are
verified in worker threads before the writer lock is taken (see
:class:`~iomtnode.admission.verify.Verifier`). A syncing node commits ranges of blocks with
:meth:`ChainWriter.apply_many`: each block checked in full against its predecessors (a staged
copy of the chain), all of them written in one synced batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog
import trio

from ..admission.mempool import Mempool
from ..core.block import Block, Commit
from ..core.tx import SignedTx
from .chain import BuiltBlock, Chain, InvalidBlockError
from .feed import BlockFeed

log = structlog.get_logger(__name__)

CommitListener = Callable[[Block, Commit, bytes | None], None]


class ChainWriter:
    def __init__(self, chain: Chain, mempool: Mempool, feed: BlockFeed, *,
                 inline: bool = False) -> None:
        """``inline=True``: LevelDB writes run on the trio thread, not in a worker thread (for
        a virtual clock, which jumps ahead while a worker runs)."""
        self.chain = chain
        self._inline = inline
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
        if block.height != self.chain.height + 1:
            return False
        verified = await self._verify_txs(block.txs, verified)
        async with self._lock:
            if block.height != self.chain.height + 1:
                return False
            built = self.chain.check(block, commit, verified)
            await self._commit_locked(built, commit, source)
        return True

    async def apply_many(self, blocks: Sequence[tuple[Block, Commit]], source: bytes,
                         verified: Callable[[SignedTx], bool]) -> int:
        """Check consecutive blocks received from ``source`` and commit them in one synced
        write (a syncing node).

        Each block gets every check of :meth:`apply`, against the head and state its
        predecessors make; those that pass are stored in one atomic batch (a crash loses all
        of them or none, and sync fetches them again), then the mempool, subscribers and
        listeners hear of each in order. Returns how many were committed (0 if the first is
        no longer the next height); raises InvalidBlockError for the first invalid block,
        after committing the valid ones before it.
        """
        if not blocks or blocks[0][0].height != self.chain.height + 1:
            return 0
        verified = await self._verify_txs([tx for b, _ in blocks for tx in b.txs], verified)
        error: InvalidBlockError | None = None
        async with self._lock:
            if blocks[0][0].height != self.chain.height + 1:
                return 0
            staged = self.chain.staged()
            done: list[tuple[Block, Commit]] = []
            for block, commit in blocks:
                try:
                    staged.commit(staged.check(block, commit, verified), commit)
                except InvalidBlockError as exc:
                    error = exc
                    break
                done.append((block, commit))
                await trio.lowlevel.checkpoint()  # the rules of a range take a while
            if done:
                await self._blocking(staged.store.flush)  # type: ignore[attr-defined]
                self.chain.adopt(staged)
                self._mempool.blocks_committed([block for block, _ in done])
                for block, commit in done:
                    self._announce(block, commit, source)
        if error is not None:
            raise error
        return len(done)

    async def build_next(self, height: int, proposer: bytes, now_ms: int, max_txs: int
                         ) -> BuiltBlock | None:
        """Build block ``height`` from the pending transactions, under the writer lock (so
        never from a head being replaced); None if the chain is no longer at ``height - 1``."""
        async with self._lock:
            if height != self.chain.height + 1:
                return None
            built = self.chain.build(self._mempool.pending(max_txs), proposer, now_ms)
            self._mempool.drop(built.rejected)  # each logged and recorded
        return built

    async def check_proposal(self, block: Block) -> BuiltBlock | None:
        """:meth:`Chain.check_proposal <iomtnode.chain.chain.Chain.check_proposal>` under the
        writer lock; None if ``block`` is no longer the next height. Raises
        :class:`~iomtnode.chain.chain.InvalidBlockError` when it is invalid."""
        if block.height != self.chain.height + 1:
            return None
        verified = await self._verify_txs(block.txs, self._mempool.verified)
        async with self._lock:
            if block.height != self.chain.height + 1:
                return None
            return self.chain.check_proposal(block, verified)

    async def warm_verifier(self) -> None:
        """Start the verifying worker processes ahead of a sync's first pieces."""
        await self._mempool.verifier.warm()

    async def preverify(self, txs: Sequence[SignedTx]) -> None:
        """Verify the signatures of received blocks' transactions ahead of checking them (a
        syncing node's, a piece at a time, in worker processes); bad ones are left for the
        check."""
        await self._verify_txs(txs, self._mempool.verified, bulk=True)

    async def _verify_txs(self, txs: Sequence[SignedTx], verified: Callable[[SignedTx], bool],
                          *, bulk: bool = False) -> Callable[[SignedTx], bool]:
        """Verify the signatures of ``txs`` (a block's) that this node has not verified
        yet, in worker threads (before the writer lock: no chain state is needed). Returns
        ``verified`` widened by what passed; a bad signature is left for the chain's check,
        which refuses the block with the reason."""
        verifier = self._mempool.verifier
        todo = [tx for tx in txs if not verified(tx)]
        if todo:
            await verifier.verify(todo, bulk=bulk)
        return lambda tx: verified(tx) or tx in verifier

    async def _commit_locked(self, built: BuiltBlock, commit: Commit, source: bytes | None
                             ) -> None:
        await self._blocking(self.chain.commit, built, commit)
        self._mempool.block_committed(built.block)
        self._announce(built.block, commit, source)

    async def _blocking(self, fn: Callable[..., object], *args: object) -> None:
        if self._inline:
            fn(*args)
            await trio.lowlevel.checkpoint()
        else:
            await trio.to_thread.run_sync(fn, *args)

    def _announce(self, block: Block, commit: Commit, source: bytes | None) -> None:
        self._mempool.verifier.forget(block.txs)
        log.debug("block_committed", height=block.height, txs=len(block.txs),
                  hash=block.hash.hex()[:16], source=source.hex()[:16] if source else None)
        self._feed.publish(block)
        for listener in self._listeners:
            listener(block, commit, source)
