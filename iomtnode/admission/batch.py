"""Admitting a chunk of decoded transactions without holding the trio thread for long.

The admission service (:mod:`.service`) admits what its inbox holds in chunks of
:data:`CHUNK`: the cheap checks of a chunk (room, pending, committed) on the trio thread,
then the signatures not verified on this node yet in worker threads (one hop per chunk,
see :class:`~.verify.Verifier`), then the state rules in order. Between chunks other tasks
run (consensus messages, other peers), so thousands of queued transactions never stall the
node for more than a chunk's worth of rule checks.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core import errors as e
from ..core.tx import SignedTx
from .inbox import Admitted
from .mempool import Mempool, bad_signature

CHUNK = 256  # transactions per admission step


async def admit_chunk(mempool: Mempool, txs: Sequence[SignedTx]) -> list[Admitted]:
    """Admit ``txs`` in order; returns for each the admitted transaction or its RuleError."""
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
    return filled(results)


def filled(slots: Sequence[Admitted | None]) -> list[Admitted]:
    """``slots`` once every one holds a result."""
    out: list[Admitted] = []
    for slot in slots:
        assert slot is not None, "every transaction of a batch gets a result"
        out.append(slot)
    return out
