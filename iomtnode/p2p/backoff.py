"""Capped exponential backoff with full jitter; pure (the caller sleeps).

Attempt ``n`` (from 0) waits a uniformly random time in ``[0, min(cap_s, base_s * 2**n)]``
("full jitter", as in the AWS architecture blog's "Exponential Backoff And Jitter"): peers that
lost the same node at the same moment do not all come back at the same moment. The random
source is passed in, so a seeded one makes a run repeatable.
"""

from __future__ import annotations

import random

BASE_S = 0.5  # seconds; the first retry waits up to this
CAP_S = 30.0  # seconds; no retry waits longer than this
_MAX_EXPONENT = 60  # 2**60 * any sane base is far past any cap; avoids float overflow


class Backoff:
    """Delays for successive retries of one thing (e.g. dialing one peer)."""

    def __init__(self, base_s: float = BASE_S, cap_s: float = CAP_S, *,
                 rng: random.Random) -> None:
        if not 0 < base_s <= cap_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got base_s={base_s}, cap_s={cap_s}")
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng
        self.attempts = 0  # delays handed out since the last reset

    def ceiling(self) -> float:
        """The largest delay the next call to :meth:`next_delay` can return."""
        return min(self.cap_s, self.base_s * 2 ** min(self.attempts, _MAX_EXPONENT))

    def next_delay(self) -> float:
        """Seconds to wait before the next retry; each call counts one more failure."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Start again from ``base_s`` (call it after a success)."""
        self.attempts = 0
