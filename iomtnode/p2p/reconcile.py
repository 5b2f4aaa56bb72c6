"""Mempool reconciliation: peers offer each other the pending transactions they may lack.

Live gossip (:mod:`.txgossip`) reaches the peers connected when a transaction is admitted.
A peer that was cut off then (a partition, a restart, a link that flapped) would never hear
of it, and a backlog taken during a partition would reach only one side's proposers. So:

- **Offer.** When a peer connects (or reconnects), and every :data:`RECONCILE_INTERVAL_S`
  while it stays connected, this node walks its pending transactions oldest first and
  announces (``TxAnnounce``) the ids that peer is not known to have, in batches of at most
  :data:`RECONCILE_BATCH_IDS` ids. An id is known to a peer once it was sent to it, announced
  to it, or heard from it (the per-peer sets of :class:`~.txgossip.TxGossip`, forgotten when
  the peer disconnects), so an id goes to a connected peer once and never again. The peer
  fetches what it lacks with ``TxRequest``, as for any announcement.
- **Pace.** The walk looks at :data:`RECONCILE_SCAN_IDS` ids per step and yields to trio
  between steps; the next batch to a peer waits while :data:`RECONCILE_QUEUE_BYTES` are
  queued to it (its answers to the batch before are in that queue), so a 50,000-transaction
  mempool neither stalls the node nor floods a slow link.
- **Ask again.** An id this node asked a peer for and did not get within
  :data:`~.txgossip.REQUEST_RETRY_S` is asked again, from another peer that announced it if
  one did, at most :data:`MAX_ASKS` times (:class:`Requests`): a gap left while connected (an
  answer that never came) is filled at the next step.
- **Serve within bounds.** A peer may ask only for ids this node announced or sent to it
  (otherwise it is penalised as for an unrequested answer), each id once per connection,
  and at most :data:`SERVE_IDS_PER_S` ids a second (:class:`ServeGuard`): a request never
  costs this node more than it cost the asker to learn the ids.

The selection and the bounds are pure (:func:`select_batch`, :class:`Requests`,
:class:`ServeGuard`); :class:`Reconciler` is the thin trio part.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

import trio

from . import score
from .lru import BoundedSet
from .messages import TxAnnounce, TxRequest

RECONCILE_INTERVAL_S = 5.0  # a pass over every peer this often, and one for each new peer
RECONCILE_BATCH_IDS = 2048  # ids in one reconciliation announcement ...
RECONCILE_BATCH_BYTES = 32 * RECONCILE_BATCH_IDS  # ... i.e. 64 KiB of ids
RECONCILE_SCAN_IDS = 4096  # pending ids looked at per step; then trio runs others (~1 ms)
RECONCILE_QUEUE_BYTES = 1024 * 1024  # the next batch to a peer waits while this is queued
RECONCILE_STEP_S = 0.02  # a pass that has more to do (or waits on a queue) resumes after this
RETRY_CHECK_S = 0.5  # overdue requests are looked for this often
PASS_MAX_IDS = 50_000  # pending ids one pass looks at, oldest first (the mempool's default)
MAX_ASKS = 3  # times an id is asked for (from its announcers in turn) before it is given up
MAX_ANNOUNCERS = 4  # peers remembered per asked id, to ask the next one when one fails
SERVE_IDS_PER_S = 20_000  # ids one peer may have this node look up per second (2x design load)
SERVE_IDS_BURST = 60_000  # ... in a burst: a whole mempool after a reconnect, with room
SERVED_IDS_PER_PEER = 100_000  # ids remembered as served to a peer (served once each)


def select_batch(ids: Sequence[bytes], start: int, known: Container[bytes],
                 is_pending: Callable[[bytes], bool], *, max_ids: int = RECONCILE_BATCH_IDS,
                 max_scan: int = RECONCILE_SCAN_IDS) -> tuple[list[bytes], int]:
    """The next ids of ``ids[start:]`` to offer a peer: still pending here and not in
    ``known`` (what the peer is known to have), at most ``max_ids`` of them, looking at most
    at ``max_scan`` ids. Returns them with the position to continue from (``len(ids)`` when
    the walk is over)."""
    batch: list[bytes] = []
    end = min(len(ids), start + max_scan)
    pos = start
    while pos < end and len(batch) < max_ids:
        tx_id = ids[pos]
        pos += 1
        if tx_id not in known and is_pending(tx_id):
            batch.append(tx_id)
    return batch, pos


# asking: what this node requested, from whom, and what to ask again ------------------------

@dataclass(slots=True)
class _Ask:
    at: float  # when it was last asked for
    peer: bytes  # ... from this peer
    others: list[bytes] = field(default_factory=list)  # other peers that announced it
    asks: int = 1


class Requests:
    """The ids this node asked peers for and has not received yet.

    Resource handling: at most ``capacity`` ids; past that the oldest half is forgotten (they
    are asked for again if announced again)."""

    def __init__(self, retry_s: float, capacity: int) -> None:
        self.retry_s = retry_s
        self.capacity = capacity
        self._asks: dict[bytes, _Ask] = {}  # in order of when they were last asked

    def __len__(self) -> int:
        return len(self._asks)

    def want(self, peer_id: bytes, tx_id: bytes, now: float) -> bool:
        """``peer_id`` announced ``tx_id``, which this node lacks: whether to ask it now (not
        asked for, or asked over ``retry_s`` ago). Otherwise the peer is remembered as
        another source."""
        ask = self._asks.get(tx_id)
        if ask is None:
            self._asks[tx_id] = _Ask(now, peer_id)
            if len(self._asks) > self.capacity:
                for old in list(self._asks)[: len(self._asks) // 2]:
                    del self._asks[old]
            return True
        if now - ask.at >= self.retry_s:
            del self._asks[tx_id]  # re-inserted at the end: still in order of asking
            self._asks[tx_id] = _Ask(now, peer_id, ask.others, ask.asks + 1)
            return True
        if peer_id != ask.peer and peer_id not in ask.others \
                and len(ask.others) < MAX_ANNOUNCERS - 1:
            ask.others.append(peer_id)
        return False

    def got(self, tx_id: bytes) -> None:
        """``tx_id`` arrived (or no longer matters)."""
        self._asks.pop(tx_id, None)

    def overdue(self, now: float, connected: Callable[[bytes], bool], *,
                max_scan: int = RECONCILE_SCAN_IDS) -> dict[bytes, list[bytes]]:
        """The ids asked for ``retry_s`` ago or more and still missing, by the peer to ask
        now: the next announcer still connected (the same peer when it is the only one).
        An id asked :data:`MAX_ASKS` times, or with no announcer connected, is forgotten.
        Looks at the ``max_scan`` oldest asks at most."""
        again: dict[bytes, list[bytes]] = {}
        for tx_id in list(islice(self._asks, max_scan)):
            ask = self._asks[tx_id]
            if now - ask.at < self.retry_s:
                break  # in order of asking: the rest are younger
            del self._asks[tx_id]
            if ask.asks >= MAX_ASKS:
                continue
            sources = [p for p in (*ask.others, ask.peer) if connected(p)]
            if not sources:
                continue
            peer_id = sources[0]
            others = [p for p in ask.others if p != peer_id]
            if ask.peer != peer_id and connected(ask.peer):
                others.append(ask.peer)
            self._asks[tx_id] = _Ask(now, peer_id, others, ask.asks + 1)
            again.setdefault(peer_id, []).append(tx_id)
        return again


# serving: what one peer may make this node do -------------------------------------------

class ServeGuard:
    """What one peer may ask of this node: ids announced or sent to it, each once, at most
    :data:`SERVE_IDS_PER_S` a second (a token bucket of :data:`SERVE_IDS_BURST`)."""

    def __init__(self, now: float, *, rate_per_s: float = SERVE_IDS_PER_S,
                 burst: float = SERVE_IDS_BURST) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._at = now
        self._served = BoundedSet(SERVED_IDS_PER_PEER)

    def admit(self, ids: Iterable[bytes], offered: Container[bytes], now: float
              ) -> tuple[list[bytes], int, int]:
        """Of the ids a peer asks for: those to look up and send, how many were never offered
        to it (misbehaviour), and how many are over its budget (dropped; asked again later)."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        serve: list[bytes] = []
        unoffered = over = 0
        for tx_id in ids:
            if tx_id not in offered:
                unoffered += 1
            elif self._tokens < 1:
                over += 1
            elif self._served.add(tx_id):
                self._tokens -= 1
                serve.append(tx_id)
        return serve, unoffered, over


