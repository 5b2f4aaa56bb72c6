"""Transaction gossip: push on the first hop, announce-then-fetch after that.

A transaction submitted to this node's API is pushed whole to every peer (the first
hop). A transaction received from a peer is validated (decoded, signature verified
once, state rules) and, if admitted, announced by id to the peers not known to have it,
:data:`RELAY_DELAY_S` later and only if it is still pending then; they fetch what they
lack. In a full mesh the first hop reached every node and a block commits the
transaction well within the delay, so relaying costs nothing; the delay grows to
:data:`RELAY_WAIT_FACTOR` times the time this node's transactions take from admission to
commit (a loaded network commits in more than a second, and announcing every pending
transaction to peers that have it would cost them and this node work for nothing);
where the mesh is not full (a gateway with one uplink) each further hop costs the delay
and 32 bytes per peer.
Authorities that lack a proposed transaction fetch it with the proposal either way.
Peers that were not connected when a transaction was admitted or relayed (a partition, a
restart) are offered it when they connect, by reconciliation (:mod:`.reconcile`), which
also asks other announcers for what a request did not bring.

Received batches are not admitted by the peer's reader: :meth:`TxGossip.queue_txs` puts
them on the admission service's one bounded inbox (:mod:`.inbox`; the reader waits only
when it is full, which pushes back on the peer through TCP), and the admission task
(:class:`~.service.Admission`) decodes and admits them in order, asking this reactor
which are new (:meth:`TxGossip.screen`) and handing back the outcome
(:meth:`TxGossip.relay`). So a peer's consensus and sync messages are never stuck behind
thousands of its transactions, and no task is started per message.

Nothing is sent per transaction. A client's admitted batch goes to a peer at once when
that peer's link is idle (nothing queued for it: no earlier frame waits to be written), as
one ``Txs`` message with anything still waiting for that peer; while frames wait for the
link, outgoing transactions and ids accumulate per peer and are flushed as one ``Txs`` /
``TxAnnounce`` message within ``FLUSH_INTERVAL_S`` or when ``FLUSH_BYTES`` are waiting
(Nagle's rule, RFC 896: no waiting on an idle link, batching behind a busy one). An idle
link costs no batching: admission hands over a whole step's chunk at a time. A transaction
is never sent back to a peer it came from, and every id is remembered in a bounded
seen-cache so duplicates cost one lookup.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import msgspec
import structlog
import trio

from ..core import errors as e
from ..core.block import MAX_IDS_PER_MESSAGE
from ..core.tx import MalformedTxError, SignedTx
from ..p2p import score
from ..p2p.discovery import wall_clock_ms
from ..p2p.lru import BoundedSet, IdSet
from ..p2p.peer import Peer
from ..p2p.router import PeerSet
from .inbox import Admitted, FromPeer, Inbox
from .messages import MAX_TXS_PER_MESSAGE, TXS_MESSAGE_BYTES, TxAnnounce, TxRequest, Txs
from .reconcile import Requests

log = structlog.get_logger(__name__)

FLUSH_INTERVAL_S = 0.005  # outgoing batches wait at most this long behind a busy link
FLUSH_BYTES = 256 * 1024  # ... or until this much is waiting for one peer
SEEN_IDS = 500_000  # ids remembered node-wide (about 40 MB at most)
# ids a peer is known to have, in bytes of memory per peer: 32,768 ids, the last 16,384 always
# (over 16 s of the design load of 1,000 transactions a second)
KNOWN_ID_BYTES_PER_PEER = 4 * 1024 * 1024
PUSH_MAX_TX_BYTES = 1024  # larger transactions are announced even on the first hop
REQUEST_RETRY_S = 2.0  # an id requested but not delivered is requested again after this
ASKED_IDS = 100_000  # ids asked for and not received (two full mempools); then the oldest half go
RELAY_DELAY_S = 1.0  # a relayed transaction is announced this long after its admission
RELAY_QUEUE = 100_000  # relays waiting for their delay; beyond it the oldest go at once
RELAY_DELAY_MAX_S = 10.0  # ... the delay grows with how long commits take, up to this
RELAY_WAIT_FACTOR = 2.0  # ... to this many times the recent admission-to-commit time
COMMIT_PROBES = 256  # admitted transactions timed to their commit at once (every 64th)
PROBE_EVERY = 64
PROBE_WEIGHT = 0.2  # of each new timing in the running estimate

# refusals that time may undo: such a transaction is not remembered as seen (a reading may
# arrive before its device's admission or its stream's epoch announcement)
TRANSIENT_REFUSALS = (e.MempoolFullError, e.FutureTimestampError, e.UnknownDeviceError,
                      e.UnknownStreamError, e.UnknownEpochError)


class _Relay(msgspec.Struct, frozen=True, gc=False):  # one per relayed transaction: cheap
    due: float
    tx_id: bytes
    source: bytes


@dataclass
class _Outbox:
    txs: list[bytes] = field(default_factory=list)
    ids: list[bytes] = field(default_factory=list)
    size: int = 0
    admitted_ms: int = 0  # when the oldest client transaction in ``txs`` was admitted (0: none)


class TxGossip:
    """Spreads transactions between this node's mempool and its peers."""

    def __init__(self, host: PeerSet, inbox: Inbox,
                 lookup: Callable[[bytes], SignedTx | None], *,
                 relay_delay_s: float = RELAY_DELAY_S,
                 now_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._host = host
        self._now_ms = now_ms  # stamps pushes (Txs.admitted_ms)
        self.relay_delay_s = relay_delay_s  # the least delay (see relay_delay)
        self.commit_s = 0.0  # running estimate: admission to commit here
        self._probes: dict[bytes, float] = {}  # tx id -> when it was admitted
        self._admissions = 0
        self._relays: deque[_Relay] = deque()
        self._inbox = inbox
        self._lookup = lookup
        self._seen = BoundedSet(SEEN_IDS)
        self._known: dict[bytes, IdSet] = {}
        self._outbox: dict[bytes, _Outbox] = {}
        self._requested = Requests(REQUEST_RETRY_S, ASKED_IDS)  # asked for, not received
        self._pending = trio.Event()  # something is waiting to be sent
        self._full = trio.Event()  # ... and one batch is already big enough

    # bookkeeping ---------------------------------------------------------------------

    def known_by(self, peer_id: bytes) -> IdSet:
        """The ids ``peer_id`` is known to have: sent or announced to it, or heard from it
        (forgotten when it disconnects)."""
        known = self._known.get(peer_id)
        if known is None:
            known = self._known[peer_id] = IdSet(KNOWN_ID_BYTES_PER_PEER)
        return known

    def forget(self, peer_id: bytes) -> None:
        self._known.pop(peer_id, None)
        self._outbox.pop(peer_id, None)

    def _known_if_here(self, peer: Peer) -> IdSet | None:
        """:meth:`known_by` of ``peer`` if it is still connected, else None: a batch it sent
        may be admitted after it left, and a set made then would outlive it (with every id
        of the batch: a throwaway key that pushes a batch and leaves would cost memory for
        good)."""
        return self.known_by(peer.node_id) if self._host.get(peer.node_id) is peer else None

    def _queue(self, peer_id: bytes, raws: Sequence[bytes] = (), ids: Sequence[bytes] = (),
               admitted_ms: int = 0) -> None:
        box = self._outbox.get(peer_id)
        if box is None:
            box = self._outbox[peer_id] = _Outbox()
        if raws and not box.admitted_ms:
            box.admitted_ms = admitted_ms
        box.txs += raws
        box.ids += ids
        box.size += sum(map(len, raws)) + 32 * len(ids)
        self._pending.set()
        if box.size >= FLUSH_BYTES:
            self._full.set()

    def _relay_later(self, tx: SignedTx, source: bytes) -> None:
        """Remember a relayed transaction, to be announced after the relay delay (see
        :meth:`_relay_due`)."""
        now = trio.current_time()
        due = now + self.relay_delay()
        if self._relays:  # in order of due time (the delay may have shrunk meanwhile)
            due = max(due, self._relays[-1].due)
        self._relays.append(_Relay(due, tx.id, source))
        self._admissions += 1
        if self._admissions % PROBE_EVERY == 0 and len(self._probes) < COMMIT_PROBES:
            self._probes[tx.id] = now
        if len(self._relays) > RELAY_QUEUE:
            self._announce(self._relays.popleft())
        self._pending.set()

    def relay_delay(self) -> float:
        """How long a relayed transaction waits before it is announced."""
        return max(self.relay_delay_s,
                   min(RELAY_DELAY_MAX_S, RELAY_WAIT_FACTOR * self.commit_s))

    def committed(self, tx_ids: Iterable[bytes] = ()) -> None:
        """A block was committed with ``tx_ids``.

        While transactions are queued or requested, its transactions are marked seen: a
        node that fell behind gets a block's transactions with the block, then their copies
        from the inbox or from peers' announcements, which are skipped now without being
        asked for or admitted. (Otherwise nothing is marked: a syncing node gets no copies,
        and its seen-cache stays empty.) Then the probed transactions that are no longer
        pending (committed, or dropped: either way no longer worth announcing) are timed."""
        if self._inbox.backlog() or self._requested:
            for tx_id in tx_ids:
                self._seen.add(tx_id)
                self._requested.got(tx_id)
        if not self._probes:
            return
        now = trio.current_time()
        for tx_id, admitted in list(self._probes.items()):
            if self._lookup(tx_id) is None:
                del self._probes[tx_id]
                self.commit_s += PROBE_WEIGHT * (now - admitted - self.commit_s)

    def _announce(self, relay: _Relay) -> None:
        """Announce a relayed transaction to the peers not known to have it, unless it is
        no longer pending (committed, or dropped as stale)."""
        if self._lookup(relay.tx_id) is not None:
            self._offer(relay.tx_id, relay.source)

    def _offer(self, tx_id: bytes, source: bytes) -> None:
        """Announce the transaction to every peer but ``source`` not known to have it; they
        are known to have it from then on."""
        for peer in self._host.peers():
            if peer.node_id != source and self.known_by(peer.node_id).add(tx_id):
                self._queue(peer.node_id, ids=(tx_id,))

    def _relay_due(self, now: float) -> None:
        while self._relays and self._relays[0].due <= now:
            self._announce(self._relays.popleft())

    # inputs --------------------------------------------------------------------------

    def local(self, txs: Sequence[SignedTx]) -> None:
        """Transactions this node admitted from a client: push them to every peer not known
        to have them (the large ones are announced), one batch per peer."""
        seen = self._seen
        for tx in txs:
            seen.add(tx.id)
        admitted_ms = self._now_ms()
        for peer in self._host.peers():
            known = self.known_by(peer.node_id)
            fresh = [tx for tx in txs if known.add(tx.id)]
            if fresh:
                self._queue(peer.node_id,
                            [tx.raw for tx in fresh if len(tx.raw) <= PUSH_MAX_TX_BYTES],
                            [tx.id for tx in fresh if len(tx.raw) > PUSH_MAX_TX_BYTES],
                            admitted_ms)
                if peer.queued_bytes == 0:  # the link is idle: no reason to wait
                    self._send_box(peer, self._outbox.pop(peer.node_id))

    async def queue_txs(self, peer: Peer, msg: Txs) -> None:
        """From a peer's reader: put ``msg`` on the admission inbox (waits while it is full)."""
        await self._inbox.put(FromPeer(peer, msg.txs, msg.admitted_ms))

    # from the admission task -----------------------------------------------------------

    def malformed(self, peer: Peer, exc: MalformedTxError) -> None:
        """A transaction from ``peer`` did not decode."""
        self._host.penalize(peer, score.INVALID_MESSAGE, f"malformed transaction: {exc}")

    def screen(self, peer: Peer, tx: SignedTx, in_chunk: set[bytes]) -> bool:
        """Whether to admit ``tx``, decoded from ``peer``'s push: not seen before, and not a
        copy of one in this admission step (``in_chunk``: raw bytes, the same from another
        peer are skipped); the sender is known to have it either way."""
        self._requested.got(tx.id)
        if tx.id in self._seen or tx.raw in in_chunk:
            if (known := self._known_if_here(peer)) is not None:
                known.add(tx.id)
            return False
        in_chunk.add(tx.raw)
        return True

    def relay(self, fresh: list[tuple[Peer, SignedTx]], results: Sequence[Admitted]) -> None:
        """The outcome of admitting ``fresh`` (passed :meth:`screen`): the admitted ones are
        relayed after the delay, bad signatures cost their sender score, and what was
        refused for good is remembered as seen."""
        senders: dict[bytes, IdSet | None] = {}  # sender -> its known ids (None: gone)
        for (peer, tx), result in zip(fresh, results, strict=True):
            if isinstance(result, e.BadSignatureRuleError):
                # Not marked seen: a forged copy must not shadow the real transaction,
                # which has the same id (the id covers the body, not the signature).
                self._host.penalize(peer, score.BAD_SIGNATURE, f"bad tx signature: {result}")
                continue
            if (known := senders.get(peer.node_id)) is None and peer.node_id not in senders:
                known = senders[peer.node_id] = self._known_if_here(peer)
            if known is not None:
                known.add(tx.id)
            if tx.id in self._seen:
                continue  # another copy got in while this one was checked
            if isinstance(result, TRANSIENT_REFUSALS):
                # not marked seen: the same transaction may be admitted later (room made,
                # its device admitted, the clock caught up), fetched again when announced
                log.debug("gossip_tx_deferred", peer=peer.node_id.hex()[:16],
                          tx=tx.id.hex()[:16], reason=str(result))
                continue
            self._seen.add(tx.id)
            if isinstance(result, e.RuleError):
                # stale or already-committed transactions race with blocks: not the
                # peer's fault; the transaction is just not relayed
                log.debug("gossip_tx_refused", peer=peer.node_id.hex()[:16],
                          tx=tx.id.hex()[:16], reason=str(result))
                continue
            self._relay_later(tx, peer.node_id)

    def on_announce(self, peer: Peer, msg: TxAnnounce) -> None:
        """Ask ``peer`` for the announced ids this node lacks and has not asked for lately."""
        known = self.known_by(peer.node_id)
        now = trio.current_time()
        want = self._requested.want
        wanted = []
        for tx_id in msg.ids:
            known.add(tx_id)
            if tx_id not in self._seen and want(peer.node_id, tx_id, now):
                wanted.append(tx_id)
        if wanted:
            peer.send(TxRequest(wanted))

    def retry_requests(self, now: float) -> int:
        """Ask again for what was asked :data:`REQUEST_RETRY_S` ago and has not come, from
        another peer that announced it if one did (see :class:`~.reconcile.Requests`); not
        while received transactions wait for admission (the answers may be among them).
        Returns how many ids were asked for."""
        if self._inbox.backlog():
            return 0
        again = self._requested.overdue(now, lambda peer_id: self._host.get(peer_id) is not None)
        for peer_id, ids in again.items():
            peer = self._host.get(peer_id)
            for start in range(0, len(ids), MAX_IDS_PER_MESSAGE):
                peer.send(TxRequest(ids[start:start + MAX_IDS_PER_MESSAGE]))
        return sum(map(len, again.values()))

    def on_request(self, peer: Peer, msg: TxRequest) -> None:
        """Send ``peer`` the transactions it asked for that are pending here (the request is
        checked by :class:`~.reconcile.Reconciler` first)."""
        found = [tx.raw for tx in map(self._lookup, msg.ids) if tx is not None]
        send_txs(peer, found, sum(map(len, found)))

    # the flusher ---------------------------------------------------------------------

    def flush(self) -> None:
        """Send every waiting batch now, with the relays that are due."""
        if self._relays:
            self._relay_due(trio.current_time())
        boxes, self._outbox = self._outbox, {}
        for peer_id, box in boxes.items():
            peer = self._host.get(peer_id)
            if peer is not None:
                self._send_box(peer, box)

    @staticmethod
    def _send_box(peer: Peer, box: _Outbox) -> None:
        if box.txs:
            send_txs(peer, box.txs, box.size - 32 * len(box.ids), box.admitted_ms)
        for start in range(0, len(box.ids), MAX_IDS_PER_MESSAGE):
            peer.send(TxAnnounce(box.ids[start:start + MAX_IDS_PER_MESSAGE]))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Flush outgoing batches FLUSH_INTERVAL_S after their first item (sooner when one
        is full), and announce relays as they fall due, until cancelled."""
        task_status.started()
        await self._flush_forever()

    async def _flush_forever(self) -> None:
        while True:
            if not self._outbox:  # wait for a batch, or for the next relay to fall due
                with trio.move_on_at(self._relays[0].due if self._relays else math.inf):
                    await self._pending.wait()
                self._pending = trio.Event()
                self._relay_due(trio.current_time())
                if not self._outbox:
                    continue
            with trio.move_on_after(FLUSH_INTERVAL_S):  # then send within this
                await self._full.wait()
            self._pending, self._full = trio.Event(), trio.Event()
            self.flush()


def send_txs(peer: Peer, raws: list[bytes], size: int, admitted_ms: int = 0) -> None:
    """Send ``raws`` (``size`` bytes in all) to ``peer`` in :class:`Txs` messages of at most
    :data:`~.messages.MAX_TXS_PER_MESSAGE` transactions and about
    :data:`~.messages.TXS_MESSAGE_BYTES` bytes (a message is closed before the transaction
    that would take it past that), well below the receiver's frame limit; each stamped
    ``admitted_ms`` (see :class:`Txs`)."""
    if size <= TXS_MESSAGE_BYTES and len(raws) <= MAX_TXS_PER_MESSAGE:
        peer.send(Txs(raws, admitted_ms))  # the usual case: one message, no copy
        return
    batch: list[bytes] = []
    held = 0
    for raw in raws:
        if batch and (held + len(raw) > TXS_MESSAGE_BYTES or len(batch) == MAX_TXS_PER_MESSAGE):
            peer.send(Txs(batch, admitted_ms))
            batch, held = [], 0
        batch.append(raw)
        held += len(raw)
    if batch:
        peer.send(Txs(batch, admitted_ms))
