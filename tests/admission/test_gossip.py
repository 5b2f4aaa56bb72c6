"""Transaction gossip, driven by hand through fake peers around the real admission
service: dedup, no echo, first-hop push, announce-then-fetch, batching, penalties."""

from __future__ import annotations

import pytest
import trio

from iomtnode.admission.gossip import PUSH_MAX_TX_BYTES
from iomtnode.admission.messages import TxAnnounce, TxRequest, Txs
from iomtnode.core import errors as e
from iomtnode.p2p import score

from ..core.helpers import pub
from ..core.sealkit import announce
from .fakes import CHAIN, DEVICE, PUSHED_MS, Gossiping, gossiping, reading

MANY = [pub(f"G{i}") for i in range(24)]

def setup(n_peers: int = 3, refuse: Exception | None = None):
    g = gossiping(n_peers, refuse)
    return g.gossip, g.host, g.peers, g.pool


async def started(nursery, n_peers: int = 3, refuse: Exception | None = None, *,
                  relay_delay_s: float = 0) -> Gossiping:
    g = gossiping(n_peers, refuse, relay_delay_s=relay_delay_s)
    await nursery.start(g.admission.run)
    return g


def test_local_transactions_are_pushed_whole_to_every_peer_in_one_batch_behind_a_busy_link():
    gossip, _, peers, _ = setup()
    for peer in peers:
        peer.queued_bytes = 1000  # a frame waits to be written to each
    txs = [reading(i) for i in range(1, 6)]
    gossip.local(txs[:2])
    gossip.local(txs[2:])
    assert all(p.sent == [] for p in peers)  # nothing is sent per transaction
    gossip.flush()
    for peer in peers:
        assert peer.sent == [Txs([tx.raw for tx in txs], PUSHED_MS)]


def test_local_transactions_go_at_once_to_an_idle_link_with_what_waited_for_it():
    gossip, _, (idle, busy), _ = setup(2)
    busy.queued_bytes = idle.queued_bytes = 1000
    first, second, third = reading(1), reading(2), reading(3)
    gossip.local([first])  # both links busy: it waits
    assert idle.sent == busy.sent == []
    idle.queued_bytes = 0  # one link's frames are written
    gossip.local([second, third])
    assert idle.sent == [Txs([first.raw, second.raw, third.raw], PUSHED_MS)]  # at once, one message
    assert busy.sent == []  # still batching behind its frames
    gossip.flush()
    assert idle.sent == [Txs([first.raw, second.raw, third.raw], PUSHED_MS)]  # nothing left for it
    assert busy.sent == [Txs([first.raw, second.raw, third.raw], PUSHED_MS)]


async def test_local_transactions_skip_peers_that_have_them_and_large_ones_are_announced():
    gossip, _, (a, b, c), _ = setup()
    small = reading(1)
    large = announce(DEVICE, CHAIN, grantees=MANY)  # an epoch wrapped for 24 grantees
    assert len(large.raw) > PUSH_MAX_TX_BYTES >= len(small.raw)
    gossip.on_announce(b, TxAnnounce([small.id]))  # b has the small one already
    b.sent.clear()
    gossip.local([small, large])
    gossip.flush()
    assert a.sent == c.sent == [Txs([small.raw], PUSHED_MS), TxAnnounce([large.id])]
    assert b.sent == [TxAnnounce([large.id])]
    gossip.local([small])  # every peer is known to have it now: nothing more is sent
    gossip.flush()
    assert a.sent == c.sent == [Txs([small.raw], PUSHED_MS), TxAnnounce([large.id])]


async def test_relayed_transactions_are_announced_never_echoed_and_admitted_once(nursery):
    g = await started(nursery)
    gossip, (a, b, c), pool = g.gossip, g.peers, g.pool
    tx = reading(1)
    await g.deliver(a, [tx.raw])
    gossip.flush()
    assert a.sent == []  # never back to its source
    assert b.sent == c.sent == [TxAnnounce([tx.id])]
    await g.deliver(b, [tx.raw])  # the same transaction again, from another peer
    await g.deliver(a, [tx.raw])
    gossip.flush()
    assert pool.admitted == 1  # checked and admitted once
    assert a.sent == [] and b.sent == c.sent == [TxAnnounce([tx.id])]  # nothing new sent


