"""The node's storage: a LevelDB store behind a narrow, bytes-level interface."""

from iomtnode.store.leveldb import (
    BlockRecord,
    BlockStore,
    HeightMismatchError,
    StoreCorruptError,
    StoreError,
    StoreFormatError,
    StoreLockedError,
)
from iomtnode.store.staged import StagedStore

__all__ = [
    "BlockRecord",
    "BlockStore",
    "HeightMismatchError",
    "StagedStore",
    "StoreCorruptError",
    "StoreError",
    "StoreFormatError",
    "StoreLockedError",
]
