"""Node metrics kept in memory: bounded windows of recent latencies, for `status`."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

WINDOW_SAMPLES = 20_000  # the most recent samples a window keeps


class LatencyWindow:
    """The last ``WINDOW_SAMPLES`` latencies (ms), summarised as p50 / p99 / max."""

    def __init__(self, size: int = WINDOW_SAMPLES) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.total = 0

    def add(self, ms: float) -> None:
        self._samples.append(ms)
        self.total += 1

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self._samples)
        if not ordered:
            return {"p50": None, "p99": None, "max": None, "samples": 0}

        def pick(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 1)

        return {"p50": pick(0.5), "p99": pick(0.99), "max": round(ordered[-1], 1),
                "samples": len(ordered)}
