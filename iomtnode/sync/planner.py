"""Which height to sync to, and which peer is asked for which range: pure (no I/O; the
caller passes the wall clock ``now_ms``).

Peers claim heights (their handshake, ``Status``, the blocks they relay). A claim is
*believed* unless the peer failed to serve it: a peer asked for blocks it claimed that
did not serve them (no answer in time, no block, or a block that does not check) has its
claim dropped, and for :data:`UNSERVED_IGNORED_S` whatever it claims from the first
height it did not serve is believed only up to the height before it (re-announcing does
not restore it; reconnecting neither: the record outlives the connection).

A believed claim is *plausible* if a chain that started at the genesis time could have
reached it by now: each block is stamped at least :data:`MIN_BLOCK_GAP_MS` after its
parent (the chain's rule), so no honest chain is higher than its age in those units,
plus :data:`CLOCK_SLACK_MS` for clocks that disagree.

What to sync to, in this order (:meth:`SyncPlanner.goal`):

1. the *supported* height: the highest that at least :data:`SUPPORT_PEERS` peers
   plausibly claim (or the one peer's claim when only one peer claims anything);
2. once that is reached, the highest plausible claim of a lone peer;
3. last, claims beyond plausibility (a node whose clock is wrong still syncs).

A liar's claim is therefore never chased first: it is tried only when nothing better is
left, and at most once per :data:`UNSERVED_IGNORED_S`. The missing heights are split into
consecutive ranges of up to :data:`RANGE_BLOCKS`, one per peer, up to
:data:`PARALLEL_PEERS` peers at once; peers that served the most blocks get the first
ranges (the ones the node waits for first), so a peer with no record cannot hold up the
rest. A range not served is given to another peer (:meth:`SyncPlanner.plan` with
``last``).
"""

from __future__ import annotations

from dataclasses import dataclass

RANGE_BLOCKS = 32  # blocks asked of one peer at once
PARALLEL_PEERS = 3  # peers asked at once, each for its own range
SUPPORT_PEERS = 2  # peers that must claim a height before it is synced to first
MIN_BLOCK_GAP_MS = 1  # the chain's rule: a block is at least 1 ms later than its parent
CLOCK_SLACK_MS = 600_000  # a peer's clock may be this far ahead of ours (10 min)
UNSERVED_IGNORED_S = 60.0  # a claim not served is believed no further for this long
MAX_IGNORED = 10_000  # peers whose unserved claims are remembered; beyond, the oldest go


@dataclass(frozen=True, slots=True)
class Assignment:
    """Ask ``peer_id`` for ``count`` blocks from ``first``."""

    peer_id: bytes
    first: int
    count: int


@dataclass(frozen=True, slots=True)
class Goal:
    """The height to sync to, why (``"supported"``, ``"lone"`` or ``"implausible"``), and
    the peers whose claims may serve it (believed heights)."""

    height: int
    why: str
    peers: dict[bytes, int]


