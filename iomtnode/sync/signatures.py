"""The signatures of a catch-up's transactions, verified in worker processes (one per
core) a piece at a time.

A syncing node verifies every transaction of every range it fetches, once: few of them
were seen here before (a node that is behind admitted few of them), and once committed
they can never be checked again. So the trio thread keeps no per-transaction record of
them (the admission verifier's set of passed signatures, its in-flight table): a range
keeps the transaction objects that passed, and the chain's check asks it about exactly
those objects (:meth:`RangeSignatures.passed`). A transaction that failed is left to the
chain's check, which verifies it again and refuses its block with the reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog
import trio
import trio_parallel

from ..admission.sigcheck import check_parts
from ..admission.verify import signed_parts, start_workers, usable_cores
from ..core.tx import SignedTx

log = structlog.get_logger(__name__)


class RangeSignatures:
    """The transactions of one range that passed verification, as objects (a range's
    decoded transactions stay alive until it is committed, so an object's identity names
    exactly the bytes that were verified)."""

    def __init__(self) -> None:
        self._passed: set[int] = set()
        self.failed = 0  # transactions whose signature did not verify

    def add(self, piece: Sequence[SignedTx], whys: Sequence[str | None]) -> None:
        """Record a verified piece: ``whys`` has, per transaction, None or why it failed."""
        for tx, why in zip(piece, whys, strict=True):
            if why is None:
                self._passed.add(id(tx))
            else:
                self.failed += 1

    def passed(self, tx: SignedTx) -> bool:
        """Whether this very object (one of the range's) passed verification."""
        return id(tx) in self._passed

    def widen(self, verified: Callable[[SignedTx], bool]) -> Callable[[SignedTx], bool]:
        """:meth:`passed`, or else what ``verified`` says (the node's own record)."""
        passed = self._passed
        return lambda tx: id(tx) in passed or verified(tx)


class SyncVerifier:
    """Verifies a catch-up's pieces of transactions for ``chain_id``: in worker processes
    (``workers`` at once: one per core by default), or on the trio thread when ``inline``
    (a virtual clock's node, which has no workers)."""

    def __init__(self, chain_id: str, *, inline: bool, workers: int | None = None) -> None:
        self.chain_id = chain_id
        self.inline = inline
        self.workers = usable_cores() if workers is None else workers
        self._limiter = trio.CapacityLimiter(max(1, self.workers))
        self._warming = trio.Event()  # set: no warm-up in progress, pieces go ahead
        self._warming.set()
        self.verified_count = 0  # signatures checked (metrics and tests)

    async def warm(self, node_warm: Callable[[], Awaitable[None]], *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the worker processes ahead of the first pieces, which wait until they
        run (they stay until ``trio-parallel``'s idle timeout): first the node's own
        (``node_warm``, its verifier's, which a joining node starts as it starts), then
        these take them. Two warm-ups at once would each start a worker per core.

        Only a head start: a worker that cannot start is started again by the first
        piece that needs it, which then fails loudly."""
        if self.inline:
            task_status.started()
            return
        self._warming = trio.Event()
        task_status.started()
        try:
            await node_warm()
            failed = await start_workers(self.workers, self._limiter)
            if failed is not None:
                log.warning("sync_verify_workers_not_started", reason=failed)
        finally:
            self._warming.set()

    async def verify(self, piece: Sequence[SignedTx], into: RangeSignatures) -> None:
        """Verify the signatures of ``piece`` and record them in ``into``."""
        await self._warming.wait()
        parts = [signed_parts(tx) for tx in piece]
        if self.inline:
            whys = check_parts(self.chain_id, parts)
            await trio.lowlevel.checkpoint()
        else:
            whys = await trio_parallel.run_sync(check_parts, self.chain_id, parts,
                                                limiter=self._limiter)
        self.verified_count += len(piece)
        into.add(piece, whys)
