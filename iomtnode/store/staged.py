"""Blocks committed in memory on top of a :class:`BlockStore`, then written in one batch.

A syncing node checks and commits many blocks in a row. :class:`StagedStore` has the store's
read and ``commit_block`` interface, so the chain layer checks and commits each block against
it exactly as against the store (the next block sees the previous one's state changes), but
the blocks stay in memory until :meth:`StagedStore.flush` writes them all with one synced
:meth:`BlockStore.commit_blocks` batch: one fsync for the whole range instead of one per block.

Nothing staged is visible in the underlying store before the flush, and a crash before or
during it loses the whole staged range and nothing else: the node re-fetches it. The store is
never left between two blocks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from .leveldb import BlockRecord, BlockStore, HeightMismatchError
from .sidecars import Sidecars


class StagedSidecars:
    """The reads of :class:`~.sidecars.Sidecars` over the store's, with the staged blocks'
    entries on top (a staged block sees the blobs staged before it)."""

    def __init__(self, sidecars: Sidecars) -> None:
        self._sidecars = sidecars
        self.changes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.changes:
            return self.changes[key]
        return self._sidecars.get(key)

    def iterate(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        merged = dict(self._sidecars.iterate(start, stop))
        for key, value in self.changes.items():
            if start <= key < stop:
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
        yield from sorted(merged.items())

    def pending_blob(self, commitment: bytes) -> bytes | None:
        return self._sidecars.pending_blob(commitment)

    def holds_blob(self, commitment: bytes) -> bool:
        return self._sidecars.holds_blob(commitment)


class StagedStore:
    """A write-back layer over ``store``: reads see staged blocks; writes wait for flush."""

    def __init__(self, store: BlockStore) -> None:
        self._store = store
        self._head = store.head()
        self._records: list[BlockRecord] = []
        self._state: dict[bytes, bytes | None] = {}
        self._heights: dict[bytes, int] = {}  # block hash -> height
        self._txs: dict[bytes, tuple[int, int]] = {}  # tx id -> (height, position)
        self.sidecars = StagedSidecars(store.sidecars)

    @property
    def staged(self) -> int:
        """Blocks staged and not yet flushed."""
        return len(self._records)

    # the reads of BlockStore ---------------------------------------------------------

    def head(self) -> tuple[int, bytes] | None:
        return self._head

    def _record(self, height: int) -> BlockRecord | None:
        if not self._records:
            return None
        index = height - self._records[0].height
        return self._records[index] if 0 <= index < len(self._records) else None

    def block_bytes(self, height: int) -> bytes | None:
        record = self._record(height)
        return record.block_bytes if record else self._store.block_bytes(height)

    def commit_bytes(self, height: int) -> bytes | None:
        record = self._record(height)
        return record.commit_bytes if record else self._store.commit_bytes(height)

    def block_height(self, block_hash: bytes) -> int | None:
        height = self._heights.get(block_hash)
        return height if height is not None else self._store.block_height(block_hash)

    def tx_location(self, tx_id: bytes) -> tuple[int, int] | None:
        location = self._txs.get(tx_id)
        return location if location is not None else self._store.tx_location(tx_id)

    def get_state(self, key: bytes) -> bytes | None:
        if key in self._state:
            return self._state[key]
        return self._store.get_state(key)

    def iter_state(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        merged = dict(self._store.iter_state(prefix))
        for key, value in self._state.items():
            if key.startswith(prefix):
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
        yield from sorted(merged.items())

    def get_meta(self, name: str) -> bytes | None:
        return self._store.get_meta(name)

    # staging and flushing ------------------------------------------------------------

    def commit_block(self, *, height: int, block_hash: bytes, block_bytes: bytes,
                     commit_bytes: bytes, tx_ids: Sequence[bytes],
                     state_changes: Mapping[bytes, bytes | None],
                     index: Mapping[bytes, bytes | None] | None = None) -> None:
        """Stage a block as :meth:`BlockStore.commit_block` would store it (same checks)."""
        expected = 0 if self._head is None else self._head[0] + 1
        if height != expected:
            raise HeightMismatchError(f"cannot commit height {height}: next is {expected}")
        if not block_hash:
            raise ValueError(f"block {height} has an empty hash")
        if len(set(tx_ids)) != len(tx_ids):
            raise ValueError(f"block {height} lists a transaction id twice")
        self._records.append(BlockRecord(height, bytes(block_hash), block_bytes, commit_bytes,
                                         list(tx_ids), dict(state_changes), dict(index or {})))
        self.sidecars.changes.update(index or {})
        self._heights[bytes(block_hash)] = height
        for position, tx_id in enumerate(tx_ids):
            self._txs[tx_id] = (height, position)
        self._state.update(state_changes)
        self._head = (height, bytes(block_hash))

    def flush(self) -> int:
        """Write every staged block to the store in one synced batch; returns how many.

        Blocking (it fsyncs): call it from a worker thread. Afterwards this layer is empty
        and reads go to the store, which now holds the blocks.
        """
        records, count = self._records, len(self._records)
        self._store.commit_blocks(records)
        self._records = []
        self._state.clear()
        self._heights.clear()
        self._txs.clear()
        self.sidecars.changes.clear()
        return count
