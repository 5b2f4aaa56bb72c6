"""Signature verification off the trio thread, in batches, and the record of what passed.

Every transaction signature is verified once per node. :class:`Verifier` remembers the
transactions that passed (a bounded set of ``id | signature``: the id covers the
whole signed body, so a forged copy with the same id and another signature is a different
entry and is verified on its own). Verification runs in worker threads, a batch per thread
hop: libsodium releases the GIL, so the trio thread decodes, applies rules and serves the
network meanwhile, and a node may use more than one core.

A batch of :data:`PROCESS_MIN_BATCH` or more (a syncing node's round of blocks) goes to
worker processes instead (``trio-parallel``): a thread that finishes a signature must take
the GIL back, and while the trio thread runs Python it waits up to the switch interval
(``tuning.GIL_SWITCH_INTERVAL_S``, 20 ms in a node) for it, so threads keep cores busy only
while the trio thread idles. Processes need no GIL; they get the transactions' signed
parts (signer, domain, id, signature), or the whole transaction for evidence (whose votes
are verified too).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
import trio
import trio_parallel

from ..core.crypto import BadSignatureError
from ..core.tx import ReportEvidence, SignedTx
from .sigcheck import SignedParts, check_parts, ready

log = structlog.get_logger(__name__)

VERIFIED_CAPACITY = 100_000  # transactions remembered as verified (~23 MB: 230 B each);
# more than the ranges sync verifies ahead (3 x 4 MB of blocks) and than a block
THREAD_MIN_BATCH = 16  # smaller batches are verified inline (a thread hop costs more)
CHUNK = 256  # signatures per thread hop
PROCESS_MIN_BATCH = 2048  # larger batches go to worker processes (one piece per core)
PROCESS_PIECE = 1024  # signatures per worker-process call (~80 ms of work, ~150 KB)
INFLIGHT_WAIT_S = 0.25  # the wait for signatures another task is checking, if few (inline)
# or in the worker processes; many in the worker threads are waited for to the end


@dataclass(slots=True)
class _Batch:
    """Signatures one call is checking: others that need one of them wait for ``done``."""

    done: trio.Event = field(default_factory=trio.Event)
    results: dict[bytes, BadSignatureError | None] = field(default_factory=dict)
    in_processes: bool = False  # else in worker threads, or inline


def _key(tx: SignedTx) -> bytes:
    return tx.id + tx.signature  # exact (no hash to compute): 96 bytes


def signed_parts(tx: SignedTx) -> SignedParts:
    """What a worker needs to verify ``tx`` (:func:`~.sigcheck.check_parts`): its signer,
    domain, id and signature; the whole transaction for evidence (whose votes are verified
    too)."""
    if isinstance(tx.body, ReportEvidence):
        return tx.raw
    return tx.body.signer, tx.body.DOMAIN.value, tx.id, tx.signature


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class Verifier:
    """Verifies transaction signatures for ``chain_id``, each one once per node."""

    def __init__(self, chain_id: str, *, capacity: int = VERIFIED_CAPACITY,
                 threads: int | None = None, processes: int | None = None,
                 inline: bool = False) -> None:
        """``inline=True``: every batch is verified on the trio thread, none in worker threads
        or processes (for a virtual clock, which jumps ahead while a worker runs)."""
        self.chain_id = chain_id
        self.inline = inline
        self.capacity = capacity
        self._passed: OrderedDict[bytes, None] = OrderedDict()
        self._inflight: dict[bytes, _Batch] = {}  # key -> the batch checking it now
        self._threads = trio.CapacityLimiter(threads or usable_cores())
        # worker processes (0 or 1: none)
        self.processes = 0 if inline else usable_cores() if processes is None else processes
        self._processes = trio.CapacityLimiter(max(1, self.processes))
        self.verified_count = 0  # signatures actually checked (a test and metrics hook)
        self.warmed = False  # the worker processes were started ahead (see warm)

    def __contains__(self, tx: SignedTx) -> bool:
        """Whether this exact transaction (id and signature) passed verification here."""
        return _key(tx) in self._passed

    def _record(self, tx: SignedTx) -> None:
        self._passed[_key(tx)] = None
        if len(self._passed) > self.capacity:
            self._passed.popitem(last=False)

    def _check(self, txs: Sequence[SignedTx]) -> list[BadSignatureError | None]:
        """Verify each of ``txs`` (any thread); no state of the verifier is touched (an
        evidence transaction's precommits go through :func:`~..core.vote.verify_precommit`,
        whose memory any thread may use)."""
        out: list[BadSignatureError | None] = []
        for tx in txs:
            try:
                tx.verify(self.chain_id)
            except BadSignatureError as exc:
                out.append(exc)
            else:
                out.append(None)
        return out

    def forget(self, txs: Sequence[SignedTx]) -> None:
        """Drop committed transactions from the record: they can never be admitted or
        checked again (every path refuses a transaction already in a block), so keeping
        them only costs memory (about 230 bytes each)."""
        passed = self._passed
        for tx in txs:
            passed.pop(_key(tx), None)

    def verify_now(self, tx: SignedTx) -> None:
        """Verify one transaction on this thread unless it passed before; raise
        :class:`BadSignatureError` if its signature is bad."""
        if tx in self:
            return
        self.verified_count += 1
        tx.verify(self.chain_id)
        self._record(tx)

    async def verify(self, txs: Sequence[SignedTx], *, bulk: bool = False
                     ) -> list[BadSignatureError | None]:
        """Verify ``txs`` (those not verified before), in worker threads when there are
        many, in worker processes when there are very many or ``bulk`` says more pieces
        follow (a syncing node's); returns, per transaction, None (it verified) or the
        error.

        A transaction that another task is verifying right now (a lagging node gets the
        same transaction from a peer's push and in a proposal or a synced block at once)
        is not checked twice: this call waits for that task's result, then checks what is
        still missing (see :meth:`_wait_for` for how long it waits)."""
        results: list[BadSignatureError | None] = [None] * len(txs)
        first: dict[bytes, int] = {}  # key -> the index checked for it (copies share it)
        copies: list[tuple[int, int]] = []
        elsewhere: list[tuple[int, bytes, _Batch]] = []  # being checked by another task
        for i, tx in enumerate(txs):
            key = _key(tx)
            if key in self._passed:
                continue
            if key in first:
                copies.append((i, first[key]))
            elif (batch := self._inflight.get(key)) is not None:
                elsewhere.append((i, key, batch))
            else:
                first[key] = i
        todo = list(first.values())
        if todo:
            await self._verify_new([txs[i] for i in todo], list(first), results, todo, bulk)
        if elsewhere:
            await self._wait_for(elsewhere, txs, results)
        for i, checked_as in copies:
            results[i] = results[checked_as]
        return results

    async def _wait_for(self, elsewhere: list[tuple[int, bytes, _Batch]],
                        txs: Sequence[SignedTx], results: list[BadSignatureError | None]
                        ) -> None:
        """Take the results of signatures other tasks are checking, waiting for them at
        most INFLIGHT_WAIT_S; check the ones that did not come (that task was cancelled,
        or is slow) here, in one batch.

        Unless that many would be checked in worker threads (THREAD_MIN_BATCH or more):
        then the batches in the threads are waited for to the end, since a check of the
        same signatures here would queue for the same threads, behind them. (A node that
        falls behind has a long queue there; checking its signatures twice made it fall
        further behind.) Signatures in the worker processes' queue (a syncing node's
        pieces) are still checked here after INFLIGHT_WAIT_S."""
        batches = list({id(b): b for _, _, b in elsewhere}.values())
        with trio.move_on_after(INFLIGHT_WAIT_S):
            for batch in batches:
                await batch.done.wait()
        if sum(key not in batch.results for _, key, batch in elsewhere) >= THREAD_MIN_BATCH:
            for batch in batches:
                if not batch.in_processes:
                    await batch.done.wait()
        missing: list[int] = []
        for i, key, batch in elsewhere:
            if key in batch.results:
                results[i] = batch.results[key]
            elif key not in self._passed:
                missing.append(i)
        if missing:
            todo = [txs[i] for i in missing]
            await self._verify_new(todo, [_key(tx) for tx in todo], results, missing, False)

    async def _verify_new(self, txs: list[SignedTx], keys: list[bytes],
                          results: list[BadSignatureError | None], where: list[int],
                          bulk: bool) -> None:
        """Check ``txs`` (none verified or in flight), announcing them as in flight until
        done; their results go to ``results`` at ``where``."""
        inline = self.inline or len(txs) < THREAD_MIN_BATCH
        in_processes = (not inline and (bulk or len(txs) >= PROCESS_MIN_BATCH)
                        and self.processes > 1)
        batch = _Batch(in_processes=in_processes)
        for key in keys:
            self._inflight[key] = batch
        try:
            if inline:
                checked = self._check(txs)
            elif in_processes:
                checked = await self._in_processes(txs)
            else:
                checked = await self._in_threads(txs)
            self.verified_count += len(txs)
            for key, i, tx, error in zip(keys, where, txs, checked, strict=True):
                results[i] = batch.results[key] = error
                if error is None:
                    self._record(tx)
        finally:
            for key in keys:
                if self._inflight.get(key) is batch:
                    del self._inflight[key]
            batch.done.set()
        if inline:
            await trio.lowlevel.checkpoint()  # callers go chunk by chunk: let others run

    async def warm(self) -> None:
        """Start the worker processes not running yet (each imports only
        :mod:`~iomtnode.admission.sigcheck`), so that a syncing node's first pieces do not
        wait for them; they stay until ``trio-parallel``'s idle timeout. A no-op without
        processes."""
        if self.processes < 2:
            return
        failed = await start_workers(self.processes, self._processes)
        if failed is not None:  # only a head start: a batch that needs them tries again
            log.warning("verify_workers_not_started", reason=failed)
        self.warmed = failed is None

    async def _in_processes(self, txs: list[SignedTx]) -> list[BadSignatureError | None]:
        pieces = [[signed_parts(tx) for tx in txs[i:i + PROCESS_PIECE]]
                  for i in range(0, len(txs), PROCESS_PIECE)]
        whys = await _in_pieces(pieces, lambda piece: trio_parallel.run_sync(
            check_parts, self.chain_id, piece, limiter=self._processes))
        return [None if why is None else BadSignatureError(why) for why in whys]

    async def _in_threads(self, txs: list[SignedTx]) -> list[BadSignatureError | None]:
        size = max(1, min(CHUNK, -(-len(txs) // int(self._threads.total_tokens))))
        chunks = [txs[i:i + size] for i in range(0, len(txs), size)]
        return await _in_pieces(chunks, lambda chunk: trio.to_thread.run_sync(
            self._check, chunk, limiter=self._threads))


async def _in_pieces(pieces: Sequence[Sequence[Any]],
                     run: Callable[[Any], Awaitable[list[Any]]]) -> list[Any]:
    """``run`` each piece concurrently (its limiter bounds how many at once); the results
    of all pieces, in order."""
    results: list[list[Any]] = [[] for _ in pieces]

    async def one(index: int) -> None:
        results[index] = await run(pieces[index])

    async with trio.open_nursery() as nursery:
        for index in range(len(pieces)):
            nursery.start_soon(one, index)
    return [result for part in results for result in part]


async def start_workers(count: int, limiter: trio.CapacityLimiter) -> str | None:
    """Start ``count`` verifying worker processes (each imports only
    :mod:`~iomtnode.admission.sigcheck`) and wait until they run; why not, if they could
    not be started."""
    failed = None
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(partial(trio_parallel.run_sync, ready, limiter=limiter))
    except* (trio_parallel.BrokenWorkerError, OSError) as group:
        failed = str(group.exceptions[0])
    return failed
