"""Node metrics kept in memory: bounded windows of recent latencies (with a histogram of
every one since the start) and the node's own figures, for ``status`` and the Prometheus
endpoint (:mod:`iomtnode.telemetry`)."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass
from typing import Any

from .core.block import Block
from .core.tx import Reading

WINDOW_SAMPLES = 20_000  # the most recent samples a window keeps
# upper bounds (ms, inclusive) of a latency histogram's buckets; one more bucket holds the
# rest. From a LAN's gossip hop to a minute: a block is final well under a second on a
# healthy network, in seconds under load, and tens of seconds tell of an outage.
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000)


@dataclass(frozen=True, slots=True)
class Histogram:
    """Every latency since the start, counted in buckets (a Prometheus histogram)."""

    bounds_ms: tuple[float, ...]  # each bucket's upper bound (inclusive), ascending
    counts: tuple[int, ...]  # per bucket (not cumulative); one more: above the last bound
    sum_ms: float  # of every latency (a negative one counted as 0)

    @property
    def count(self) -> int:
        return sum(self.counts)


class LatencyWindow:
    """The last ``WINDOW_SAMPLES`` latencies (ms), summarised as p50 / p99 / max, and every
    one since the start in a :class:`Histogram`.

    :meth:`add` is called once per reading (at commit, or as a peer's is admitted): a deque
    append, a bisection of 13 bounds and two additions, about 0.3 us together."""

    def __init__(self, size: int = WINDOW_SAMPLES) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.total = 0
        self._counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self._sum_ms = 0.0

    def add(self, ms: float) -> None:
        self._samples.append(ms)
        self.total += 1
        if ms < 0:  # the device's clock is ahead of this node's
            ms = 0
        self._counts[bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
        self._sum_ms += ms

    def histogram(self) -> Histogram:
        return Histogram(LATENCY_BUCKETS_MS, tuple(self._counts), self._sum_ms)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self._samples)
        if not ordered:
            return {"p50": None, "p99": None, "max": None, "samples": 0}

        def pick(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 1)

        return {"p50": pick(0.5), "p99": pick(0.99), "max": round(ordered[-1], 1),
                "samples": len(ordered)}


@dataclass(frozen=True, slots=True)
class NodeStats:
    """The node's own figures at one moment (``status``, metrics)."""

    # from a reading's own timestamp (its device's clock) to this node: admitted from a
    # peer / committed here; p50, p99, max and samples of the recent window
    gossip_delay_ms: dict[str, Any]
    commit_delay_ms: dict[str, Any]
    # from a peer's admission of its clients' transactions to their admission here (its
    # stamp on the push): the gossip hop alone; p50, p99, max and samples of the window
    delivery_delay_ms: dict[str, Any]
    # (committed transactions, wall-clock ms) just after this node's latest commit; None
    # before its first since it started: an exact point of its progress
    last_commit: tuple[int, int] | None
    started_at: float  # wall-clock seconds
    # the same delays, every one since the start
    gossip_delay: Histogram
    commit_delay: Histogram


class NodeFigures:
    """What the node itself measures (a node owns one): delays of readings and its latest
    commit. :meth:`committed` is called from the node's commit listener; admission adds
    to :attr:`gossip_delay` as it admits peers' readings."""

    def __init__(self, started_at: float) -> None:
        self.gossip_delay = LatencyWindow()
        self.commit_delay = LatencyWindow()
        self.delivery_delay = LatencyWindow()
        self.last_commit: tuple[int, int] | None = None
        self.started_at = started_at

    def committed(self, block: Block, committed_txs: int, now_ms: int) -> None:
        self.last_commit = (committed_txs, now_ms)
        for tx in block.txs:
            if isinstance(tx.body, Reading):
                self.commit_delay.add(now_ms - tx.body.ts_ms)

    def stats(self) -> NodeStats:
        return NodeStats(self.gossip_delay.summary(), self.commit_delay.summary(),
                         self.delivery_delay.summary(), self.last_commit, self.started_at,
                         self.gossip_delay.histogram(), self.commit_delay.histogram())
