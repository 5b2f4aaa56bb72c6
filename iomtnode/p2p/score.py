"""Peer scores and bans, keyed by node id; pure (the caller passes ``now``).

A peer starts at 0; each piece of misbehaviour subtracts points, and a negative score decays
back toward 0 at :data:`DECAY_PER_S`, so a rare glitch is forgiven and a steady stream of
garbage is not. When a score falls below :data:`BAN_THRESHOLD` the node id is banned for
``ban_s`` seconds and :meth:`Scoreboard.penalize` returns True: the caller disconnects it.

Bans are by node id only, never by IP address: addresses of mobile peers change and are shared
behind NAT, and nothing is trusted (or distrusted) because of where it comes from. A node id
costs a key and a completed handshake, and every connection is authenticated by it.

``now`` is any monotonic clock in seconds (the host passes ``trio.current_time()``); bans do
not survive a restart.
"""

from __future__ import annotations

from collections import Counter

# Penalties, in points, by what the peer did (the caller adds a reason text for its log).
UNDECODABLE_FRAME = 10  # a frame that is not msgpack, or a text frame
INVALID_MESSAGE = 20  # well-formed msgpack that is not a valid message, or one out of place
BAD_SIGNATURE = 50  # a transaction, vote or record with a signature that does not verify
INVALID_BLOCK = 50  # a block that breaks the chain rules
UNREQUESTED = 5  # an answer nobody asked for (e.g. blocks or txs not requested)
RATE_LIMITED = 2  # a request over its kind's rate (dropped): 50 in quick succession ban

BAN_THRESHOLD = -100.0  # points; a score below this bans the node
DECAY_PER_S = 1.0  # points per second a negative score recovers toward 0
BAN_S = 600.0  # seconds a node stays banned by default
MAX_TRACKED = 10_000  # node ids with a score (or a ban) kept; beyond, the oldest are forgotten


class Scoreboard:
    """Scores and bans of peers by node id.

    Resource handling: at most :data:`MAX_TRACKED` scores and as many bans are kept; scores
    that have decayed to 0 and bans that have expired are pruned first, then the oldest.
    """

    def __init__(self, *, ban_s: float = BAN_S, threshold: float = BAN_THRESHOLD,
                 decay_per_s: float = DECAY_PER_S) -> None:
        if ban_s < 0 or threshold >= 0 or decay_per_s < 0:
            raise ValueError("ban_s and decay_per_s must be >= 0 and threshold < 0")
        self.ban_s = ban_s
        self.threshold = threshold
        self.decay_per_s = decay_per_s
        self._scores: dict[bytes, tuple[float, float]] = {}  # node id -> (score, at)
        self._bans: dict[bytes, float] = {}  # node id -> banned until
        self.penalties: Counter[str] = Counter()  # how often each reason was given

    def score(self, node_id: bytes, now: float) -> float:
        """The node's score at ``now`` (0 for a node never penalised); never above 0."""
        entry = self._scores.get(node_id)
        if entry is None:
            return 0.0
        score, at = entry
        return min(0.0, score + self.decay_per_s * max(0.0, now - at))

    def penalize(self, node_id: bytes, points: float, reason: str, now: float) -> bool:
        """Subtract ``points`` (> 0) from the node's score.

        Returns True when the node is banned, now or already: its score fell below the
        threshold (it is then banned for ``ban_s`` seconds and its score starts again from 0
        afterwards) or it was banned before. The caller disconnects it.
        """
        if points <= 0:
            raise ValueError(f"a penalty is a positive number of points, got {points}")
        self.penalties[reason] += 1
        if self.is_banned(node_id, now):
            return True
        score = self.score(node_id, now) - points
        self._scores.pop(node_id, None)  # re-insert: the dict stays ordered by last change
        if score < self.threshold:
            self.ban(node_id, self.ban_s, now)
            return True
        self._scores[node_id] = (score, now)
        self._prune(now)
        return False

    def ban(self, node_id: bytes, seconds: float, now: float) -> None:
        """Ban the node until ``now + seconds`` (a longer existing ban is kept)."""
        if seconds < 0:
            raise ValueError(f"a ban lasts >= 0 seconds, got {seconds}")
        until = max(now + seconds, self._bans.pop(node_id, now))
        self._bans[node_id] = until
        self._scores.pop(node_id, None)
        self._prune(now)

    def unban(self, node_id: bytes) -> None:
        """Lift the node's ban and forget its score."""
        self._bans.pop(node_id, None)
        self._scores.pop(node_id, None)

    def is_banned(self, node_id: bytes, now: float) -> bool:
        until = self._bans.get(node_id)
        if until is None:
            return False
        if now < until:
            return True
        del self._bans[node_id]
        return False

    def bans(self, now: float) -> dict[bytes, float]:
        """The nodes banned at ``now``, with the seconds each ban has left."""
        return {node: until - now for node, until in self._bans.items() if until > now}

    def _prune(self, now: float) -> None:
        if len(self._scores) > MAX_TRACKED:
            for node in [n for n in self._scores if self.score(n, now) == 0.0]:
                del self._scores[node]
            while len(self._scores) > MAX_TRACKED:
                del self._scores[next(iter(self._scores))]
        if len(self._bans) > MAX_TRACKED:
            for node in [n for n, until in self._bans.items() if until <= now]:
                del self._bans[node]
            while len(self._bans) > MAX_TRACKED:  # the ban that ends first goes
                del self._bans[min(self._bans, key=self._bans.__getitem__)]