async def test_relays_wait_the_delay_and_a_transaction_committed_meanwhile_is_not_announced(
        nursery, autojump_clock):
    g = await started(nursery, relay_delay_s=1.0)
    gossip, (a, b, c), pool = g.gossip, g.peers, g.pool
    first, second = reading(1), reading(2)
    await g.deliver(a, [first.raw, second.raw])
    gossip.flush()
    assert b.sent == c.sent == []  # not yet: the first hop may have reached them
    await trio.sleep(0.5)
    gossip.on_announce(c, TxAnnounce([second.id]))  # c has the second one
    del pool.txs[first.id]  # the first one was committed
    await trio.sleep(0.6)
    gossip.flush()
    assert b.sent == [TxAnnounce([second.id])] and c.sent == [] and a.sent == []


async def test_a_stamped_push_times_its_delivery_and_an_unstamped_one_does_not(nursery):
    g = await started(nursery)  # its admission's clock reads 2000 ms
    await g.deliver(g.peers[0], [reading(1).raw, reading(2).raw], admitted_ms=1600)
    await g.deliver(g.peers[1], [reading(3).raw])  # an answer to a request: no stamp
    await g.deliver(g.peers[1], [reading(1).raw], admitted_ms=1000)  # a copy: not admitted
    summary = g.delivery_delay.summary()
    assert (summary["samples"], summary["p50"], summary["max"]) == (2, 400, 400)


async def test_the_flusher_announces_relays_when_due(nursery, autojump_clock):
    g = await started(nursery, relay_delay_s=2.0)
    gossip, (a, b, _) = g.gossip, g.peers
    await nursery.start(gossip.run)
    tx = reading(1)
    await g.deliver(a, [tx.raw])
    await trio.sleep(1.99)  # virtual time (autojump_clock): the flusher ran whenever it could
    assert b.sent == []
    await trio.sleep(0.02)  # the relay fell due at 2.0 and waited FLUSH_INTERVAL_S for company
    assert b.sent == [TxAnnounce([tx.id])]


async def test_announcements_are_fetched_once_and_served_from_the_mempool(nursery):
    g = await started(nursery)
    gossip, (a, b, _), pool = g.gossip, g.peers, g.pool
    tx = reading(1)
    gossip.on_announce(a, TxAnnounce([tx.id]))
    gossip.on_announce(b, TxAnnounce([tx.id]))  # already requested from a
    assert a.sent == [TxRequest([tx.id])] and b.sent == []
    await g.deliver(a, [tx.raw])
    assert tx.id in pool.txs
    gossip.on_request(b, TxRequest([tx.id, b"\x09" * 32]))  # unknown ids are skipped
    assert b.sent == [Txs([tx.raw])]


async def test_a_seen_transaction_is_not_requested():
    gossip, _, (a, _, _), _ = setup()
    tx = reading(1)
    gossip.local([tx])
    gossip.on_announce(a, TxAnnounce([tx.id]))
    assert a.of(TxRequest) == []


async def test_bad_signatures_and_garbage_cost_the_sender_score(nursery):
    g = await started(nursery, refuse=e.BadSignatureRuleError("bad reading signature"))
    (a, b, _) = g.peers
    await g.deliver(a, [reading(1).raw, b"\x93garbage"])
    reasons = {(node, points) for node, points, _ in g.host.penalties}
    assert reasons == {(a.node_id, score.BAD_SIGNATURE), (a.node_id, score.INVALID_MESSAGE)}
    g.gossip.flush()
    assert b.sent == []  # nothing invalid is relayed


@pytest.mark.parametrize("refusal", [
    e.StaleSequenceError("stale"), e.MempoolFullError("full"), e.UnknownDeviceError("new"),
    e.UnknownStreamError("nobody's"), e.NotAuthorityError("not one"),
    e.StaleEpochError("over"), e.UnknownEpochError("not yet")])
