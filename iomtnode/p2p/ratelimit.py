"""Token buckets per peer and request kind: how often a peer may make this node work.

A request is a message that makes this node look something up and answer (a block's
transactions, a range of blocks, transactions by id, peer records). Each request kind is
registered with the router with a :class:`Rate` (declared next to the message kind by the
layer that owns it); every request a peer sends takes one token from that peer's bucket for
its kind, and the bucket refills at ``per_s`` tokens a second up to ``burst``. A request that
finds its bucket empty is not handled: the router drops it and charges the peer
:data:`~.score.RATE_LIMITED`, so a peer that keeps at it is banned, and one that overshoots
once is forgiven as its score decays.

Rates are sized from what honest peers send (each kind's constant says how), with room to
spare: honest load never meets them. Where the protocol alone does not bound how fast an
honest node asks (a catch-up asks as fast as it verifies), the asking side paces itself
with :meth:`RequestLimits.take_or_wait` at the same rate. A charge is two dict lookups and
some arithmetic; no task, no allocation beyond a bucket per (peer, kind) made on the peer's
first request.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

_ROUNDING = 1e-6  # tokens: what float rounding of the refill may leave a bucket short


@dataclass(frozen=True, slots=True)
class Rate:
    """How often a peer may send one kind of request: ``per_s`` requests a second sustained,
    ``burst`` at once after a quiet spell (the bucket's size)."""

    per_s: float
    burst: float

    def __post_init__(self) -> None:
        if self.per_s <= 0 or self.burst < 1:
            raise ValueError(f"a rate needs per_s > 0 and burst >= 1, got {self}")


class TokenBucket:
    """``rate`` tokens a second up to ``burst``, full at the start; pure, the time (seconds,
    monotonic) is an argument. The one refill rule behind every rate limit of the node:
    requests per peer and kind (:class:`RequestLimits`), connections per address
    (:mod:`.acceptrate`), dials of new records (:mod:`.dialer`), API requests per client."""

    __slots__ = ("_at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._at = now

    def refill(self, now: float) -> float:
        """The tokens there now (what has dripped in since last time, up to ``burst``)."""
        tokens = self.tokens + (now - self._at) * self.rate
        self.tokens = tokens if tokens < self.burst else float(self.burst)
        self._at = now
        return self.tokens

    def try_take(self, now: float) -> bool:
        """Take a token if there is one."""
        if self.refill(now) < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def take(self, now: float, count: int = 1) -> float:
        """Take ``count`` tokens even if they are not there yet; return the seconds to wait
        before using them (0: now). The debt is carried, so a caller that waits as told keeps
        to ``rate``."""
        self.tokens = self.refill(now) - count
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def take_or_wait(self, now: float) -> float:
        """Take a token and return 0.0, or return the seconds until one is there (nothing
        taken)."""
        if self.refill(now) < 1.0 - _ROUNDING:  # (after a wait of exactly what this said,
            return (1.0 - self.tokens) / self.rate  # rounding may leave a hair less)
        self.tokens -= 1.0
        return 0.0


class RequestLimits:
    """The buckets of every connected peer (module doc). ``clock()`` is the time in seconds
    (monotonic: the router passes ``trio.current_time``); ``rates`` maps a request kind to its
    :class:`Rate`; kinds not in it are never limited.

    Resource handling: one small bucket per peer and kind it has used; a peer's buckets go
    with :meth:`forget` (when it disconnects)."""

    def __init__(self, clock: Callable[[], float], rates: Mapping[type, Rate] | None = None
                 ) -> None:
        self._clock = clock
        self._rates: dict[type, Rate] = dict(rates or {})
        self._buckets: dict[Hashable, dict[type, TokenBucket]] = {}
        self.dropped = 0  # requests refused for their rate, all peers, all kinds

    def add(self, kind: type, rate: Rate) -> None:
        """Limit ``kind`` to ``rate`` per peer (a kind is limited once: ValueError after)."""
        if kind in self._rates:
            raise ValueError(f"{kind.__name__} has a rate already")
        self._rates[kind] = rate

    def rate(self, kind: type) -> Rate | None:
        """The rate ``kind`` is limited to, None if it is not."""
        return self._rates.get(kind)

    def charge(self, peer: Hashable, kind: type) -> Rate | None:
        """Take a token from ``peer``'s bucket for ``kind``. Returns None if there was one,
        else the rate the peer is over (the request is to be dropped). Always None (and no
        clock read) for a kind without a rate."""
        rate = self._rates.get(kind)
        if rate is None:
            return None
        now = self._clock()
        if self._bucket(peer, kind, rate, now).try_take(now):
            return None
        self.dropped += 1
        return rate

    def take_or_wait(self, peer: Hashable, kind: type) -> float:
        """The requesting side's :meth:`charge`: take a token from ``peer``'s bucket for
        ``kind`` and return 0.0, or return the seconds until one is there (nothing taken,
        nothing counted as dropped). A node that waits that long before each request it
        sends stays within the rate (a kind without a rate: always 0.0)."""
        rate = self._rates.get(kind)
        if rate is None:
            return 0.0
        now = self._clock()
        return self._bucket(peer, kind, rate, now).take_or_wait(now)

    def _bucket(self, peer: Hashable, kind: type, rate: Rate, now: float) -> TokenBucket:
        buckets = self._buckets.get(peer)
        if buckets is None:
            buckets = self._buckets[peer] = {}
        bucket = buckets.get(kind)
        if bucket is None:
            bucket = buckets[kind] = TokenBucket(rate.per_s, rate.burst, now)
        return bucket

    @property
    def peers(self) -> int:
        """Peers with buckets now."""
        return len(self._buckets)

    def forget(self, peer: Hashable) -> None:
        """``peer`` is gone: its buckets go too."""
        self._buckets.pop(peer, None)
