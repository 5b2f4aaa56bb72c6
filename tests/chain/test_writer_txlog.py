"""What the writer does once a block is written, before it is published: a transaction admitted
(and kept in the pending log) while the block holding it was written is forgotten, so no
sidecar of a committed transaction outlives the commit there (nor its erasure); uploads that
waited too long for their readings are dropped."""

from __future__ import annotations

import threading

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
        write_block = chain.write

        def write_while_admitting(built, commit):
            total = write_block(built, commit)  # forget_in ran: the tx was not pending yet
            chain.store.txlog.keep([(tx.id, tx.raw)])  # admission, before the publish
            return total

        chain.write = write_while_admitting  # type: ignore[method-assign]
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


def test_the_head_moves_on_the_event_loop_with_the_commits_publication(tmp_path):
    """The block is written in a worker thread, but the chain takes it as its head only back
    on the event loop, in the step that tells the listeners (the mempool lets go of its
    transactions there): no task sees the new head beside the old mempool."""
    chain = stream_chain(tmp_path / "data")
    try:
        writing, release = threading.Event(), threading.Event()
        write_block = chain.write

        def slow_write(built, commit):
            writing.set()
            assert release.wait(10)
            return write_block(built, commit)

        chain.write = slow_write  # type: ignore[method-assign]
        feed = BlockFeed(chain.height)
        told: list[int] = []
        feed.listen(lambda committed: told.append(chain.height))
        writer = ChainWriter(chain, feed, NoSignatures())
        tx = reading("d1", 1, T0 + 1)
        built = chain.build([tx], pub("A"), T0 + 10_000)
        certificate = sign_commit([key("A")], CHAIN_ID, built.block.height, 0, built.block.hash)
        before = chain.height
        seen: list[tuple[int, int]] = []  # (head, listener calls) at each of the loop's steps

        async def watch() -> None:
            while not told:
                seen.append((chain.height, len(told)))
                await trio.lowlevel.checkpoint()

        async def main() -> None:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch)
                    nursery.start_soon(writer.commit, built, certificate)
                    await trio.to_thread.run_sync(writing.wait)
                    assert chain.height == before  # written in the thread, not the head yet
                    release.set()

        trio.run(main)
        assert told == [before + 1]  # the listener saw the new head
        assert chain.height == before + 1 and chain.store.tx_location(tx.id) is not None
        assert seen and all(head == before for head, _ in seen)
    finally:
        chain.store.close()