async def test_rule_refusals_are_not_relayed_and_not_penalised(nursery, refusal):
    """The sender checked against its own state, which may be behind or ahead of ours."""
    g = await started(nursery, refuse=refusal)
    (a, b, _) = g.peers
    await g.deliver(a, [reading(1).raw])
    g.gossip.flush()
    assert g.host.penalties == [] and b.sent == []


@pytest.mark.parametrize("refusal", [
    e.MempoolFullError("full"), e.FutureTimestampError("ahead"), e.UnknownDeviceError("new"),
    e.UnknownStreamError("not yet"), e.UnknownEpochError("not announced here yet")])
async def test_a_refusal_that_time_may_undo_lets_the_transaction_be_fetched_again(
        nursery, refusal):
    """A full mempool, a clock behind the device's, a reading before its device's admission
    or its stream's epoch: the same transaction announced later (by reconciliation, say) is
    asked for again."""
    g = await started(nursery, refuse=refusal)
    (a, b, _) = g.peers
    tx = reading(1)
    await g.deliver(a, [tx.raw])
    g.pool.refuse = None
    g.gossip.on_announce(b, TxAnnounce([tx.id]))
    assert b.of(TxRequest) == [TxRequest([tx.id])]


@pytest.mark.parametrize("refusal", [
    e.ReplayedSequenceError("replayed"), e.StaleEpochError("re-sealed under another id")])
async def test_a_lasting_refusal_is_remembered_and_not_fetched_again(nursery, refusal):
    g = await started(nursery, refuse=refusal)
    (a, b, _) = g.peers
    tx = reading(1)
    await g.deliver(a, [tx.raw])
    g.gossip.on_announce(b, TxAnnounce([tx.id]))
    assert b.of(TxRequest) == []


async def test_a_forged_copy_does_not_shadow_the_real_transaction(nursery):
    """Same body (same id) with a bad signature first, then the real one: admitted."""
    from iomtnode.core import codec

    real = reading(1)
    forged = codec.encode([real.body_bytes, bytes(64), real.sidecar])  # complete, unsigned
    g = await started(nursery, n_peers=2)
    await g.deliver(g.peers[0], [forged])
    await g.deliver(g.peers[1], [real.raw])
    assert list(g.pool.txs) == [real.id] and g.pool.admitted == 1
    assert [p[:2] for p in g.host.penalties] == [(g.peers[0].node_id, score.BAD_SIGNATURE)]


async def test_queued_batches_from_several_peers_are_admitted_together_off_the_reader(
        nursery):
    from trio.testing import wait_all_tasks_blocked

    g = gossiping(capacity_txs=3)
    peers, pool = g.peers, g.pool
    calls: list[int] = []
    real_verify = pool.verifier.verify

    async def verify(txs, *, bulk=False):  # one call per admission step
        calls.append(len(txs))
        return await real_verify(txs, bulk=bulk)

    pool.verifier.verify = verify
    txs = [reading(i) for i in range(1, 6)]
    await g.gossip.queue_txs(peers[0], Txs([txs[0].raw, txs[1].raw]))  # returns at once
    await g.gossip.queue_txs(peers[1], Txs([txs[2].raw]))
    assert pool.admitted == 0 and calls == []
    blocked = trio.Event()

    async def third() -> None:  # 3 queued: this reader waits for room
        await g.gossip.queue_txs(peers[2], Txs([txs[3].raw, txs[4].raw]))
        blocked.set()

    nursery.start_soon(third)
    await wait_all_tasks_blocked()
    assert not blocked.is_set()
    await nursery.start(g.admission.run)
    await blocked.wait()
    await wait_all_tasks_blocked()
    assert calls == [3, 2] and pool.admitted == 5  # the first two messages in one step
    g.gossip.flush()
    assert peers[2].of(TxAnnounce) == [TxAnnounce([tx.id for tx in txs[:3]])]


