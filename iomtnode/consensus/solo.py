"""The one-authority sealer: seals the mempool into blocks, each final on creation.

With a single authority, its own precommit is a quorum, so every block it seals is
final at once. The multi-authority engine (Tendermint-style rounds) replaces this
service; the block format and the commit certificate stay the same.

Timing: a block is sealed as soon as transactions are pending, but at most every
``block_interval_s``; with nothing pending, an empty block every ``empty_block_interval_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
import trio

from ..admission.mempool import Mempool
from ..chain.chain import Chain
from ..chain.writer import ChainWriter
from ..core.block import sign_commit
from ..core.crypto import SigningKey

log = structlog.get_logger(__name__)


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class SoloSealer:
    def __init__(
        self,
        chain: Chain,
        mempool: Mempool,
        writer: ChainWriter,
        key: SigningKey,
        *,
        block_interval_s: float,
        empty_block_interval_s: float,
        max_block_txs: int,
        now_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self._chain = chain
        self._mempool = mempool
        self._writer = writer
        self._key = key
        self._block_interval_s = block_interval_s
        self._empty_interval_s = empty_block_interval_s
        self._max_block_txs = max_block_txs
        self._now_ms = now_ms
        self._wake = trio.Event()

    def wake(self) -> None:
        """Tell the sealer that transactions are pending (cheap; call after each admission)."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Seal blocks until cancelled."""
        log.info("sealer_started", authority=self._key.public.hex()[:16],
                 height=self._chain.height)
        task_status.started()
        last = trio.current_time()
        while True:
            if not len(self._mempool):
                with trio.move_on_at(last + self._empty_interval_s):
                    await self._wake.wait()
            await trio.sleep_until(last + self._block_interval_s)
            last = trio.current_time()
            # reset just before taking the pending transactions: a wake-up from one that
            # this block includes must not cause an extra, empty block
            self._wake = trio.Event()
            await self._seal_one()

    async def _seal_one(self) -> None:
        txs = self._mempool.pending(self._max_block_txs)
        built = self._chain.build(txs, self._key.public, self._now_ms())
        for tx, reason in built.rejected:
            log.info("tx_dropped_from_block", tx=tx.id.hex()[:16], reason=str(reason))
        block = built.block
        commit = sign_commit([self._key], self._chain.chain_id, block.height, 0, block.hash)
        await self._writer.commit(built, commit)
