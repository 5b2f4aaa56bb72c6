"""A transaction admitted (and kept in the pending log) while the block holding it is being
written is forgotten when that block is published: the pending log keeps no committed
transaction, so no sidecar of it outlives the commit there (nor its erasure)."""

from __future__ import annotations

import trio

from iomtnode.chain.feed import BlockFeed
from iomtnode.chain.writer import ChainWriter
from iomtnode.core.block import sign_commit

from ..core.helpers import CHAIN_ID, key, pub
from .streamkit import T0, reading, stream_chain


class NoSignatures:
    def __contains__(self, tx) -> bool:
        return True

    async def verify(self, txs, *, bulk=False):
        return [None] * len(txs)

    async def warm(self) -> None:
        pass


def test_a_transaction_kept_while_its_block_is_written_is_forgotten(tmp_path):
    chain = stream_chain(tmp_path / "data")
    try:
        tx = reading("d1", 1, T0 + 1)
        commit_block = chain.commit

        def commit_while_admitting(built, commit):
            commit_block(built, commit)  # forget_in ran in it: the tx was not pending yet
            chain.store.txlog.keep([(tx.id, tx.raw)])  # admission, before the publish

        chain.commit = commit_while_admitting  # type: ignore[method-assign]
        writer = ChainWriter(chain, BlockFeed(chain.height), NoSignatures(), inline=True)
        built = chain.build([tx], pub("A"), T0 + 10_000)
        certificate = sign_commit([key("A")], CHAIN_ID, built.block.height, 0, built.block.hash)

        async def main() -> None:
            assert await writer.commit(built, certificate)

        trio.run(main)
        assert chain.store.tx_location(tx.id) is not None
        assert not chain.store.txlog.is_pending(tx.id)
        assert list(chain.store.txlog.pending()) == []
    finally:
        chain.store.close()
