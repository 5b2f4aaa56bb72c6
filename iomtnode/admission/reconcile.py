"""Mempool reconciliation: peers offer each other the pending transactions they may lack.

Live gossip (:mod:`.gossip`) reaches the peers connected when a transaction is admitted.
A peer that was cut off then (a partition, a restart, a link that flapped) would never hear
of it, and a backlog taken during a partition would reach only one side's proposers. So:

- **Offer.** When a peer connects (or reconnects) this node walks its pending transactions
  oldest first and announces (``TxAnnounce``) the ids that peer is not known to have, in
  batches of at most :data:`RECONCILE_BATCH_IDS` ids. Every :data:`RECONCILE_INTERVAL_S`
  while it stays connected, a pass does the same for the ids that were pending at the pass
  before already (those that live gossip should have spread by then; at a steady load
  everything commits within an interval and a pass sends nothing). An id is known to a peer
  once it was sent to it, announced to it, or heard from it (the per-peer sets of
  :class:`~.gossip.TxGossip`, forgotten when the peer disconnects), so an id goes to a
  connected peer once and never again. The peer fetches what it lacks with ``TxRequest``, as
  for any announcement.
- **Offer again.** Being sent a transaction is not holding it: a peer refuses one for a
  reason time undoes (its mempool full, a device or epoch it has not committed yet, a clock
  a little behind) and is not asked again. A follower's client transactions reach the
  authorities only through its peers, so such a refusal by its one uplink left them pending
  for ever. An id still pending :data:`REOFFER_AFTER_PASSES` passes after a pass first saw it
  pending, and again after twice as many and so on (``2, 4, 8...`` passes: a few times in
  all, however long it waits), is offered to every peer, known to it or not, and each may
  fetch it once more.
- **Pace.** The walk looks at :data:`RECONCILE_SCAN_IDS` ids per step and yields to trio
  between steps; the next batch to a peer waits while :data:`RECONCILE_QUEUE_BYTES` are
  queued to it (its answers to the batch before are in that queue), so a 50,000-transaction
  mempool neither stalls the node nor floods a slow link.
- **Ask again.** An id this node asked a peer for and did not get within
  :data:`~.gossip.REQUEST_RETRY_S` is asked of another peer that announced it, if one did,
  at most :data:`MAX_ASKS` times in all (:class:`Requests`): a gap left while connected (the
  peer asked had committed or dropped it, or left) is filled from another source.
- **Serve within bounds.** A request that names an id twice is refused whole (it costs its
  sender :data:`~iomtnode.p2p.score.INVALID_MESSAGE`). A peer may ask only for ids this
  node announced or sent to it, or holds pending (otherwise it is penalised as for an
  unrequested answer), each id once while remembered as served (the last
  :data:`SERVED_IDS_BYTES_PER_PEER` of them), and at most :data:`SERVE_IDS_PER_S` ids a
  second (:class:`ServeGuard`): a peer can make this node send each pending transaction
  once, as a pass would anyway. Ids over the budget are offered again by a later pass. How
  many requests a peer may send at all is the router's rate (:data:`~.messages.TX_REQUEST_RATE`).

The selection and the bounds are pure (:func:`select_batch`, :class:`Requests`,
:class:`ServeGuard`); :class:`Reconciler` is the thin trio part.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

import structlog
import trio

from ..p2p import score
from ..p2p.lru import IdSet
from ..p2p.peer import Peer
from ..p2p.router import PeerSet
from .messages import TxAnnounce, TxRequest

log = structlog.get_logger(__name__)

RECONCILE_INTERVAL_S = 5.0  # a pass over every peer this often, and one for each new peer
RECONCILE_BATCH_BYTES = 64 * 1024  # ids in one reconciliation announcement: 64 KiB ...
RECONCILE_BATCH_IDS = RECONCILE_BATCH_BYTES // 32  # ... of 32-byte ids (2,048)
RECONCILE_SCAN_IDS = 4096  # pending ids looked at per step; then trio runs others (~1 ms)
RECONCILE_QUEUE_BYTES = 1024 * 1024  # the next batch to a peer waits while this is queued
RECONCILE_STEP_S = 0.02  # a pass that has more to do (or waits on a queue) resumes after this
RETRY_CHECK_S = 0.5  # overdue requests are looked for this often
PASS_MAX_IDS = 50_000  # pending ids one pass looks at, oldest first (the mempool's default)
REOFFER_AFTER_PASSES = 2  # an id pending this many passes (then 4, 8...) is offered again
MAX_ASKS = 3  # times an id is asked for (from its announcers in turn) before it is given up
MAX_ANNOUNCERS = 4  # peers remembered per asked id, to ask the next one when one fails
SERVE_IDS_PER_S = 20_000  # ids one peer may have this node look up per second (2x design load)
SERVE_IDS_BURST = 60_000  # ... in a burst: a whole mempool after a reconnect, with room
SERVED_IDS_BYTES_PER_PEER = 4 * 1024 * 1024  # memory for ids served to a peer (32,768 ids)


def select_batch(ids: Sequence[bytes], start: int, known: Container[bytes],
                 is_pending: Callable[[bytes], bool], *, max_ids: int = RECONCILE_BATCH_IDS,
                 max_scan: int = RECONCILE_SCAN_IDS, again: Container[bytes] = frozenset()
                 ) -> tuple[list[bytes], int]:
    """The next ids of ``ids[start:]`` to offer a peer: still pending here and not in
    ``known`` (what the peer is known to have) unless in ``again`` (offered again: module
    doc), at most ``max_ids`` of them, looking at most at ``max_scan`` ids. Returns them
    with the position to continue from (``len(ids)`` when the walk is over)."""
    batch: list[bytes] = []
    end = min(len(ids), start + max_scan)
    pos = start
    while pos < end and len(batch) < max_ids:
        tx_id = ids[pos]
        pos += 1
        if (tx_id not in known or tx_id in again) and is_pending(tx_id):
            batch.append(tx_id)
    return batch, pos


def _reoffer_due(passes: int) -> bool:
    """Whether an id pending for ``passes`` passes is offered again now: at
    :data:`REOFFER_AFTER_PASSES` passes, then at each doubling."""
    return passes >= REOFFER_AFTER_PASSES and passes % REOFFER_AFTER_PASSES == 0 and (
        passes // REOFFER_AFTER_PASSES) & (passes // REOFFER_AFTER_PASSES - 1) == 0


# asking: what this node requested, from whom, and what to ask again ------------------------

@dataclass(slots=True)
class _Ask:
    at: float  # when it was last asked for
    peer: bytes  # ... from this peer
    others: tuple[bytes, ...] = ()  # other peers that announced it
    asks: int = 1


class Requests:
    """The ids this node asked peers for and has not received yet, oldest ask first.

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
        asked for, or asked ``retry_s`` ago or more). Otherwise the peer is remembered as
        another source (up to :data:`MAX_ANNOUNCERS` in all)."""
        ask = self._asks.get(tx_id)
        if ask is None:
            self._asks[tx_id] = _Ask(now, peer_id)
            if len(self._asks) > self.capacity:
                for old in list(islice(self._asks, len(self._asks) // 2)):
                    del self._asks[old]
            return True
        if now - ask.at >= self.retry_s:  # the peer asked before did not deliver
            del self._asks[tx_id]  # re-inserted at the end: still in order of asking
            others = tuple(p for p in ask.others if p != peer_id)
            self._asks[tx_id] = _Ask(now, peer_id, others, ask.asks + 1)
            return True
        if peer_id != ask.peer and peer_id not in ask.others \
                and len(ask.others) < MAX_ANNOUNCERS - 1:
            ask.others += (peer_id,)
        return False

    def got(self, tx_id: bytes) -> None:
        """``tx_id`` arrived (or no longer matters)."""
        self._asks.pop(tx_id, None)

    def overdue(self, now: float, connected: Callable[[bytes], bool], *,
                max_ids: int = RECONCILE_SCAN_IDS) -> dict[bytes, list[bytes]]:
        """The ids asked for ``retry_s`` ago or more and still missing, by the peer to ask
        now: the next other announcer still connected. The peer asked before is not asked
        again: it answered without the transaction (committed or dropped there since), or
        its answer is on its way (it serves an id once). An id asked :data:`MAX_ASKS` times,
        or with no other announcer connected, is given up (forgotten). Takes at most
        ``max_ids`` ids (the oldest asks)."""
        due: list[bytes] = []
        for tx_id, ask in self._asks.items():
            if now - ask.at < self.retry_s or len(due) >= max_ids:
                break  # in order of asking: the rest are younger
            due.append(tx_id)
        again: dict[bytes, list[bytes]] = {}
        for tx_id in due:
            ask = self._asks.pop(tx_id)
            if ask.asks >= MAX_ASKS:
                continue
            sources = [p for p in ask.others if connected(p)]
            if not sources:
                continue
            self._asks[tx_id] = _Ask(now, sources[0], tuple(sources[1:]), ask.asks + 1)
            again.setdefault(sources[0], []).append(tx_id)
        return again


# serving: what one peer may make this node do -------------------------------------------

class ServeGuard:
    """What one peer may have this node look up and send: ids this node announced or sent to
    it, or holds pending (it would offer those on the next pass anyway), each once, at most
    :data:`SERVE_IDS_PER_S` a second (a token bucket of :data:`SERVE_IDS_BURST`)."""

    def __init__(self, now: float, *, rate_per_s: float = SERVE_IDS_PER_S,
                 burst: float = SERVE_IDS_BURST) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._at = now
        self._served = IdSet(SERVED_IDS_BYTES_PER_PEER)

    def admit(self, ids: Iterable[bytes], offered: Container[bytes],
              is_pending: Callable[[bytes], bool], now: float
              ) -> tuple[list[bytes], int, list[bytes]]:
        """Of the ids a peer asks for: those to look up and send, how many it cannot have
        learnt from this node (neither offered to it nor pending here: misbehaviour), and
        those over its budget (not served now)."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        serve: list[bytes] = []
        over: list[bytes] = []
        unoffered = 0
        for tx_id in ids:
            if tx_id not in offered and not is_pending(tx_id):
                unoffered += 1
            elif self._tokens < 1:
                over.append(tx_id)
            elif self._served.add(tx_id):
                self._tokens -= 1
                serve.append(tx_id)
        return serve, unoffered, over

    def forget(self, tx_id: bytes) -> None:
        """``tx_id`` is offered to the peer again: it may ask for it once more."""
        self._served.discard(tx_id)


