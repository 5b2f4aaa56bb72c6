"""Mempool reconciliation: which ids are offered to whom, what is asked again, what a peer
may ask of this node (pure), then the trio part driven through fake peers under
``autojump_clock``."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio

from iomtnode.admission import gossip as gossip_module
from iomtnode.admission import reconcile
from iomtnode.admission.gossip import REQUEST_RETRY_S, send_txs
from iomtnode.admission.messages import MAX_TXS_PER_MESSAGE, TxAnnounce, TxRequest, Txs
from iomtnode.admission.reconcile import (
    MAX_ASKS,
    RECONCILE_BATCH_BYTES,
    RECONCILE_BATCH_IDS,
    RECONCILE_INTERVAL_S,
    RECONCILE_QUEUE_BYTES,
    RECONCILE_SCAN_IDS,
    Reconciler,
    Requests,
    ServeGuard,
    select_batch,
)
from iomtnode.core.block import MAX_IDS_PER_MESSAGE
from iomtnode.core.crypto import blake2b256
from iomtnode.core.tx import MAX_TX_BYTES
from iomtnode.p2p import score
from iomtnode.p2p.messages import MAX_MESSAGE_BYTES, encode_message
from tests.admission.fakes import FakeHost, FakeMempool, Gossiping, gossiping, reading

A, B, C, D = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32, b"\xdd" * 32


def tx_id(n: int) -> bytes:
    return blake2b256(n.to_bytes(4, "big"))


IDS = [tx_id(n) for n in range(10)]


# which ids to offer ----------------------------------------------------------------------

def test_a_batch_is_the_oldest_pending_ids_the_peer_is_not_known_to_have():
    known = {IDS[1], IDS[4]}
    pending = set(IDS) - {IDS[2]}  # committed since the snapshot
    batch, pos = select_batch(IDS, 0, known, pending.__contains__)
    assert batch == [IDS[0], IDS[3], *IDS[5:]] and pos == len(IDS)


def test_a_batch_is_bounded_in_ids_and_in_ids_looked_at_and_the_walk_resumes():
    batch, pos = select_batch(IDS, 0, set(), lambda _: True, max_ids=3)
    assert batch == IDS[:3] and pos == 3
    batch, pos = select_batch(IDS, pos, {IDS[3], IDS[4], IDS[5]}, lambda _: True, max_scan=4)
    assert batch == [IDS[6]] and pos == 7  # looked at 4 ids, not more
    assert select_batch(IDS, pos, set(), lambda _: True) == (IDS[7:], len(IDS))


def test_the_batch_bounds_fit_a_message():
    assert RECONCILE_BATCH_IDS <= MAX_IDS_PER_MESSAGE
    assert RECONCILE_BATCH_BYTES == 32 * RECONCILE_BATCH_IDS <= 64 * 1024


# what to ask again ---------------------------------------------------------------------

def test_an_id_is_asked_once_and_the_other_announcers_are_remembered():
    asks = Requests(retry_s=2.0, capacity=100)
    assert asks.want(A, IDS[0], now=0.0)
    assert not asks.want(B, IDS[0], now=1.0)  # asked of A already
    assert not asks.want(C, IDS[0], now=1.5)
    assert not asks.want(D, IDS[0], now=1.5)
    assert asks.overdue(1.9, lambda _: True) == {}  # not overdue yet
    # A never answered: B is asked, then C, then it is given up (D is not asked)
    assert asks.overdue(2.0, lambda _: True) == {B: [IDS[0]]}
    assert asks.overdue(4.0, lambda _: True) == {C: [IDS[0]]}
    assert MAX_ASKS == 3 and asks.overdue(6.0, lambda _: True) == {} and len(asks) == 0


def test_an_id_that_came_or_that_one_peer_announced_is_not_asked_again():
    """Asking the same peer again cannot help: it answered without it, or its answer is
    on the way (a peer serves an id once)."""
    asks = Requests(retry_s=2.0, capacity=100)
    asks.want(A, IDS[0], now=0.0)
    asks.want(B, IDS[0], now=0.0)
    asks.want(A, IDS[1], now=0.0)
    asks.got(IDS[0])
    assert asks.overdue(2.0, lambda _: True) == {} and len(asks) == 0


def test_announcers_that_left_are_skipped():
    asks = Requests(retry_s=2.0, capacity=100)
    asks.want(A, IDS[0], now=0.0)
    asks.want(B, IDS[0], now=0.5)
    asks.want(C, IDS[0], now=0.5)
    assert asks.overdue(2.0, lambda peer: peer != B) == {C: [IDS[0]]}  # B left
    asks = Requests(retry_s=2.0, capacity=100)
    asks.want(A, IDS[1], now=0.0)
    asks.want(B, IDS[1], now=0.0)
    assert asks.overdue(2.0, lambda peer: peer != B) == {}  # its only other source left
    assert len(asks) == 0


def test_a_new_announcement_after_the_retry_time_is_asked_at_once():
    asks = Requests(retry_s=2.0, capacity=100)
    asks.want(A, IDS[0], now=0.0)
    assert asks.want(B, IDS[0], now=2.5)  # A did not deliver: B is asked
    assert asks.overdue(3.0, lambda _: True) == {}  # asked of B at 2.5: not overdue
    assert not asks.want(C, IDS[0], now=3.0)
    assert asks.overdue(4.5, lambda _: True) == {C: [IDS[0]]}  # not A again


def test_asks_are_bounded_and_overdue_takes_a_bounded_number():
    asks = Requests(retry_s=2.0, capacity=4)
    for n in range(5):
        asks.want(A, IDS[n], now=0.0)
        asks.want(B, IDS[n], now=0.0)
    assert len(asks) == 3  # past the capacity the oldest half went
    assert asks.overdue(2.0, lambda _: True, max_ids=2) == {B: IDS[2:4]}


# what a peer may ask -------------------------------------------------------------------

def test_a_peer_may_ask_for_what_it_was_offered_or_is_pending_each_once():
    guard = ServeGuard(0.0)
    offered, pending = {IDS[0], IDS[1]}, {IDS[2]}
    serve, unoffered, over = guard.admit([IDS[0], IDS[2], IDS[3]], offered,
                                         pending.__contains__, 0.0)
    assert serve == [IDS[0], IDS[2]] and unoffered == 1 and over == []
    serve, unoffered, over = guard.admit([IDS[0], IDS[1]], offered, pending.__contains__, 0.1)
    assert serve == [IDS[1]] and unoffered == 0 and over == []  # IDS[0] was served already


def test_a_peer_asking_beyond_its_budget_is_served_at_the_rate():
    guard = ServeGuard(0.0, rate_per_s=2, burst=3)
    ids = [tx_id(n) for n in range(100)]
    offered = set(ids)
    serve, _, over = guard.admit(ids[:5], offered, lambda _: False, 0.0)
    assert serve == ids[:3] and over == ids[3:5]  # the burst
    serve, _, over = guard.admit(ids[5:10], offered, lambda _: False, 1.0)
    assert serve == ids[5:7] and over == ids[7:10]  # two a second afterwards


# the trio part, through fake peers ---------------------------------------------------

@dataclass
class FakePeer:
    node_id: bytes
    sent: list = field(default_factory=list)
    queued_bytes: int = 0

    def send(self, msg) -> bool:
        self.sent.append(msg)
        return True

    def of(self, kind) -> list:
        return [m for m in self.sent if isinstance(m, kind)]

    def offered(self) -> list[bytes]:
        return [i for m in self.of(TxAnnounce) for i in m.ids]


def reconciling(n_peers: int = 2) -> tuple[Reconciler, Gossiping, list[FakePeer]]:
    peers = [FakePeer(bytes([i + 1]) * 32) for i in range(n_peers)]
    g = gossiping(0)
    g.host.peer_list.extend(peers)
    rec = Reconciler(g.host, g.gossip, lambda limit: list(g.pool.txs.values())[:limit],
                     g.pool.txs.__contains__)
    return rec, g, peers


def setup(n_peers: int = 2):
    rec, g, peers = reconciling(n_peers)
    return rec, g.gossip, g.host, peers, g.pool


def fill(pool: FakeMempool, n: int, start: int = 1) -> list[bytes]:
    txs = [reading(seq) for seq in range(start, start + n)]
    pool.txs.update((tx.id, tx) for tx in txs)
    return [tx.id for tx in txs]


async def test_a_peer_that_connects_is_offered_every_pending_id_it_lacks_once(
        nursery, autojump_clock):
    rec, gossip, _, (a, b), pool = setup()
    ids = fill(pool, 5000)
    gossip.known_by(a.node_id).add(ids[0])  # a sent us this one
    await nursery.start(rec.run)
    rec.connected(a.node_id)
    await trio.sleep(1.0)
    assert a.offered() == ids[1:]  # oldest first, all but the one it has
    assert all(len(m.ids) <= RECONCILE_BATCH_IDS for m in a.of(TxAnnounce))
    assert b.sent == []  # b did not (re)connect, and nothing was pending an interval yet
    await trio.sleep(2 * RECONCILE_INTERVAL_S)  # passes: a knows them all now
    assert a.offered() == ids[1:]
    assert b.offered() == ids  # b was not known to have them: offered by the passes, once


async def test_a_pass_does_not_stall_the_node_and_is_paced_by_the_peers_queue(
        nursery, autojump_clock):
    rec, gossip, _, (a, _), pool = setup()
    ids = fill(pool, 3 * RECONCILE_SCAN_IDS)
    for tx_id_ in ids[:2 * RECONCILE_SCAN_IDS]:
        gossip.known_by(a.node_id).add(tx_id_)
    a.queued_bytes = RECONCILE_QUEUE_BYTES  # its queue is full: nothing more for it now
    rec.connected(a.node_id)
    await rec.start_joined()
    rec.step_peer(a.node_id)
    assert a.sent == []
    a.queued_bytes = 0
    rec.step_peer(a.node_id)
    assert a.sent == []  # looked at RECONCILE_SCAN_IDS ids, all known: nothing yet
    rec.step_peer(a.node_id)
    rec.step_peer(a.node_id)
    assert a.offered() == ids[2 * RECONCILE_SCAN_IDS:][:RECONCILE_BATCH_IDS]


@dataclass(frozen=True)
class IdOnly:
    id: bytes


async def test_a_snapshot_of_a_large_mempool_lets_other_tasks_run(nursery):
    txs = [IdOnly(tx_id(n)) for n in range(8 * RECONCILE_SCAN_IDS)]
    rec = Reconciler(FakeHost([]), gossiping(0).gossip,
                     lambda limit: txs[:limit], lambda _: True)
    ticks = 0

    async def other_task() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    nursery.start_soon(other_task)
    await trio.lowlevel.checkpoint()
    ticks = 0
    rec.connected(A)
    await rec.start_joined()
    assert ticks >= 4  # it ran between the chunks of the snapshot (8 of them)


async def test_a_periodic_pass_offers_what_stayed_pending_and_not_what_commits_at_once(
        nursery, autojump_clock):
    """A gap left while connected (a transaction that reached this node but not its peer,
    the live message lost) is filled by the next passes; at a steady load, where everything
    commits within an interval, passes send nothing."""
    rec, _, _, (a, _), pool = setup()
    await nursery.start(rec.run)
    await trio.sleep(0.1)
    stuck = fill(pool, 3)
    quick = fill(pool, 3, start=10)
    await trio.sleep(RECONCILE_INTERVAL_S)  # the first pass: nothing pending that long
    assert a.sent == []
    for tx_id_ in quick:
        del pool.txs[tx_id_]  # committed
    await trio.sleep(RECONCILE_INTERVAL_S)
    assert a.offered() == stuck


@pytest.mark.parametrize(("passes", "due"), [
    (0, False), (1, False), (2, True), (3, False), (4, True), (6, False), (8, True),
    (12, False), (16, True), (1024, True), (1026, False)])
def test_an_id_is_offered_again_after_2_4_8_passes(passes, due):
    assert reconcile._reoffer_due(passes) is due


async def test_an_id_still_pending_is_offered_again_to_peers_that_were_sent_it(
        autojump_clock):
    """A peer that was pushed a transaction may have refused it for a reason time undoes
    (its mempool full): offered again after 2 passes, 4, 8, each time fetchable once more;
    not at every pass."""
    rec, gossip, _, (a, b), pool = setup()
    ids = fill(pool, 3)
    for peer in (a, b):
        for tx_id_ in ids:
            gossip.known_by(peer.node_id).add(tx_id_)  # pushed to both
    guard = ServeGuard(0.0)
    rec._guards[a.node_id] = guard
    assert guard.admit(ids, gossip.known_by(a.node_id), pool.txs.__contains__, 0.0)[0] == ids
    offers = []
    for _ in range(9):
        await rec.start_pass()
        for peer in (a, b):
            rec.step_peer(peer.node_id)
        offers.append(len(a.offered()))
    # passes 1..9: first seen at pass 1; offered again at passes 3, 5 and 9
    assert offers == [0, 0, 3, 3, 6, 6, 6, 6, 9]
    assert b.offered() == ids * 3
    # and a may ask for them again: served once more after each offer
    assert guard.admit(ids, gossip.known_by(a.node_id), pool.txs.__contains__, 1.0)[0] == ids
    # still known to a all along: a request for one that commits meanwhile costs it nothing
    del pool.txs[ids[0]]
    assert guard.admit(ids[:1], gossip.known_by(a.node_id), pool.txs.__contains__, 2.0)[1] == 0


async def test_a_pass_leaves_a_walk_in_progress_alone(autojump_clock):
    """A new peer's walk (every pending id, paced by its queue) is not cut short by a pass
    over the older ids only."""
    rec, _, _, (a, b), pool = setup()
    old = fill(pool, 2)
    await rec.start_pass()  # nothing pending at the pass before: nothing offered
    rec.step_peer(a.node_id)
    rec.step_peer(b.node_id)
    new = fill(pool, 2, start=10)
    a.queued_bytes = RECONCILE_QUEUE_BYTES
    rec.connected(a.node_id)
    await rec.start_joined()  # a (re)connected: old and new
    await rec.start_pass()  # old only
    a.queued_bytes = 0
    rec.step_peer(a.node_id)
    rec.step_peer(b.node_id)
    assert a.offered() == old + new and b.offered() == old


async def test_an_answer_that_never_came_is_asked_again_from_another_announcer(
        nursery, autojump_clock):
    rec, g, (a, b) = reconciling()
    gossip = g.gossip
    await nursery.start(rec.run)
    await nursery.start(g.admission.run)
    tx = reading(1)
    gossip.on_announce(a, TxAnnounce([tx.id]))
    gossip.on_announce(b, TxAnnounce([tx.id]))
    assert a.of(TxRequest) == [TxRequest([tx.id])] and b.sent == []
    await trio.sleep(REQUEST_RETRY_S + 0.6)  # a's answer was lost
    assert b.of(TxRequest) == [TxRequest([tx.id])]
    await g.deliver(b, [tx.raw])  # b answers: not asked again
    await trio.sleep(10 * REQUEST_RETRY_S)
    assert len(a.of(TxRequest)) == 1 and len(b.of(TxRequest)) == 1


async def test_nothing_is_asked_again_while_received_transactions_wait_for_admission(
        autojump_clock):
    _, gossip, _, (a, b), _ = setup()
    tx = reading(1)
    gossip.on_announce(a, TxAnnounce([tx.id]))
    gossip.on_announce(b, TxAnnounce([tx.id]))
    await gossip.queue_txs(a, Txs([tx.raw]))  # a's answer came; not admitted yet
    await trio.sleep(REQUEST_RETRY_S)
    assert gossip.retry_requests(trio.current_time()) == 0 and b.sent == []


async def test_requests_are_served_within_bounds_and_unoffered_ids_cost_score(autojump_clock):
    rec, gossip, host, (a, _), pool = setup()
    ids = fill(pool, 3)
    gossip.known_by(a.node_id).add(ids[0])
    stranger = tx_id(99)  # neither announced to a nor pending here
    rec.on_request(a, TxRequest([ids[0], ids[1], stranger]))
    assert a.of(Txs) == [Txs([pool.txs[ids[0]].raw, pool.txs[ids[1]].raw])]
    assert [(node, points) for node, points, _ in host.penalties] == [
        (a.node_id, score.UNREQUESTED)]
    rec.on_request(a, TxRequest([ids[0], ids[1]]))  # served once each
    assert len(a.of(Txs)) == 1 and len(host.penalties) == 1


async def test_a_peer_asking_too_fast_is_not_served_beyond_its_budget(
        autojump_clock, monkeypatch):
    monkeypatch.setattr(reconcile, "SERVE_IDS_BURST", 2)
    monkeypatch.setattr(reconcile, "SERVE_IDS_PER_S", 1)
    rec, gossip, host, (a, _), pool = setup()
    ids = fill(pool, 4)
    for tx_id_ in ids:
        gossip.known_by(a.node_id).add(tx_id_)  # offered to a
    rec.on_request(a, TxRequest(ids))
    assert [len(m.txs) for m in a.of(Txs)] == [2] and rec.over_budget == 2
    assert host.penalties == []  # not misbehaviour
    # the two not served are offered again by a later pass, and served within the budget
    assert [i in gossip.known_by(a.node_id) for i in ids] == [True, True, False, False]
    await trio.sleep(2.0)
    rec.on_request(a, TxRequest(ids[2:]))
    assert [len(m.txs) for m in a.of(Txs)] == [2, 2]


async def test_a_request_naming_an_id_twice_is_refused_whole_and_costs_its_sender(
        autojump_clock):
    rec, _, host, (a, _), pool = setup()
    ids = fill(pool, 2)
    rec.on_request(a, TxRequest([ids[0], ids[1], ids[0]]))
    assert a.of(Txs) == []
    assert [(points, reason) for _, points, reason in host.penalties] == [
        (score.INVALID_MESSAGE, "tx_request_refused: 1 of 3 ids asked more than once")]
    rec.on_request(a, TxRequest(ids))  # without the repeat it is served
    assert [len(m.txs) for m in a.of(Txs)] == [2]


async def test_an_answer_is_split_by_bytes_below_the_frame_limit(autojump_clock, monkeypatch):
    monkeypatch.setattr(gossip_module, "TXS_MESSAGE_BYTES", 1000)
    rec, _, _, (a, _), pool = setup()
    ids = fill(pool, 40)
    size = len(pool.txs[ids[0]].raw)
    rec.on_request(a, TxRequest(ids))
    answers = a.of(Txs)
    assert [raw for m in answers for raw in m.txs] == [pool.txs[i].raw for i in ids]
    assert len(answers) > 1
    assert all(sum(map(len, m.txs)) <= 1000 for m in answers)
    assert all(len(m.txs) == 1000 // size for m in answers[:-1])


def test_a_batch_of_the_largest_transactions_fits_a_frame():
    """The count limit alone would allow 4,096 x 4,096 bytes: 16 MiB in a 4 MiB frame."""
    peer = FakePeer(A)
    raws = [bytes(MAX_TX_BYTES)] * MAX_TXS_PER_MESSAGE
    send_txs(peer, raws, sum(map(len, raws)))
    assert sum(len(m.txs) for m in peer.sent) == MAX_TXS_PER_MESSAGE
    assert all(len(encode_message(m)) < MAX_MESSAGE_BYTES for m in peer.sent)


@pytest.mark.parametrize("kind", [TxAnnounce, TxRequest])
def test_id_messages_beyond_the_limit_do_not_decode(kind):
    from iomtnode.p2p.messages import ProtocolError, decode_message, encode_message

    with pytest.raises(ProtocolError):
        decode_message(encode_message(kind([tx_id(n) for n in range(MAX_IDS_PER_MESSAGE + 1)])))


async def test_a_stuck_walk_keeps_only_pending_ids_to_offer_again(autojump_clock):
    """A walk paced by a peer that reads slowly (its queue stays full) lives through many
    passes; what it is to offer again is what is still pending, not every id that ever
    was due (it grew with the node's traffic for as long as the peer kept it stuck)."""
    rec, _, _, (a, _b), pool = setup()
    a.queued_bytes = RECONCILE_QUEUE_BYTES
    batches: list[list[bytes]] = []
    for n in range(30):
        batches.append(fill(pool, 10, start=1 + 10 * n))
        await rec.start_pass()
        rec.step_peer(a.node_id)
        if len(batches) > 3:  # each batch stays pending 3 passes, then commits
            for tx_id_ in batches[-4]:
                del pool.txs[tx_id_]
    assert a.node_id in rec._walks
    assert 0 < len(rec._walks[a.node_id].again) <= len(pool.txs)