# the trio part -------------------------------------------------------------------------

class Gossip(Protocol):
    """What reconciliation needs of :class:`~.txgossip.TxGossip`."""

    def known_by(self, peer_id: bytes) -> BoundedSet: ...

    def retry_requests(self, now: float) -> int: ...

    def on_request(self, peer: Any, msg: TxRequest) -> None: ...


@dataclass(slots=True)
class _Walk:
    ids: list[bytes]  # a snapshot of the pending ids, oldest first (shared by a pass's walks)
    pos: int = 0
    offered: int = 0  # ids offered to its peer so far


class Reconciler:
    """Offers pending ids to peers on connect and every ``interval_s``; asks again for what
    did not come. ``pending_ids(limit)`` gives the ids of up to ``limit`` pending
    transactions, oldest first; ``is_pending(id)`` whether one still is."""

    def __init__(self, host: Any, gossip: Gossip,
                 pending_ids: Callable[[int], list[bytes]],
                 is_pending: Callable[[bytes], bool], *,
                 interval_s: float = RECONCILE_INTERVAL_S) -> None:
        self._host = host
        self._gossip = gossip
        self._pending_ids = pending_ids
        self._is_pending = is_pending
        self.interval_s = interval_s
        self._walks: dict[bytes, _Walk] = {}  # peer id -> its walk in progress
        self._guards: dict[bytes, ServeGuard] = {}  # peer id -> what it may still ask
        self._joined: list[bytes] = []  # peers connected since the last step
        self._wake = trio.Event()
        self.offered = 0  # ids offered so far (all peers)
        self.over_budget = 0  # ids asked of this node over a peer's budget (not served)
        self.passes = 0

    def connected(self, peer_id: bytes) -> None:
        """A peer connected: offer it what it may lack at once."""
        self._joined.append(peer_id)
        self._wake.set()

    def forget(self, peer_id: bytes) -> None:
        """A peer disconnected: its walk and what it was served go."""
        self._walks.pop(peer_id, None)
        self._guards.pop(peer_id, None)

    def on_request(self, peer: Any, msg: TxRequest) -> None:
        """Serve a peer's ``TxRequest`` within its bounds (:class:`ServeGuard`); asking for
        ids never announced or sent to it costs it :data:`~.score.UNREQUESTED`."""
        now = trio.current_time()
        guard = self._guards.get(peer.node_id)
        if guard is None:
            guard = self._guards[peer.node_id] = ServeGuard(now)
        serve, unoffered, over = guard.admit(msg.ids, self._gossip.known_by(peer.node_id), now)
        if unoffered:
            self._host.penalize(peer, score.UNREQUESTED,
                                f"tx_request_unoffered: {unoffered} of {len(msg.ids)} ids "
                                f"were never announced to it")
        if over:
            self.over_budget += over
        if serve:
            self._gossip.on_request(peer, TxRequest(serve))

    def _start(self, peer_ids: Iterable[bytes]) -> None:
        ids = self._pending_ids(PASS_MAX_IDS)  # one snapshot for all of them
        for peer_id in peer_ids:
            self._walks[peer_id] = _Walk(ids)

    def step(self) -> bool:
        """One step of every walk in progress: at most one batch per peer whose send queue
        has room. Returns whether any walk is left."""
        for peer_id, walk in list(self._walks.items()):
            peer = self._host.get(peer_id)
            if peer is None:
                del self._walks[peer_id]
                continue
            if peer.queued_bytes >= RECONCILE_QUEUE_BYTES:
                continue  # paced: its answers to the last batch are still going out
            known = self._gossip.known_by(peer_id)
            batch, walk.pos = select_batch(walk.ids, walk.pos, known, self._is_pending)
            if batch:
                for tx_id in batch:
                    known.add(tx_id)
                peer.send(TxAnnounce(batch))
                self.offered += len(batch)
                walk.offered += len(batch)
            if walk.pos >= len(walk.ids):
                del self._walks[peer_id]
                if walk.offered:
                    peer.log.info("pending_txs_offered", ids=walk.offered)
        return bool(self._walks)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Reconcile until cancelled: a pass over every peer each ``interval_s``, one over a
        new peer when it connects, a step every :data:`RECONCILE_STEP_S` while one is in
        progress, and overdue requests asked again at each step."""
        task_status.started()
        next_pass = trio.current_time() + self.interval_s
        while True:
            pause = RECONCILE_STEP_S if self._walks else RETRY_CHECK_S
            with trio.move_on_at(min(next_pass, trio.current_time() + pause)):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            if self._joined:
                joined, self._joined = self._joined, []
                self._start(joined)
            if now >= next_pass:
                next_pass = now + self.interval_s
                self.passes += 1
                self._start(peer.node_id for peer in self._host.peers())
            self._gossip.retry_requests(now)
            await trio.lowlevel.checkpoint()
            self.step()
