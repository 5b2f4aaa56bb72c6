"""The mempool's figures (``Mempool.stats``), which ``status`` shows."""

from __future__ import annotations

from iomtnode.admission.mempool import Mempool, MempoolStats

from .chainkit import T0, reading, source_chain


def test_stats_count_pending_dropped_and_verified(tmp_path):
    chain, _ = source_chain(tmp_path / "data", blocks=0, per_block=0)
    try:
        mempool = Mempool(chain, now_ms=lambda: T0)
        assert mempool.stats() == MempoolStats(pending_txs=0, dropped_txs=0,
                                               signatures_verified=0)
        for seq in (1, 2):
            mempool.add(reading("d1", seq).raw)
        assert mempool.stats() == MempoolStats(2, 0, 2)
    finally:
        chain.store.close()
