"""The store's errors: every one a :class:`StoreError`."""

from __future__ import annotations


class StoreError(RuntimeError):
    """Base class of every store error."""


class StoreLockedError(StoreError):
    """Another process holds the store's LevelDB lock."""


class StoreCorruptError(StoreError):
    """The store's contents contradict themselves (for example, the head's block is missing)."""


class HeightMismatchError(StoreError):
    """``commit_block`` got a height other than the head's height + 1 (0 on an empty store)."""


class StoreFormatError(StoreError):
    """The store was laid out by a newer release of iomtnode than this one (says what to do)."""
