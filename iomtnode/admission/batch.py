"""Admitting batches of transactions without holding the trio thread for long.

A batch is admitted in chunks of :data:`CHUNK`: the cheap checks of a chunk (room, pending,
committed) on the trio thread, then the signatures not verified on this node yet in worker
threads (one hop per chunk, see :class:`~.verify.Verifier`), then the state rules in order.
Between chunks other tasks run (consensus messages, other peers), so a batch of thousands of
transactions never stalls the node for more than a chunk's worth of rule checks.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core import errors as e
from ..core.tx import SignedTx
from .mempool import Mempool, bad_signature

CHUNK = 256  # transactions per admission step

Admitted = SignedTx | e.RuleError  # per transaction: admitted, or the reason it was not


async def admit_batch(mempool: Mempool, txs: Sequence[SignedTx]) -> list[Admitted]:
    """Admit ``txs`` in order; returns for each the admitted transaction or its RuleError."""
    results: list[Admitted] = []
    for start in range(0, len(txs), CHUNK):
        results.extend(await _admit_chunk(mempool, txs[start:start + CHUNK]))
    return results


async def _admit_chunk(mempool: Mempool, txs: Sequence[SignedTx]) -> list[Admitted]:
    results: list[Admitted | None] = [None] * len(txs)
    candidates: list[int] = []
    for i, tx in enumerate(txs):
        try:
            mempool.precheck(tx)
        except e.RuleError as exc:
            results[i] = exc
        else:
            candidates.append(i)
    errors = await mempool.verifier.verify([txs[i] for i in candidates])
    for i, error in zip(candidates, errors, strict=True):
        tx = txs[i]
        if error is not None:
            results[i] = bad_signature(tx, error)
            continue
        try:  # the rules, and the cheap checks again: other tasks ran meanwhile
            results[i] = mempool.add_tx(tx, prechecked=True)  # verified: not again
        except e.RuleError as exc:
            results[i] = exc
    return _filled(results)


async def admit_raw_batch(mempool: Mempool, raws: Sequence[bytes], *,
                          reading_only: bool = False) -> list[Admitted]:
    """Decode and admit ``raws`` in order (a client's batch); a transaction that does not
    decode gets a MalformedTxRuleError. Decoding is done a chunk at a time too."""
    results: list[Admitted] = []
    for start in range(0, len(raws), CHUNK):
        slots: list[Admitted | None] = []
        txs: list[SignedTx] = []
        where: list[int] = []
        for raw in raws[start:start + CHUNK]:
            try:
                txs.append(mempool.decode(raw, reading_only=reading_only))
            except e.RuleError as exc:
                slots.append(exc)
            else:
                where.append(len(slots))
                slots.append(None)
        for i, admitted in zip(where, await _admit_chunk(mempool, txs), strict=True):
            slots[i] = admitted
        results.extend(_filled(slots))
    return results


def _filled(slots: list[Admitted | None]) -> list[Admitted]:
    out: list[Admitted] = []
    for slot in slots:
        assert slot is not None, "every transaction of a batch gets a result"
        out.append(slot)
    return out