class SyncPlanner:
    """Peers' claims and record; the height to sync to and who serves which range (module
    doc). ``genesis_time_ms`` is the chain's genesis time (for plausibility).

    Resource handling: one claim and one record per connected peer (:meth:`forget` drops
    them); at most :data:`MAX_IGNORED` unserved claims, the oldest forgotten first.
    """

    def __init__(self, genesis_time_ms: int) -> None:
        self._genesis_ms = genesis_time_ms
        self.claims: dict[bytes, int] = {}  # peer -> the highest height it claimed
        self._served: dict[bytes, int] = {}  # peer -> blocks it served that checked
        self._ignored: dict[bytes, tuple[int, int]] = {}  # peer -> (first unserved, until ms)

    # what peers say and do -------------------------------------------------------------

    def claimed(self, peer_id: bytes, height: int) -> None:
        """``peer_id`` claims to hold blocks up to ``height`` (the highest claim counts)."""
        if height > self.claims.get(peer_id, -1):
            self.claims[peer_id] = height

    def forget(self, peer_id: bytes) -> None:
        """``peer_id`` disconnected: its claim and record go (an unserved claim stays)."""
        self.claims.pop(peer_id, None)
        self._served.pop(peer_id, None)

    def served(self, peer_id: bytes, blocks: int) -> None:
        """``peer_id`` served ``blocks`` blocks that checked."""
        if peer_id in self.claims:
            self._served[peer_id] = self._served.get(peer_id, 0) + blocks

    def unserved(self, peer_id: bytes, first: int, now_ms: int) -> int | None:
        """``peer_id`` did not serve ``first`` (asked within its claim): drop its claim,
        believe nothing it claims from ``first`` for :data:`UNSERVED_IGNORED_S`. Returns
        the claim dropped (None if it had none)."""
        self._ignored.pop(peer_id, None)  # re-inserted: the dict stays ordered by time
        self._ignored[peer_id] = (first, now_ms + int(UNSERVED_IGNORED_S * 1000))
        while len(self._ignored) > MAX_IGNORED:
            del self._ignored[next(iter(self._ignored))]
        self._served.pop(peer_id, None)
        return self.claims.pop(peer_id, None)

    # what is believed ------------------------------------------------------------------

    def believed(self, peer_id: bytes, now_ms: int) -> int | None:
        """The height ``peer_id``'s claim is believed up to (None: no claim)."""
        claim = self.claims.get(peer_id)
        if claim is None:
            return None
        ignored = self._ignored.get(peer_id)
        if ignored is not None:
            first, until = ignored
            if now_ms < until:
                return min(claim, first - 1)
            del self._ignored[peer_id]
        return claim

    def plausible_height(self, now_ms: int) -> int:
        """The highest height a chain could have reached by ``now_ms`` (module doc)."""
        return (now_ms + CLOCK_SLACK_MS - self._genesis_ms) // MIN_BLOCK_GAP_MS

    def goal(self, height: int, now_ms: int) -> Goal:
        """What a node at ``height`` syncs to next (module doc); ``Goal(height, "level",
        {})`` when nothing believed is above it."""
        believed = {p: h for p in list(self.claims)
                    if (h := self.believed(p, now_ms)) is not None}
        ceiling = self.plausible_height(now_ms)
        plausible = {p: h for p, h in believed.items() if h <= ceiling}
        heights = sorted(plausible.values(), reverse=True)
        if len(believed) == 1:
            supported = heights[0] if heights else -1
        else:
            supported = heights[SUPPORT_PEERS - 1] if len(heights) >= SUPPORT_PEERS else -1
        if supported > height:
            return Goal(supported, "supported", plausible)
        if heights and heights[0] > height:
            return Goal(heights[0], "lone", plausible)
        top = max(believed.values(), default=-1)
        if top > height:
            return Goal(top, "implausible", believed)
        return Goal(height, "level", {})

    def plan(self, start: int, height: int, now_ms: int, *, last: int | None = None,
             parallel: int = PARALLEL_PEERS) -> list[Assignment]:
        """Consecutive ranges from ``start`` toward the goal of a node at ``height`` (up to
        ``last`` if given), one per peer whose believed claim holds its first block, up to
        ``parallel`` peers: those that served most first, then the lower claims (the later
        ranges need the higher ones; a claim inflated gets the last range); the blocks
        shared evenly between them, at most :data:`RANGE_BLOCKS` each. Empty: nobody to
        ask."""
        goal = self.goal(height, now_ms)
        end = goal.height if last is None else min(last, goal.height)
        if end < start:
            return []
        ranked = sorted((p for p, h in goal.peers.items() if h >= start),
                        key=lambda p: (-self._served.get(p, 0), goal.peers[p], p))
        ranked = ranked[:parallel]
        if not ranked:
            return []
        plan: list[Assignment] = []
        for i, peer_id in enumerate(ranked):
            share = -(-(end - start + 1) // (len(ranked) - i))  # of what the others left
            count = min(RANGE_BLOCKS, share, goal.peers[peer_id] - start + 1)
            if count <= 0:
                continue
            plan.append(Assignment(peer_id, start, count))
            start += count
        return plan
