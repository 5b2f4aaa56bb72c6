"""LevelDB's memory in the node: tables read with pread, not mapped.

Each check runs in a fresh interpreter: LevelDB reads its limit of mapped tables once per
process, when the first database is opened."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from iomtnode.store.memory import (
    ANCHOR_SYMBOL,
    LIMIT_SYMBOL,
    symbol_values,
)

SUBPROCESS_TIMEOUT_S = 60
BLOCK_BYTES = 3 * 2**20  # about a block of 10,000 readings
BLOCKS = 4

_READ_BLOCKS = f"""
import json, pathlib, sys
from iomtnode.store import BlockStore
path = pathlib.Path(sys.argv[1])
with BlockStore.open(path) as store:
    if store.head() is None:
        for height in range({BLOCKS}):
            store.commit_block(height=height, block_hash=bytes([height + 1]) * 32,
                               block_bytes=bytes([height]) * {BLOCK_BYTES}, commit_bytes=b"c",
                               tx_ids=[], state_changes={{}})
        store._db.compact_range()  # the blocks into table files
    for height in range({BLOCKS}):
        assert store.block_bytes(height) == bytes([height]) * {BLOCK_BYTES}
    mapped = [line for line in open("/proc/self/maps") if line.rstrip().endswith(".ldb")]
print(json.dumps(mapped))
"""


def _mapped_tables(path: Path) -> list[str]:
    for _ in range(2):  # the second run reads the blocks from table files only
        done = subprocess.run([sys.executable, "-c", _READ_BLOCKS, str(path)], check=True,
                              capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    return json.loads(done.stdout)


def test_reading_blocks_maps_no_table_file_into_memory(tmp_path: Path) -> None:
    # LevelDB's default maps every table it reads: each page a read touched stays in the
    # node's RSS (110 MB of a node holding 1,000,000 readings, serving 20 blocks)
    assert _mapped_tables(tmp_path / "data") == []


def test_plyvel_leveldb_has_the_mmap_limit_symbol() -> None:
    # the wheel's library keeps its symbol table; without it the tables stay mapped
    import plyvel._plyvel  # noqa: F401  (loads the library)

    from iomtnode.store.memory import leveldb_library

    library = leveldb_library()
    assert library is not None
    assert set(symbol_values(library, {LIMIT_SYMBOL, ANCHOR_SYMBOL})) == {
        LIMIT_SYMBOL, ANCHOR_SYMBOL}

