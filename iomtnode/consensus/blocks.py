"""Blocks made from this node's pending transactions, and proposed blocks checked here.

Both run against an unchanging head: under the chain writer's lock
(:meth:`~iomtnode.chain.writer.ChainWriter.at_next`), so never against a head that a commit
is replacing. Consensus uses them (:class:`~iomtnode.consensus.driver.Driver`); the chain
only commits.
"""

from __future__ import annotations

from ..admission.mempool import Mempool
from ..chain.chain import BuiltBlock
from ..chain.writer import ChainWriter
from ..core.block import Block


class BlockMaker:
    """Builds the next block from ``mempool`` and checks proposed ones, on ``writer``'s chain."""

    def __init__(self, writer: ChainWriter, mempool: Mempool) -> None:
        self._writer = writer
        self._mempool = mempool

    async def build_next(self, height: int, proposer: bytes, now_ms: int, max_txs: int
                         ) -> BuiltBlock | None:
        """Block ``height`` from the pending transactions (those the chain refuses are
        dropped from the pool, each logged and recorded); None if the chain is no longer at
        ``height - 1``."""
        chain, mempool = self._writer.chain, self._mempool

        def build() -> BuiltBlock:
            built = chain.build(mempool.pending(max_txs), proposer, now_ms)
            mempool.drop(built.rejected)
            return built

        return await self._writer.at_next(height, build)

    async def check_proposal(self, block: Block) -> BuiltBlock | None:
        """:meth:`Chain.check_proposal <iomtnode.chain.chain.Chain.check_proposal>` against
        the head, its signatures not verified here yet verified first (in worker threads);
        None if ``block`` is no longer the next height. Raises
        :class:`~iomtnode.chain.chain.InvalidBlockError` when it is invalid."""
        writer = self._writer
        if block.height != writer.chain.height + 1:
            return None
        verified = await writer.verify_txs(block.txs, self._mempool.verified)
        return await writer.at_next(block.height,
                                    lambda: writer.chain.check_proposal(block, verified))
