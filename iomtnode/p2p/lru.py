"""Bounded sets that forget their oldest members (seen-caches of ids): by count, and for
32-byte ids by bytes of memory."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class BoundedSet:
    """Remembers at most ``capacity`` members; adding past that forgets the oldest."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: OrderedDict[Hashable, None] = OrderedDict()

    def __contains__(self, item: Hashable) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Hashable) -> bool:
        """Add ``item``; False if it was already there."""
        if item in self._items:
            return False
        self._items[item] = None
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return True

    def discard(self, item: Hashable) -> None:
        self._items.pop(item, None)


ID_ENTRY_BYTES = 128  # memory per remembered 32-byte id: the bytes object and its set slot


class IdSet:
    """Remembers the most recent ids (32-byte digests) within ``max_bytes`` of memory.

    Two generations of sets: ids are added to the young one; when it holds half the
    capacity (``max_bytes // ID_ENTRY_BYTES``) it becomes the old one and the old one is
    dropped. So the last half-capacity ids added are always remembered, never more than the
    capacity are, and an add or a lookup is one or two set operations (no per-entry links,
    as an ordered dict has: about a third of its memory).

    Resource handling: at most ``max_bytes`` for ids that are not shared with anything else
    (:data:`ID_ENTRY_BYTES` each, measured with tracemalloc), less when they are."""

    __slots__ = ("_half", "_old", "_young", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 2 * ID_ENTRY_BYTES:
            raise ValueError(f"max_bytes must be at least {2 * ID_ENTRY_BYTES}")
        self.max_bytes = max_bytes
        self._half = max_bytes // ID_ENTRY_BYTES // 2
        self._young: set[bytes] = set()
        self._old: set[bytes] = set()

    @property
    def capacity(self) -> int:
        """The most ids remembered at once."""
        return 2 * self._half

    def __contains__(self, item: bytes) -> bool:
        return item in self._young or item in self._old

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def add(self, item: bytes) -> bool:
        """Add ``item``; False if it was already there."""
        if item in self._young or item in self._old:
            return False
        young = self._young
        young.add(item)
        if len(young) >= self._half:
            self._old, self._young = young, set()
        return True

    def discard(self, item: bytes) -> None:
        self._young.discard(item)
        self._old.discard(item)
