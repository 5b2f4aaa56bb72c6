"""Peer scores and bans, by node id and by address; pure (the caller passes ``now``).

A peer starts at 0; each piece of misbehaviour subtracts points, and a negative score decays
back toward 0 at :data:`DECAY_PER_S`, so a rare glitch is forgiven and a steady stream of
garbage is not. When a score falls below :data:`BAN_THRESHOLD` the node id is banned and
:meth:`Scoreboard.penalize` returns True: the caller disconnects it.

A node id costs nothing to make, so a ban by node id alone is evaded with a new key. The
address the offender connected from (its IP; for IPv6 its /64, which whoever has one address
of has them all) is banned too, for ``address_ban_s``: a new key from a banned address is
refused before its handshake. Both bans grow for a repeat offender:
the n-th ban of the same node id or address within :data:`OFFENCE_MEMORY_S` lasts
``2**(n-1)`` times the first, up to :data:`MAX_BAN_S`. A connection that sends bad frames
before its handshake names a node charges the address it came from instead
(:meth:`Scoreboard.penalize_address`, same points, threshold and decay), which is banned the
same way. An address ban shuts out every node
behind that address (a NAT); ``address_ban_s = 0`` turns address bans off, as a localnet whose
nodes all share 127.0.0.1 does.

``now`` is any monotonic clock in seconds (the host passes ``trio.current_time()``); bans do
not survive a restart.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Generic, TypeVar

from .slots import address_key

# Penalties, in points, by what the peer did (the caller adds a reason text for its log).
UNDECODABLE_FRAME = 10  # a frame that is not msgpack, or a text frame
INVALID_MESSAGE = 20  # well-formed msgpack that is not a valid message, or one out of place
BAD_SIGNATURE = 50  # a transaction, vote or record with a signature that does not verify
INVALID_BLOCK = 50  # a block that breaks the chain rules
UNREQUESTED = 5  # an answer nobody asked for (e.g. blocks or txs not requested)
RATE_LIMITED = 2  # a request over its kind's rate (dropped): 50 in quick succession ban

BAN_THRESHOLD = -100.0  # points; a score below this bans the node
DECAY_PER_S = 1.0  # points per second a negative score recovers toward 0
BAN_S = 600.0  # seconds a node (and its address) stays banned the first time
MAX_BAN_S = 7 * 86400.0  # seconds; a repeat offender's ban doubles each time up to this
OFFENCE_MEMORY_S = 7 * 86400.0  # seconds after its last ban an offender starts again from 1
MAX_TRACKED = 10_000  # node ids (and addresses) with a score or a ban kept; then the oldest go
# kinds of penalty reason counted apart (in the order first given); later kinds are counted
# as OTHER_REASON. A reason's kind is the caller's text before its first colon, which for a
# few callers holds an error's message: without a bound such kinds would pile up. A kind is
# counted by its words without digits (see countable_reason), so no height, hash or id.
MAX_PENALTY_REASONS = 64
OTHER_REASON = "other"
_WORD = re.compile(r"[A-Za-z_]+")


def countable_reason(reason: str) -> str:
    """``reason`` as :attr:`Scoreboard.penalties` counts it: its words of letters and ``_``
    only (a height, a hash or an id is dropped), or OTHER_REASON if none is left."""
    return " ".join(w for w in reason.split() if _WORD.fullmatch(w)) or OTHER_REASON

_K = TypeVar("_K", bytes, str)


class _Bans(Generic[_K]):
    """Bans of one kind of key (node ids or addresses), growing for repeat offenders."""

    def __init__(self) -> None:
        self.until: dict[_K, float] = {}  # key -> banned until
        self.offences: dict[_K, tuple[int, float]] = {}  # key -> (bans so far, last at)

    def ban(self, key: _K, seconds: float, now: float) -> None:
        until = max(now + seconds, self.until.pop(key, now))
        self.until[key] = until
        self._prune(now)

    def escalate(self, key: _K, first_s: float, now: float) -> float:
        """Ban ``key`` for its next offence; return the seconds of this ban."""
        count, last = self.offences.pop(key, (0, now))
        count = count + 1 if now - last <= OFFENCE_MEMORY_S else 1
        self.offences[key] = (count, now)
        seconds = min(MAX_BAN_S, first_s * 2 ** min(count - 1, 32))
        self.ban(key, max(seconds, first_s), now)
        return seconds

    def is_banned(self, key: _K, now: float) -> bool:
        until = self.until.get(key)
        if until is None:
            return False
        if now < until:
            return True
        del self.until[key]
        return False

    def active(self, now: float) -> dict[_K, float]:
        return {key: until - now for key, until in self.until.items() if until > now}

    def _prune(self, now: float) -> None:
        if len(self.until) > MAX_TRACKED:
            for key in [k for k, until in self.until.items() if until <= now]:
                del self.until[key]
            while len(self.until) > MAX_TRACKED:  # the ban that ends first goes
                del self.until[min(self.until, key=self.until.__getitem__)]
        if len(self.offences) > MAX_TRACKED:
            for key in [k for k, (_, at) in self.offences.items() if now - at > OFFENCE_MEMORY_S]:
                del self.offences[key]
            while len(self.offences) > MAX_TRACKED:  # the oldest offence goes
                del self.offences[next(iter(self.offences))]


class Scoreboard:
    """Scores and bans of peers by node id, and bans by address.

    Resource handling: at most :data:`MAX_TRACKED` scores, bans and offence counts of each kind
    are kept; scores that have decayed to 0 and bans that have expired are pruned first, then
    the oldest.
    """

    def __init__(self, *, ban_s: float = BAN_S, address_ban_s: float = BAN_S,
                 threshold: float = BAN_THRESHOLD, decay_per_s: float = DECAY_PER_S) -> None:
        if ban_s < 0 or address_ban_s < 0 or threshold >= 0 or decay_per_s < 0:
            raise ValueError("ban_s, address_ban_s and decay_per_s must be >= 0 and threshold < 0")
        self.ban_s = ban_s
        self.address_ban_s = address_ban_s
        self.threshold = threshold
        self.decay_per_s = decay_per_s
        self._scores: dict[bytes, tuple[float, float]] = {}  # node id -> (score, at)
        # address -> (score, at): what connections from it did before a handshake named a node
        self._address_scores: dict[str, tuple[float, float]] = {}
        self._nodes: _Bans[bytes] = _Bans()
        self._addresses: _Bans[str] = _Bans()
        # how often each reason was given (countable_reason, at most MAX_PENALTY_REASONS + 1)
        self.penalties: Counter[str] = Counter()
        self.bans_issued = 0  # node ids banned since the start (by score or by the operator)

    def score(self, node_id: bytes, now: float) -> float:
        """The node's score at ``now`` (0 for a node never penalised); never above 0."""
        return self._decayed(self._scores.get(node_id), now)

    def address_score(self, address: str, now: float) -> float:
        """The score of ``address`` (an IP; an IPv6 one's /64) at ``now`` from
        :meth:`penalize_address`."""
        return self._decayed(self._address_scores.get(address_key(address)), now)

    def _decayed(self, entry: tuple[float, float] | None, now: float) -> float:
        if entry is None:
            return 0.0
        score, at = entry
        return min(0.0, score + self.decay_per_s * max(0.0, now - at))

    def last_penalty(self, node_id: bytes) -> tuple[float, float] | None:
        """The node's ``(score, at)`` as of its last penalty (None: none remembered). Every
        penalty makes a new tuple, so ``is`` tells whether one came in between two calls."""
        return self._scores.get(node_id)

    def penalize(self, node_id: bytes, points: float, reason: str, now: float,
                 address: str | None = None) -> bool:
        """Subtract ``points`` (> 0) from the node's score.

        Returns True when the node is banned, now or already: its score fell below the
        threshold (the node id is then banned for its next ban length, see the module doc, and
        so is ``address`` when given and address bans are on; its score starts again from 0
        afterwards) or it was banned before. The caller disconnects it.
        """
        self._count(points, reason)
        if self.is_banned(node_id, now):
            return True
        score = self.score(node_id, now) - points
        self._scores.pop(node_id, None)  # re-insert: the dict stays ordered by last change
        if score < self.threshold:
            self._nodes.escalate(node_id, self.ban_s, now)
            self.bans_issued += 1
            if address is not None and self.address_ban_s > 0:
                self._addresses.escalate(address_key(address), self.address_ban_s, now)
            return True
        self._scores[node_id] = (score, now)
        self._prune(now)
        return False

    def penalize_address(self, address: str, points: float, reason: str, now: float) -> bool:
        """Subtract ``points`` (> 0) from the score of ``address`` (an IP), for what a connection
        from it did before its handshake named a node (no node id to charge yet).

        Returns True when the address is banned, now or already: its score fell below the
        threshold while address bans are on (it is banned for its next ban length and starts
        again from 0). With address bans off (``address_ban_s = 0``) nothing is banned.
        """
        self._count(points, reason)
        if self.is_address_banned(address, now):
            return True
        score = self.address_score(address, now) - points
        key = address_key(address)  # an IPv6 address is charged and banned as its /64
        self._address_scores.pop(key, None)  # re-insert: ordered by last change
        if score < self.threshold and self.address_ban_s > 0:
            self._addresses.escalate(key, self.address_ban_s, now)
            return True
        self._address_scores[key] = (score, now)
        self._prune(now)
        return False

    def _count(self, points: float, reason: str) -> None:
        if points <= 0:
            raise ValueError(f"a penalty is a positive number of points, got {points}")
        penalties, counted = self.penalties, countable_reason(reason)
        if counted not in penalties and len(penalties) >= MAX_PENALTY_REASONS:
            counted = OTHER_REASON
        penalties[counted] += 1

    def ban(self, node_id: bytes, seconds: float, now: float) -> None:
        """Ban the node until ``now + seconds`` (a longer existing ban is kept)."""
        if seconds < 0:
            raise ValueError(f"a ban lasts >= 0 seconds, got {seconds}")
        self._nodes.ban(node_id, seconds, now)
        self._scores.pop(node_id, None)
        self.bans_issued += 1

    def unban(self, node_id: bytes) -> None:
        """Lift the node's ban and forget its score and offences."""
        self._nodes.until.pop(node_id, None)
        self._nodes.offences.pop(node_id, None)
        self._scores.pop(node_id, None)

    def is_banned(self, node_id: bytes, now: float) -> bool:
        return self._nodes.is_banned(node_id, now)

    def is_address_banned(self, address: str, now: float) -> bool:
        """Whether connections from (and dials to) ``address`` (an IP) are refused now: its
        ban covers an IPv6 address's whole /64 (:func:`~.slots.address_key`)."""
        return self._addresses.is_banned(address_key(address), now)

    def banned_for(self, node_id: bytes, now: float) -> float:
        """Seconds the node's ban has left (0 if not banned)."""
        return max(0.0, self._nodes.until.get(node_id, now) - now)

    def address_banned_for(self, address: str, now: float) -> float:
        """Seconds the address's ban (an IPv6 one's /64) has left (0 if not banned)."""
        return max(0.0, self._addresses.until.get(address_key(address), now) - now)

    def bans(self, now: float) -> dict[bytes, float]:
        """The nodes banned at ``now``, with the seconds each ban has left."""
        return self._nodes.active(now)

    def address_bans(self, now: float) -> dict[str, float]:
        """The addresses banned at ``now`` (an IPv6 one as its /64), with the seconds each ban
        has left."""
        return self._addresses.active(now)

    def _prune(self, now: float) -> None:
        for scores in (self._scores, self._address_scores):
            if len(scores) > MAX_TRACKED:
                for key in [k for k, entry in scores.items() if self._decayed(entry, now) == 0]:
                    del scores[key]
                while len(scores) > MAX_TRACKED:
                    del scores[next(iter(scores))]
