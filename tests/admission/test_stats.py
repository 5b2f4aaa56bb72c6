"""Admission's figures (``Admission.stats``), the one record ``status`` shows of it."""

from __future__ import annotations

from iomtnode.admission.inbox import FromClient, FromPeer
from iomtnode.admission.mempool import Mempool
from iomtnode.admission.service import AdmissionStats

from .chainkit import T0, admission_of, reading, source_chain


async def test_stats_count_pending_dropped_verified_and_queued(tmp_path):
    chain, _ = source_chain(tmp_path / "data", blocks=0, per_block=0)
    try:
        admission = admission_of(Mempool(chain, now_ms=lambda: T0))
        assert admission.stats() == AdmissionStats(pending_txs=0, dropped_txs=0,
                                                   signatures_verified=0, inbox_queued=0,
                                                   peer_backlog=0)
        for seq in (1, 2):
            admission.mempool.add(reading("d1", seq).raw)
        await admission.inbox.put(FromPeer(None, [reading("d1", 3).raw]))
        admission.inbox.put_own(FromClient([reading("d1", 4).raw], False, print))
        assert admission.stats() == AdmissionStats(2, 0, 2, 2, 1)
    finally:
        chain.store.close()
