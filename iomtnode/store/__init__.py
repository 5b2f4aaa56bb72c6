"""The node's storage: a LevelDB store behind a narrow, bytes-level interface."""

from iomtnode.store.leveldb import (
    BlockStore,
    HeightMismatchError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
)

__all__ = [
    "BlockStore",
    "HeightMismatchError",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
]
