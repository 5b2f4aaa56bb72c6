"""Where a node's time comes from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..consensus.settings import wall_clock_ms


@dataclass(frozen=True, slots=True)
class Clock:
    """Where a node's time comes from.

    ``now_ms`` is the wall clock in ms (block timestamps, the mempool's time window, reading
    delays). Trio's own time (timeouts, pings, intervals) is the clock of the trio run, which
    a test may make virtual (``trio.testing.MockClock``, pytest-trio's ``autojump_clock``).
    ``virtual=True`` says it is: then blocking work (signature checks, LevelDB writes, the
    write-ahead record's fsync) runs on the trio thread instead of in worker threads and
    processes, because a virtual clock jumps ahead while a worker runs and would fire timeouts
    that real time never would. A virtual clock's node is slower per transaction: for tests.
    """

    now_ms: Callable[[], int] = wall_clock_ms
    virtual: bool = False


WALL_CLOCK = Clock()
