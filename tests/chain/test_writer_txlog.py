"""What the writer does once a block is written, before it is published: a transaction admitted
(and kept in the pending log) while the block holding it was written is forgotten, so no
sidecar of a committed transaction outlives the commit there (nor its erasure); uploads that
waited too long for their readings are dropped."""

from __future__ import annotations

import trio

from iomtnode.chain.feed import BlockFeed
from iomtnode.chain.writer import ChainWriter
from iomtnode.core.block import sign_commit
from iomtnode.core.payload import commitment
from iomtnode.store.sidecars import BLOB_PENDING_S

from ..core.helpers import CHAIN_ID, key, pub
from .streamkit import T0, blob_for, reading, stream_chain


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


def test_an_upload_whose_reading_never_came_is_dropped_by_a_later_commit(tmp_path):
    """Without another upload to sweep it, an expired one still leaves at the next commit
    after BLOB_PENDING_S: off the disk, and no longer held for admission."""
    chain = stream_chain(tmp_path / "data")
    try:
        kept, expired = blob_for("d1", 2), blob_for("d1", 1)
        chain.put_blob(expired, T0)
        chain.put_blob(kept, T0 + 100_000)
        writer = ChainWriter(chain, BlockFeed(chain.height), NoSignatures(), inline=True)
        built = chain.build([], pub("A"), T0 + BLOB_PENDING_S * 1000 + 1)
        certificate = sign_commit([key("A")], CHAIN_ID, built.block.height, 0, built.block.hash)

        async def main() -> None:
            assert await writer.commit(built, certificate)

        trio.run(main)
        assert not chain.holds_blob(commitment(expired))
        assert chain.store.sidecars.pending_blob(commitment(expired)) is None
        assert chain.holds_blob(commitment(kept))
    finally:
        chain.store.close()
