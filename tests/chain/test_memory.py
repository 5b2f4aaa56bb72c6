"""What a chain keeps in memory between requests (a node holding 1,000,000
readings kept its head block of 10,000 transactions decoded, 12 MB)."""

from __future__ import annotations

from iomtnode.chain.chain import Chain
from iomtnode.core.block import Block
from iomtnode.store import BlockStore

from ..admission.chainkit import GENESIS, source_chain


def test_a_reopened_chain_keeps_only_its_head_header(tmp_path):
    chain, made = source_chain(tmp_path / "data", blocks=2, per_block=20)
    chain.store.close()
    with BlockStore.open(tmp_path / "data") as store:
        reopened = Chain(store, GENESIS)
        held = [v for v in vars(reopened).values() if isinstance(v, Block)]
        assert held == []
        head, _ = made[-1]
        assert reopened.head_hash == head.hash and reopened.head == head
        assert reopened.stats().head_time_ms == head.header.time_ms
