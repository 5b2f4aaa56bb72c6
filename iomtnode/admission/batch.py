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
from ..core.tx import Reading, SignedTx
from .inbox import Admitted
from .mempool import Mempool, bad_signature

CHUNK = 256  # transactions per admission step


# refusals before the signature that an earlier transaction of the same chunk may cure: a
# device's admission (its readings, its patient's grants), a grant (its revocation)
CURABLE_IN_CHUNK = (e.UnknownDeviceError, e.UnknownStreamError, e.UnknownGrantError)


async def admit_chunk(mempool: Mempool, txs: Sequence[SignedTx]) -> list[Admitted]:
    """Admit ``txs`` in order; returns for each the admitted transaction or its RuleError.

    The cheap checks of the whole chunk come first (:meth:`Mempool.precheck`, which reads
    the pending state), so a transaction whose signer gets its right from an earlier one
    of the same chunk (a device admitted, then its reading) would be refused there: such a
    one is tried again, with its signature verified on this thread, once the others are
    in. Only a :data:`CURABLE_IN_CHUNK` refusal after a non-reading candidate is; the rest
    are refused at once, and none of them costs a verification."""
    results: list[Admitted | None] = [None] * len(txs)
    candidates: list[int] = []
    later: list[int] = []
    may_cure = False  # a candidate before this one may give rights (not a reading)
    for i, tx in enumerate(txs):
        try:
            mempool.precheck(tx)
        except CURABLE_IN_CHUNK as exc:
            if may_cure:
                later.append(i)
            else:
                results[i] = exc
        except e.RuleError as exc:
            results[i] = exc
        else:
            candidates.append(i)
            may_cure = may_cure or type(tx.body) is not Reading
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
    for i in later:  # checked again in full, in order: nothing verified before it passes
        try:
            results[i] = mempool.add_tx(txs[i])
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
