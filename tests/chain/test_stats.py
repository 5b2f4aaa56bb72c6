"""The chain's figures (``Chain.stats``), which ``status`` shows."""

from __future__ import annotations

import pytest

from iomtnode.chain.chain import ChainStats

from ..admission.chainkit import GENESIS, source_chain
from ..core.helpers import CHAIN_ID, pub


def test_stats_are_the_head_the_authorities_and_the_transactions_so_far(tmp_path):
    chain, made = source_chain(tmp_path / "data", blocks=2, per_block=4)
    try:
        stats = chain.stats()
        head = made[-1][0]
        assert stats == ChainStats(
            chain_id=CHAIN_ID, genesis_hash=GENESIS.hash, height=3, head_hash=head.hash,
            head_time_ms=head.header.time_ms, authorities=(pub("A"),),
            authorities_with_evidence=(),
            committed_txs=4 + 2 * 4)  # block 1: 3 admissions and an epoch
        with pytest.raises(AttributeError):  # frozen: a reader cannot change the figures
            stats.height = 9  # type: ignore[misc]
    finally:
        chain.store.close()