async def test_the_relay_delay_grows_with_how_long_commits_take(nursery, autojump_clock):
    """Announcing what is still pending after the delay is for peers that lack it; when
    commits take seconds (a loaded network), every peer of a full mesh has it, so the delay
    follows the admission-to-commit time this node measures (every 64th transaction)."""
    from iomtnode.admission import gossip as txgossip

    g = await started(nursery)
    gossip, pool = g.gossip, g.pool
    txs = [reading(seq) for seq in range(1, 65)]
    await g.deliver(g.peers[0], [tx.raw for tx in txs])
    assert gossip.relay_delay() == 0  # the configured least delay; nothing timed yet
    await trio.sleep(3.0)
    gossip.committed()  # still pending: not timed
    assert gossip.commit_s == 0
    pool.txs.clear()  # committed
    gossip.committed()
    assert gossip.commit_s == pytest.approx(txgossip.PROBE_WEIGHT * 3.0)
    assert gossip.relay_delay() == pytest.approx(txgossip.RELAY_WAIT_FACTOR * gossip.commit_s)
    gossip.commit_s = 1000.0
    assert gossip.relay_delay() == txgossip.RELAY_DELAY_MAX_S


async def test_relays_stay_in_due_order_when_the_delay_shrinks(nursery, autojump_clock):
    g = await started(nursery)
    gossip = g.gossip
    gossip.commit_s = 4.0  # commits were slow: relays wait 8 s
    await g.deliver(g.peers[0], [reading(1).raw])
    gossip.commit_s = 0.0  # now quick: the least delay (0 here)
    await g.deliver(g.peers[0], [reading(2).raw])
    dues = [relay.due for relay in gossip._relays]
    assert len(dues) == 2 and dues[1] >= dues[0]  # not stuck behind the first one


async def test_copies_of_committed_transactions_are_skipped_while_the_inbox_is_behind(
        nursery):
    """A node that fell behind commits a block's transactions (fetched with the block)
    while their pushed copies still wait in its inbox and peers announce them: the copies
    are not admitted and the announced ids are not asked for."""
    g = gossiping()
    gossip, peers, pool = g.gossip, g.peers, g.pool
    late = [reading(seq) for seq in range(1, 4)]
    await gossip.queue_txs(peers[0], Txs([tx.raw for tx in late]))
    gossip.committed(tx.id for tx in late)
    gossip.on_announce(peers[1], TxAnnounce([tx.id for tx in late]))
    assert peers[1].of(TxRequest) == []
    await nursery.start(g.admission.run)
    await g.deliver(peers[0], [tx.raw for tx in late])
    assert pool.admitted == 0
    fresh = reading(4)  # not committed: admitted as ever
    await g.deliver(peers[0], [fresh.raw])
    assert pool.admitted == 1


async def test_a_node_with_nothing_queued_remembers_no_committed_ids(nursery):
    """A syncing node (no gossip waiting) keeps its seen-cache empty: memory."""
    g = await started(nursery)
    g.gossip.committed(reading(seq).id for seq in range(1, 4))
    await g.deliver(g.peers[0], [reading(1).raw])
    assert g.pool.admitted == 1  # not marked seen: admitted (the mempool refuses it if stale)


@pytest.mark.parametrize("refuse", [None, e.UnknownDeviceError("new")])
async def test_a_batch_admitted_after_its_sender_left_keeps_nothing_for_it(nursery, refuse):
    """A peer pushes a batch and disconnects before admission gets to it (a throwaway key
    could do so at will): no set of the ids it knows is made again for it."""
    g = await started(nursery, refuse=refuse)
    (a, _, _) = g.peers
    await g.deliver(a, [reading(1).raw])  # a first batch while connected: a is known to have it
    await g.gossip.queue_txs(a, Txs([reading(2).raw, reading(2).raw, reading(3).raw]))
    g.host.peer_list.remove(a)  # a disconnects: the router tells gossip
    g.gossip.forget(a.node_id)
    with trio.fail_after(5):
        await g.inbox.wait_admitted(g.inbox.mark())
    assert a.node_id not in g.gossip._known
