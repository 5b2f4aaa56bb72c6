"""Crash-test writer: append synthetic blocks to a store as fast as possible until killed.

Run as ``python crash_writer.py STORE_DIR [BATCH]``. It opens the store, continues from its head (or
from height 0), and after every ``commit_block`` returns prints the committed height on its own line
and flushes, so the parent knows which heights were durable before it sends SIGKILL. With BATCH > 1
it writes BATCH blocks per ``commit_blocks`` call (as a syncing node does) and prints the last
height of each batch.

Every block is a pure function of its height (``synthetic_block``), so the test can check any
height it finds in the store. State per block ``h``: ``counter`` = h; ``k/<h>`` added and
``k/<h-3>`` deleted, so the live ``k/`` keys are exactly those of heights max(0, h-2)..h.
"""

from __future__ import annotations

import hashlib
import pathlib
import random
import sys
import time
from dataclasses import dataclass

from iomtnode.store import BlockRecord, BlockStore

WRITER_LIFETIME_S = 60.0  # exits by itself if nobody kills it (a crashed test leaves no orphan)
LARGE_BLOCK_EVERY = 5  # every 5th block spans several 32 KiB LevelDB log blocks
LARGE_BLOCK_BYTES = 100_000  # upper bound of a large block's size, bytes
SMALL_BLOCK_BYTES = 2_000  # upper bound of a small block's size, bytes
MAX_TXS = 6  # a block carries height % (MAX_TXS + 1) transactions, so some carry none
COUNTER_KEY = b"counter"
LIVE_KEY_PREFIX = b"k/"
LIVE_KEYS_KEPT = 3  # block h deletes the k/ key of block h-3


def height_bytes(height: int) -> bytes:
    return height.to_bytes(8, "big")


def live_key(height: int) -> bytes:
    return LIVE_KEY_PREFIX + height_bytes(height)


@dataclass(frozen=True)
class SyntheticBlock:
    height: int
    block_hash: bytes
    block_bytes: bytes
    commit_bytes: bytes
    tx_ids: list[bytes]
    state_changes: dict[bytes, bytes | None]


def synthetic_block(height: int) -> SyntheticBlock:
    """The block at ``height``: random-looking but fully determined by the height."""
    rng = random.Random(height)
    limit = LARGE_BLOCK_BYTES if height % LARGE_BLOCK_EVERY == 0 else SMALL_BLOCK_BYTES
    block = height_bytes(height) + rng.randbytes(rng.randrange(1, limit))
    tx_ids = [
        hashlib.blake2b(b"tx" + height_bytes(height) + bytes([i]), digest_size=32).digest()
        for i in range(height % (MAX_TXS + 1))
    ]
    state: dict[bytes, bytes | None] = {
        COUNTER_KEY: height_bytes(height),
        live_key(height): rng.randbytes(rng.randrange(1, 200)),
    }
    if height >= LIVE_KEYS_KEPT:
        state[live_key(height - LIVE_KEYS_KEPT)] = None
    return SyntheticBlock(
        height=height,
        block_hash=hashlib.blake2b(block, digest_size=32).digest(),
        block_bytes=block,
        commit_bytes=b"seal" + rng.randbytes(rng.randrange(64, 512)),
        tx_ids=tx_ids,
        state_changes=state,
    )


def main(path: pathlib.Path, batch: int = 1) -> None:
    deadline = time.monotonic() + WRITER_LIFETIME_S
    with BlockStore.open(path) as store:
        head = store.head()
        height = 0 if head is None else head[0] + 1
        while batch > 1 and time.monotonic() < deadline:  # as a syncing node writes
            blocks = [synthetic_block(h) for h in range(height, height + batch)]
            store.commit_blocks([BlockRecord(b.height, b.block_hash, b.block_bytes,
                                             b.commit_bytes, b.tx_ids, b.state_changes)
                                 for b in blocks])
            height += batch
            print(height - 1, flush=True)
        while time.monotonic() < deadline:
            block = synthetic_block(height)
            store.commit_block(
                height=block.height,
                block_hash=block.block_hash,
                block_bytes=block.block_bytes,
                commit_bytes=block.commit_bytes,
                tx_ids=block.tx_ids,
                state_changes=block.state_changes,
            )
            print(height, flush=True)
            height += 1


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
