"""Transaction gossip, driven by hand through fake peers: dedup, no echo, first-hop push,
announce-then-fetch, batching, penalties."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio

from iomtnode.admission.gossip import PUSH_MAX_TX_BYTES, TxGossip
from iomtnode.admission.messages import TxAnnounce, TxRequest, Txs
from iomtnode.core import errors as e
from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.core.tx import Reading, SignedTx, sign_tx
from iomtnode.p2p import score

CHAIN = "iomt-test"
DEVICE = SigningKey(blake2b256(b"device"))


def reading(seq: int) -> SignedTx:
    return sign_tx(Reading(DEVICE.public, seq, 1000 + seq, "heart_rate", b"\x01" * 40, b""),
                   DEVICE, CHAIN)


@dataclass
class FakePeer:
    node_id: bytes
    sent: list = field(default_factory=list)

    def send(self, msg) -> bool:
        self.sent.append(msg)
        return True

    def of(self, kind) -> list:
        return [m for m in self.sent if isinstance(m, kind)]


@dataclass
class FakeHost:
    peer_list: list[FakePeer]
    penalties: list = field(default_factory=list)

    def peers(self):
        return list(self.peer_list)

    def get(self, node_id):
        return next((p for p in self.peer_list if p.node_id == node_id), None)

    def penalize(self, peer, points, reason):
        self.penalties.append((peer.node_id, points, reason))


class FakeMempool:
    def __init__(self, refuse: Exception | None = None) -> None:
        self.txs: dict[bytes, SignedTx] = {}
        self.refuse = refuse
        self.admitted = 0

    async def admit(self, txs: list[SignedTx]) -> list[SignedTx | Exception]:
        out: list[SignedTx | Exception] = []
        for tx in txs:
            if self.refuse is not None:
                out.append(self.refuse)
                continue
            self.admitted += 1
            self.txs[tx.id] = tx
            out.append(tx)
        return out


def setup(n_peers: int = 3, refuse: Exception | None = None):
    peers = [FakePeer(bytes([i]) * 32) for i in range(n_peers)]
    host = FakeHost(peers)
    pool = FakeMempool(refuse)
    return TxGossip(host, pool.admit, pool.txs.get, relay_delay_s=0), host, peers, pool


def test_local_transactions_are_pushed_whole_to_every_peer_in_one_batch():
    gossip, _, peers, _ = setup()
    txs = [reading(i) for i in range(1, 6)]
    gossip.local(txs[:2])
    gossip.local(txs[2:])
    assert all(p.sent == [] for p in peers)  # nothing is sent per transaction
    gossip.flush()
    for peer in peers:
        assert peer.sent == [Txs([tx.raw for tx in txs])]


async def test_local_transactions_skip_peers_that_have_them_and_large_ones_are_announced():
    gossip, _, (a, b, c), _ = setup()
    small = reading(1)
    large = sign_tx(Reading(DEVICE.public, 2, 1002, "ecg", b"\x02" * 1000, b""), DEVICE, CHAIN)
    assert len(large.raw) > PUSH_MAX_TX_BYTES >= len(small.raw)
    gossip.on_announce(b, TxAnnounce([small.id]))  # b has the small one already
    b.sent.clear()
    gossip.local([small, large])
    gossip.flush()
    assert a.sent == c.sent == [Txs([small.raw]), TxAnnounce([large.id])]
    assert b.sent == [TxAnnounce([large.id])]
    gossip.local([small])  # every peer is known to have it now: nothing more is sent
    gossip.flush()
    assert a.sent == c.sent == [Txs([small.raw]), TxAnnounce([large.id])]


async def test_relayed_transactions_are_announced_never_echoed_and_admitted_once():
    gossip, _, (a, b, c), pool = setup()
    tx = reading(1)
    await gossip.on_txs(a, Txs([tx.raw]))
    gossip.flush()
    assert a.sent == []  # never back to its source
    assert b.sent == c.sent == [TxAnnounce([tx.id])]
    await gossip.on_txs(b, Txs([tx.raw]))  # the same transaction again, from another peer
    await gossip.on_txs(a, Txs([tx.raw]))
    gossip.flush()
    assert pool.admitted == 1  # checked and admitted once
    assert a.sent == [] and b.sent == c.sent == [TxAnnounce([tx.id])]  # nothing new sent


async def test_relays_wait_the_delay_and_a_transaction_committed_meanwhile_is_not_announced(
        autojump_clock):
    peers = [FakePeer(bytes([i]) * 32) for i in range(3)]
    a, b, c = peers
    pool = FakeMempool()
    gossip = TxGossip(FakeHost(peers), pool.admit, pool.txs.get, relay_delay_s=1.0)
    first, second = reading(1), reading(2)
    await gossip.on_txs(a, Txs([first.raw, second.raw]))
    gossip.flush()
    assert b.sent == c.sent == []  # not yet: the first hop may have reached them
    await trio.sleep(0.5)
    gossip.on_announce(c, TxAnnounce([second.id]))  # c has the second one
    del pool.txs[first.id]  # the first one was committed
    await trio.sleep(0.6)
    gossip.flush()
    assert b.sent == [TxAnnounce([second.id])] and c.sent == [] and a.sent == []


async def test_the_flusher_announces_relays_when_due(nursery, autojump_clock):
    gossip, _, (a, b, _), _ = setup()
    gossip.relay_delay_s = 2.0
    await nursery.start(gossip.run)
    tx = reading(1)
    await gossip.on_txs(a, Txs([tx.raw]))
    await trio.sleep(1.99)  # virtual time (autojump_clock): the flusher ran whenever it could
    assert b.sent == []
    await trio.sleep(0.02)  # the relay fell due at 2.0 and waited FLUSH_INTERVAL_S for company
    assert b.sent == [TxAnnounce([tx.id])]


async def test_announcements_are_fetched_once_and_served_from_the_mempool():
    gossip, _, (a, b, _), pool = setup()
    tx = reading(1)
    gossip.on_announce(a, TxAnnounce([tx.id]))
    gossip.on_announce(b, TxAnnounce([tx.id]))  # already requested from a
    assert a.sent == [TxRequest([tx.id])] and b.sent == []
    await gossip.on_txs(a, Txs([tx.raw]))
    assert tx.id in pool.txs
    gossip.on_request(b, TxRequest([tx.id, b"\x09" * 32]))  # unknown ids are skipped
    assert b.sent == [Txs([tx.raw])]


async def test_a_seen_transaction_is_not_requested():
    gossip, _, (a, _, _), _ = setup()
    tx = reading(1)
    gossip.local([tx])
    gossip.on_announce(a, TxAnnounce([tx.id]))
    assert a.of(TxRequest) == []


async def test_bad_signatures_and_garbage_cost_the_sender_score():
    gossip, host, (a, b, _), _ = setup(refuse=e.BadSignatureRuleError("bad reading signature"))
    await gossip.on_txs(a, Txs([reading(1).raw, b"\x93garbage"]))
    reasons = {(node, points) for node, points, _ in host.penalties}
    assert reasons == {(a.node_id, score.BAD_SIGNATURE), (a.node_id, score.INVALID_MESSAGE)}
    gossip.flush()
    assert b.sent == []  # nothing invalid is relayed


@pytest.mark.parametrize("refusal", [e.StaleSequenceError("stale"), e.MempoolFullError("full")])
async def test_rule_refusals_are_not_relayed_and_not_penalised(refusal):
    gossip, host, (a, b, _), _ = setup(refuse=refusal)
    await gossip.on_txs(a, Txs([reading(1).raw]))
    gossip.flush()
    assert host.penalties == [] and b.sent == []


@pytest.mark.parametrize("refusal", [
    e.MempoolFullError("full"), e.FutureTimestampError("ahead"), e.UnknownDeviceError("new")])
async def test_a_refusal_that_time_may_undo_lets_the_transaction_be_fetched_again(refusal):
    """A full mempool, a clock behind the device's, a reading before its device's admission:
    the same transaction announced later (by reconciliation, say) is asked for again."""
    gossip, _, (a, b, _), pool = setup(refuse=refusal)
    tx = reading(1)
    await gossip.on_txs(a, Txs([tx.raw]))
    pool.refuse = None
    gossip.on_announce(b, TxAnnounce([tx.id]))
    assert b.of(TxRequest) == [TxRequest([tx.id])]


async def test_a_lasting_refusal_is_remembered_and_not_fetched_again():
    gossip, _, (a, b, _), _ = setup(refuse=e.ReplayedSequenceError("replayed"))
    tx = reading(1)
    await gossip.on_txs(a, Txs([tx.raw]))
    gossip.on_announce(b, TxAnnounce([tx.id]))
    assert b.of(TxRequest) == []


async def test_a_forged_copy_does_not_shadow_the_real_transaction():
    """Same body (same id) with a bad signature first, then the real one: admitted."""
    from iomtnode.core import codec
    from iomtnode.core.crypto import BadSignatureError

    real = reading(1)
    forged = codec.encode([real.body_bytes, bytes(64)])
    admitted = []

    async def admit(txs):
        out = []
        for tx in txs:
            try:
                tx.verify(CHAIN)
            except BadSignatureError as exc:
                out.append(e.BadSignatureRuleError(str(exc)))
                continue
            admitted.append(tx.id)
            out.append(tx)
        return out

    peers = [FakePeer(b"\x01" * 32), FakePeer(b"\x02" * 32)]
    host = FakeHost(peers)
    gossip = TxGossip(host, admit, lambda tx_id: None)
    await gossip.on_txs(peers[0], Txs([forged]))
    await gossip.on_txs(peers[1], Txs([real.raw]))
    assert admitted == [real.id]
    assert [p[0] for p in host.penalties] == [peers[0].node_id]


async def test_queued_batches_from_several_peers_are_admitted_together_off_the_reader(
        nursery, monkeypatch):
    from trio.testing import wait_all_tasks_blocked

    from iomtnode.admission import gossip as txgossip

    monkeypatch.setattr(txgossip, "INBOX_TXS", 3)
    calls: list[int] = []
    peers = [FakePeer(bytes([i]) * 32) for i in range(3)]
    host = FakeHost(peers)
    pool = FakeMempool()

    async def admit(txs):
        calls.append(len(txs))
        return await pool.admit(txs)

    gossip = TxGossip(host, admit, pool.txs.get, relay_delay_s=0)
    txs = [reading(i) for i in range(1, 6)]
    await gossip.queue_txs(peers[0], Txs([txs[0].raw, txs[1].raw]))  # returns at once
    await gossip.queue_txs(peers[1], Txs([txs[2].raw]))
    assert pool.admitted == 0 and calls == []
    blocked = trio.Event()

    async def third() -> None:  # 3 queued: this reader waits for room
        await gossip.queue_txs(peers[2], Txs([txs[3].raw, txs[4].raw]))
        blocked.set()

    nursery.start_soon(third)
    await wait_all_tasks_blocked()
    assert not blocked.is_set()
    await nursery.start(gossip.run)
    await blocked.wait()
    await wait_all_tasks_blocked()
    assert calls[0] == 3 and pool.admitted == 5  # the first two messages in one batch
    gossip.flush()
    assert peers[2].of(TxAnnounce) == [TxAnnounce([tx.id for tx in txs[:3]])]


async def test_the_inbox_says_how_far_it_has_admitted_what_peers_pushed(nursery):
    """Consensus asks whether the transactions received until a mark are admitted (a
    proposal's may be queued still) and hears of each admission step."""
    from trio.testing import wait_all_tasks_blocked

    gossip, _, peers, pool = setup()
    steps: list[int] = []
    gossip.on_progress = lambda: steps.append(pool.admitted)
    assert gossip.admitted(gossip.mark())  # nothing queued: nothing to wait for
    await gossip.queue_txs(peers[0], Txs([reading(1).raw, reading(2).raw]))
    mark = gossip.mark()
    assert mark == 2 and not gossip.admitted(mark) and steps == []
    await nursery.start(gossip.run)
    await wait_all_tasks_blocked()
    assert gossip.admitted(mark) and steps == [2] and pool.admitted == 2
    await gossip.on_txs(peers[1], Txs([reading(3).raw]))  # not queued: no mark moves
    assert gossip.mark() == 2 and steps == [2]


async def test_a_wait_for_the_inbox_ends_when_it_has_admitted_up_to_the_mark(nursery):
    """Block relay waits for the inbox before asking a peer for a block's transactions."""
    from trio.testing import wait_all_tasks_blocked

    gossip, _, peers, pool = setup()
    with trio.fail_after(5):
        await gossip.wait_admitted(gossip.mark())  # nothing queued: returns at once
    await gossip.queue_txs(peers[0], Txs([reading(1).raw, reading(2).raw]))
    mark = gossip.mark()
    assert gossip.backlog() == 2
    waited: list[int] = []
    done = trio.Event()

    async def wait() -> None:
        await gossip.wait_admitted(mark)
        waited.append(pool.admitted)
        done.set()

    nursery.start_soon(wait)
    await wait_all_tasks_blocked()
    assert waited == []  # the admission task has not run
    await nursery.start(gossip.run)
    with trio.fail_after(5):
        await done.wait()
    assert waited == [2] and gossip.backlog() == 0


async def test_the_relay_delay_grows_with_how_long_commits_take(autojump_clock):
    """Announcing what is still pending after the delay is for peers that lack it; when
    commits take seconds (a loaded network), every peer of a full mesh has it, so the delay
    follows the admission-to-commit time this node measures (every 64th transaction)."""
    from iomtnode.admission import gossip as txgossip

    gossip, _, peers, pool = setup()
    txs = [reading(seq) for seq in range(1, 65)]
    await gossip.on_txs(peers[0], Txs([tx.raw for tx in txs]))
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


async def test_relays_stay_in_due_order_when_the_delay_shrinks(autojump_clock):
    gossip, _, peers, _ = setup()
    gossip.commit_s = 4.0  # commits were slow: relays wait 8 s
    await gossip.on_txs(peers[0], Txs([reading(1).raw]))
    gossip.commit_s = 0.0  # now quick: the least delay (0 here)
    await gossip.on_txs(peers[0], Txs([reading(2).raw]))
    dues = [relay.due for relay in gossip._relays]
    assert len(dues) == 2 and dues[1] >= dues[0]  # not stuck behind the first one


async def test_copies_of_committed_transactions_are_skipped_while_the_inbox_is_behind():
    """A node that fell behind commits a block's transactions (fetched with the block)
    while their pushed copies still wait in its inbox and peers announce them: the copies
    are not admitted and the announced ids are not asked for."""
    gossip, _, peers, pool = setup()
    late = [reading(seq) for seq in range(1, 4)]
    await gossip.queue_txs(peers[0], Txs([tx.raw for tx in late]))
    gossip.committed(tx.id for tx in late)
    gossip.on_announce(peers[1], TxAnnounce([tx.id for tx in late]))
    assert peers[1].of(TxRequest) == []
    await gossip.on_txs(peers[0], Txs([tx.raw for tx in late]))
    assert pool.admitted == 0
    fresh = reading(4)  # not committed: admitted as ever
    await gossip.on_txs(peers[0], Txs([fresh.raw]))
    assert pool.admitted == 1


async def test_a_node_with_nothing_queued_remembers_no_committed_ids():
    """A syncing node (no gossip waiting) keeps its seen-cache empty: memory."""
    gossip, _, peers, pool = setup()
    gossip.committed(reading(seq).id for seq in range(1, 4))
    await gossip.on_txs(peers[0], Txs([reading(1).raw]))
    assert pool.admitted == 1  # not marked seen: admitted (the mempool refuses it if stale)
