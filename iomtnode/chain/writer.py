"""The one path by which blocks are committed on a node, whoever made them.

Commits are serialized (one writer at a time: the store's head is cached) and run in a
worker thread, since each one fsyncs. After a commit the writer publishes it on the
:class:`~iomtnode.chain.feed.BlockFeed`, whose listeners (the mempool, consensus, block
relay) and subscribers (the API) take it from there; the writer knows none of them.

Signatures of received blocks' transactions that this node has not verified yet are
verified in worker threads before the writer lock is taken, by the :class:`Signatures`
the writer is given (admission's verifier: each signature once per node); a relayed
block's certificate is checked before any of them. A syncing node
commits ranges of blocks with :meth:`ChainWriter.apply_many`: each block checked in full
against its predecessors (a staged copy of the chain), all of them written in one synced
batch. Others that must see an unchanging head (a block built or checked as the next one)
run under the same lock with :meth:`ChainWriter.at_next`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import structlog
import trio

from ..core.block import Block, Commit, InvalidCommitError
from ..core.governance import authorities_at
from ..core.tx import SignedTx
from .chain import BuiltBlock, Chain, InvalidBlockError
from .feed import BlockFeed, Committed

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Signatures(Protocol):
    """Transaction signatures checked once per node
    (:class:`~iomtnode.admission.verify.Verifier`)."""

    def __contains__(self, tx: SignedTx) -> bool:
        """Whether this exact transaction passed verification here."""
        ...

    async def verify(self, txs: Sequence[SignedTx], *, bulk: bool = False) -> Sequence[object]:
        """Verify ``txs`` (those not verified before); bad ones are not remembered."""
        ...

    async def warm(self) -> None:
        """Start the workers a large verification needs ahead of it."""
        ...


class ChainWriter:
    def __init__(self, chain: Chain, feed: BlockFeed, signatures: Signatures, *,
                 inline: bool = False) -> None:
        """``inline=True``: LevelDB writes run on the trio thread, not in a worker thread (for
        a virtual clock, which jumps ahead while a worker runs)."""
        self.chain = chain
        self.feed = feed
        self._signatures = signatures
        self._inline = inline
        self._lock = trio.Lock()

    @property
    def inline(self) -> bool:
        """Whether this node works on its trio thread alone (a virtual clock): no worker
        threads or processes."""
        return self._inline

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
        todo = [tx for tx in block.txs if not verified(tx)]
        if todo:  # fetched from the sender: the certificate first, for a few signatures
            self._certified(block, commit)
        verified = await self.verify_txs(todo, verified)
        async with self._lock:
            if block.height != self.chain.height + 1:
                return False
            built = self.chain.check(block, commit, verified)
            await self._commit_locked(built, commit, source)
        return True

    def _certified(self, block: Block, commit: Commit) -> None:
        """Raise :class:`InvalidBlockError` unless ``commit`` is ``block``'s certificate,
        signed by the authorities of its height (as the chain's check will also find). Any
        peer may relay a compact block for the next height: one with a forged certificate
        and thousands of transactions only its sender held made the node verify every
        transaction's signature before the check refused the certificate."""
        if commit.height != block.height or commit.block_hash != block.hash:
            raise InvalidBlockError(f"the certificate is not for block {block.height}")
        try:
            commit.verify(authorities_at(self.chain.state(), block.height),
                          self.chain.chain_id)
        except InvalidCommitError as exc:
            raise InvalidBlockError(f"block {block.height}: {exc}") from None

    async def apply_many(self, blocks: Sequence[tuple[Block, Commit]], source: bytes,
                         verified: Callable[[SignedTx], bool]) -> int:
        """Check consecutive blocks received from ``source`` and commit them in one synced
        write (a syncing node).

        Each block gets every check of :meth:`apply`, against the head and state its
        predecessors make; those that pass are stored in one atomic batch (a crash loses all
        of them or none, and sync fetches them again), then published as one commit.
        Returns how many were committed (0 if the first is no longer the next height);
        raises InvalidBlockError for the first invalid block, after committing the valid
        ones before it.
        """
        if not blocks or blocks[0][0].height != self.chain.height + 1:
            return 0
        verified = await self.verify_txs([tx for b, _ in blocks for tx in b.txs], verified)
        error: InvalidBlockError | None = None
        async with self._lock:
            if blocks[0][0].height != self.chain.height + 1:
                return 0
            staged = self.chain.staged()
            done: list[Committed] = []
            for block, commit in blocks:
                try:
                    staged.commit(staged.check(block, commit, verified), commit)
                except InvalidBlockError as exc:
                    error = exc
                    break
                done.append(Committed(block, commit, source))
                await trio.lowlevel.checkpoint()  # the rules of a range take a while
            if done:
                await self._blocking(staged.store.flush)  # type: ignore[attr-defined]
                self.chain.adopt(staged)
                self._publish(done)
        if error is not None:
            raise error
        return len(done)

    async def at_next(self, height: int, work: Callable[[], T]) -> T | None:
        """Run ``work()`` under the writer lock if the chain is at ``height - 1`` (so
        against a head no commit is replacing); None if it is not."""
        async with self._lock:
            if height != self.chain.height + 1:
                return None
            return work()

    async def warm_verifier(self) -> None:
        """Start the verifying worker processes ahead of a sync's first pieces."""
        await self._signatures.warm()

    async def preverify(self, txs: Sequence[SignedTx]) -> None:
        """Verify the signatures of received blocks' transactions ahead of checking them (a
        syncing node's, a piece at a time, in worker processes); bad ones are left for the
        check."""
        await self._signatures.verify(txs, bulk=True)

    async def verify_txs(self, txs: Sequence[SignedTx], verified: Callable[[SignedTx], bool],
                         *, bulk: bool = False) -> Callable[[SignedTx], bool]:
        """Verify the signatures of ``txs`` (a block's) that this node has not verified
        yet, in worker threads (before the writer lock: no chain state is needed). Returns
        ``verified`` widened by what passed; a bad signature is left for the chain's check,
        which refuses the block with the reason."""
        signatures = self._signatures
        todo = [tx for tx in txs if not verified(tx)]
        if todo:
            await signatures.verify(todo, bulk=bulk)
        return lambda tx: verified(tx) or tx in signatures

    async def _commit_locked(self, built: BuiltBlock, commit: Commit, source: bytes | None
                             ) -> None:
        total = await self._blocking(self.chain.write, built, commit)
        self.chain.take_head(built.block, total)  # with the publication, in one step
        self._publish([Committed(built.block, commit, source)])

    async def _blocking(self, fn: Callable[..., T], *args: object) -> T:
        if self._inline:
            result = fn(*args)
            # no cancellation here: a block written is taken as the head after this
            await trio.lowlevel.cancel_shielded_checkpoint()
            return result
        return await trio.to_thread.run_sync(fn, *args)

    def _publish(self, committed: list[Committed]) -> None:
        # a transaction admitted while its block was written (the block's batch deleted the
        # pending entries it saw before that) is kept no longer: its entry, with its sidecar,
        # would outlive the commit and an erasure of it. Here, on the trio thread, admission
        # is either done with it or will find it committed.
        txlog = self.chain.store.txlog
        late = [tx.id for done in committed for tx in done.block.txs if txlog.is_pending(tx.id)]
        if late:
            txlog.forget(late)
        # uploads whose readings did not come in time go (not only when another comes)
        self.chain.store.sidecars.expire_pending(committed[-1].block.header.time_ms)
        for done in committed:
            block, source = done.block, done.source
            log.debug("block_committed", height=block.height, txs=len(block.txs),
                      hash=block.hash.hex()[:16], source=source.hex()[:16] if source else None)
        self.feed.publish(committed)
