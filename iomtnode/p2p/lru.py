"""A bounded set that forgets its oldest members (seen-caches of ids)."""

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