# the trio part -------------------------------------------------------------------------

class Gossip(Protocol):
    """What reconciliation needs of :class:`~.gossip.TxGossip`."""

    def known_by(self, peer_id: bytes) -> IdSet: ...

    def retry_requests(self, now: float) -> int: ...

    def on_request(self, peer: Peer, msg: TxRequest) -> None: ...


@dataclass(slots=True)
class _Walk:
    ids: list[bytes]  # a snapshot of the pending ids, oldest first (shared by a pass's walks)
    pos: int = 0
    offered: int = 0  # ids offered to its peer so far
    again: frozenset[bytes] = frozenset()  # offered even if known to it (module doc)


class Reconciler:
    """Offers pending ids to peers on connect and every ``interval_s``; asks again for what
    did not come. ``pending(limit)`` gives up to ``limit`` pending transactions (anything
    with an ``id``), oldest first; ``is_pending(id)`` whether one still is."""

    def __init__(self, host: PeerSet, gossip: Gossip,
                 pending: Callable[[int], Sequence[Any]],
                 is_pending: Callable[[bytes], bool], *,
                 interval_s: float = RECONCILE_INTERVAL_S) -> None:
        self._host = host
        self._gossip = gossip
        self._pending = pending
        self._is_pending = is_pending
        self.interval_s = interval_s
        self._walks: dict[bytes, _Walk] = {}  # peer id -> its walk in progress
        self._guards: dict[bytes, ServeGuard] = {}  # peer id -> what it may still ask
        self._joined: list[bytes] = []  # peers connected since the last step
        self._wake = trio.Event()
        self._last: set[bytes] = set()  # the pending ids at the last pass
        self._passes = 0  # passes started
        self._first_pass: dict[bytes, int] = {}  # pending id -> the pass that first saw it
        self.over_budget = 0  # ids asked of this node over a peer's budget (not served)

    def connected(self, peer_id: bytes) -> None:
        """A peer connected: offer it what it may lack at once."""
        self._joined.append(peer_id)
        self._wake.set()

    def forget(self, peer_id: bytes) -> None:
        """A peer disconnected: its walk and what it was served go."""
        self._walks.pop(peer_id, None)
        self._guards.pop(peer_id, None)

    def on_request(self, peer: Peer, msg: TxRequest) -> None:
        """Serve a peer's ``TxRequest`` within its bounds (:class:`ServeGuard`); a request
        naming an id twice is refused and costs it :data:`~.score.INVALID_MESSAGE`; asking
        for ids never announced or sent to it costs it :data:`~.score.UNREQUESTED`. Ids over its
        budget are no longer taken as known to it, so a later pass offers them again."""
        twice = len(msg.ids) - len(set(msg.ids))
        if twice:
            self._host.penalize(peer, score.INVALID_MESSAGE,
                                f"tx_request_refused: {twice} of {len(msg.ids)} ids asked "
                                f"more than once")
            return
        now = trio.current_time()
        guard = self._guards.get(peer.node_id)
        if guard is None:
            guard = self._guards[peer.node_id] = ServeGuard(
                now, rate_per_s=SERVE_IDS_PER_S, burst=SERVE_IDS_BURST)
        known = self._gossip.known_by(peer.node_id)
        serve, unoffered, over = guard.admit(msg.ids, known, self._is_pending, now)
        if unoffered:
            self._host.penalize(peer, score.UNREQUESTED,
                                f"tx_request_unoffered: {unoffered} of {len(msg.ids)} ids were "
                                f"never announced to it and are not pending here")
        for tx_id in over:
            known.discard(tx_id)
        self.over_budget += len(over)
        if serve:
            self._gossip.on_request(peer, TxRequest(serve))

    async def _snapshot(self, since: Container[bytes] | None = None,
                        ages: dict[bytes, int] | None = None
                        ) -> tuple[list[bytes], set[bytes]]:
        """The pending ids, oldest first (only those in ``since`` when given), and all of
        them as a set; :data:`RECONCILE_SCAN_IDS` at a time, trio running between. With
        ``ages``, each id gets the pass that first saw it pending there (from
        :attr:`_first_pass`, else this one)."""
        txs = self._pending(PASS_MAX_IDS)  # one list of references: ~2 ms at 50,000
        ids: list[bytes] = []
        every: set[bytes] = set()
        first, now = self._first_pass, self._passes
        for start in range(0, len(txs), RECONCILE_SCAN_IDS):
            chunk = [tx.id for tx in txs[start:start + RECONCILE_SCAN_IDS]]
            every.update(chunk)
            ids += chunk if since is None else [i for i in chunk if i in since]
            if ages is not None:
                ages.update((i, first.get(i, now)) for i in chunk)
            await trio.lowlevel.checkpoint()
        return ids, every

    async def start_joined(self) -> None:
        """Start a walk over every pending id for each peer connected since the last call."""
        if self._joined:
            joined, self._joined = self._joined, []
            ids, _ = await self._snapshot()
            for peer_id in joined:
                self._walks[peer_id] = _Walk(ids)

    async def start_pass(self) -> None:
        """Start a walk for every peer over the ids that were pending at the last pass
        already: a transaction committed within an interval (the steady state) is never
        offered by a pass, so passes cost nothing while the network keeps up. A peer whose
        walk is still in progress (a newer snapshot, paced by its queue) keeps it."""
        self._passes += 1
        ages: dict[bytes, int] = {}
        ids, self._last = await self._snapshot(self._last, ages)
        self._first_pass = ages
        again = frozenset(i for i in ids if _reoffer_due(self._passes - ages[i]))
        for peer in self._host.peers():
            walk = self._walks.setdefault(peer.node_id, _Walk(ids))
            if walk.again:  # a walk in progress (a peer slow to read): pending ids only
                walk.again = frozenset(i for i in walk.again if i in self._last)
            if again:  # module doc, "Offer again"; still known to it meanwhile, so a
                # request it sends for one that commits now costs it nothing
                walk.again |= again
                guard = self._guards.get(peer.node_id)
                if guard is not None:
                    for tx_id in again:
                        guard.forget(tx_id)

    def step_peer(self, peer_id: bytes) -> None:
        """One step of the peer's walk, if it has one and its send queue has room: at most
        one batch, after looking at most at :data:`RECONCILE_SCAN_IDS` ids."""
        walk = self._walks.get(peer_id)
        if walk is None:
            return
        peer = self._host.get(peer_id)
        if peer is None:
            del self._walks[peer_id]
            return
        if peer.queued_bytes >= RECONCILE_QUEUE_BYTES:
            return  # paced: its answers to the last batch are still going out
        known = self._gossip.known_by(peer_id)
        batch, walk.pos = select_batch(walk.ids, walk.pos, known, self._is_pending,
                                       again=walk.again)
        if batch:
            for tx_id in batch:
                known.add(tx_id)
            peer.send(TxAnnounce(batch))
            walk.offered += len(batch)
        if walk.pos >= len(walk.ids):
            del self._walks[peer_id]
            if walk.offered:
                log.info("pending_txs_offered", peer=peer_id.hex()[:16], ids=walk.offered)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Reconcile until cancelled: a walk for a new peer when it connects, a pass over
        every peer each ``interval_s``, a step of each walk every :data:`RECONCILE_STEP_S`
        while one is in progress (trio runs other tasks between peers), and overdue
        requests asked again every :data:`RETRY_CHECK_S`."""
        task_status.started()
        next_pass = trio.current_time() + self.interval_s
        while True:
            pause = RECONCILE_STEP_S if self._walks else RETRY_CHECK_S
            with trio.move_on_at(min(next_pass, trio.current_time() + pause)):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            await self.start_joined()
            if now >= next_pass:
                next_pass = now + self.interval_s
                await self.start_pass()
            self._gossip.retry_requests(now)
            for peer_id in list(self._walks):
                await trio.lowlevel.checkpoint()
                self.step_peer(peer_id)
