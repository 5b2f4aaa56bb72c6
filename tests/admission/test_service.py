"""The admission service: one inbox with a bounded lane per kind of source (each source in
order); each transaction decoded once; the progress consensus and block
relay wait on; the mempool following the chain through the commit feed."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
from trio.testing import wait_all_tasks_blocked

from iomtnode.admission import inbox as inbox_module
from iomtnode.admission.batch import CHUNK
from iomtnode.admission.inbox import (
    CLIENT_TXS,
    INBOX_TXS,
    OWN_TXS,
    FromClient,
    FromPeer,
    Inbox,
    InboxFullError,
)
from iomtnode.admission.mempool import Mempool
from iomtnode.admission.messages import TxAnnounce, Txs
from iomtnode.admission.service import AdmissionStats
from iomtnode.chain.feed import BlockFeed
from iomtnode.chain.writer import ChainWriter
from iomtnode.core import errors as e
from iomtnode.core.block import sign_commit

from ..core.helpers import CHAIN_ID, key, pub
from .chainkit import T0, reading, source_chain
from .servicekit import Node


@pytest.fixture
def chain(tmp_path):
    chain, _ = source_chain(tmp_path / "data", 0, 0)  # devices d1..d3 admitted
    yield chain
    chain.store.close()


async def test_clients_and_peers_share_one_inbox_clients_first_each_source_in_order(
        chain, nursery):
    node = Node(chain)
    a, b = node.peers
    r = [reading("d1", seq) for seq in range(1, 6)]
    await node.push(a, r[0:2])
    replies: list = []

    async def client() -> None:
        replies.append(await node.admission.submit_many([r[2].raw, r[3].raw]))

    nursery.start_soon(client)
    await wait_all_tasks_blocked()
    await node.push(b, r[4:5])
    assert replies == [] and len(node.mempool) == 0 and node.inbox.queued == 5
    await nursery.start(node.admission.run)
    with trio.fail_after(5):
        await node.inbox.wait_admitted(node.inbox.mark())
        while not replies:
            await trio.lowlevel.checkpoint()
    # the client's first, then each peer's in arrival order
    assert node.mempool.oldest(10) == [r[2], r[3], r[0], r[1], r[4]]
    assert node.hops == [5]  # one step, one verification hop for both sources
    assert replies == [[r[2], r[3]]]
    txlog = chain.store.txlog  # the client's are durable (the peers' are not this node's)
    assert [txlog.is_pending(tx.id) for tx in r] == [False, False, True, True, False]
    assert node.inbox.mark() == 3  # progress counts what peers pushed
    node.gossip.flush()  # the client's pushed to both; each peer's relayed to the other
    assert a.of(Txs) == b.of(Txs) == [Txs([r[2].raw, r[3].raw], T0 + 60_000)]  # stamped
    assert a.of(TxAnnounce) == [TxAnnounce([r[4].id])]
    assert b.of(TxAnnounce) == [TxAnnounce([r[0].id, r[1].id])]
    assert node.gossip_delay.total == 3  # readings admitted from peers
    assert node.admission.stats() == AdmissionStats(
        pending_txs=5, dropped_txs=0, signatures_verified=5, inbox_queued=0, peer_backlog=0,
        mempool_max_txs=node.mempool.max_txs, received_txs={"client": 2, "peer": 3},
        rejected_txs={}, dropped_by_reason={})


async def test_a_full_inbox_pushes_back_on_peers_and_clients_each_in_its_lane(
        chain, nursery):
    node = Node(chain, capacity_txs=2, client_txs=1)
    a, _ = node.peers
    r = [reading("d2", seq) for seq in range(1, 6)]
    await node.push(a, r[0:2])  # the peers' lane is full now
    done: list[str] = []

    async def peer_reader() -> None:
        await node.push(a, r[2:3])
        done.append("peer")

    async def client(tx) -> None:
        await node.admission.submit(tx.raw)
        done.append("client")

    nursery.start_soon(peer_reader)
    await wait_all_tasks_blocked()
    nursery.start_soon(client, r[3])  # queued though the peers' lane is full
    await wait_all_tasks_blocked()
    assert node.admission.stats().inbox_queued == 3
    nursery.start_soon(client, r[4])  # the clients' lane is full: this one waits for room
    await wait_all_tasks_blocked()
    assert done == [] and node.admission.stats().inbox_queued == 3
    await nursery.start(node.admission.run)
    with trio.fail_after(5):
        while len(done) < 3:
            await trio.lowlevel.checkpoint()
    assert sorted(done) == ["client", "client", "peer"] and len(node.mempool) == 5


async def test_each_lane_of_the_inbox_is_bounded_in_transactions_by_a_constant(nursery):
    assert Inbox().capacity_txs == INBOX_TXS == inbox_module.INBOX_TXS
    assert Inbox().client_txs == CLIENT_TXS and Inbox().own_txs == OWN_TXS
    inbox = Inbox()
    await inbox.put(FromPeer(None, [b""] * (INBOX_TXS - 1)))
    await inbox.put(FromPeer(None, [b""] * 3))  # let in while fewer than the bound are queued
    nursery.start_soon(inbox.put, FromPeer(None, [b""]))
    await wait_all_tasks_blocked()
    assert inbox.queued == INBOX_TXS + 2  # that one waits for room
    inbox.put_own(FromClient([b""] * (OWN_TXS - 1), False, print))
    inbox.put_own(FromClient([b""], False, print))  # the last one fits
    with pytest.raises(InboxFullError):
        inbox.put_own(FromClient([b""], False, print))


async def test_a_full_inbox_still_takes_and_admits_the_nodes_evidence_report(chain, nursery):
    """An equivocation seen while peers and clients keep the inbox full is reported: the
    node's own transactions have a lane of their own, taken first."""
    from iomtnode.core.evidence import make_evidence
    from iomtnode.core.tx import ReportEvidence
    from iomtnode.core.vote import VoteType, sign_vote
    from iomtnode.node.views import EvidenceReporter

    node = Node(chain, capacity_txs=1, client_txs=1)
    r = [reading("d3", seq) for seq in range(1, 4)]
    await node.push(node.peers[0], r[0:1])
    nursery.start_soon(node.push, node.peers[1], r[1:2])  # waits for room
    nursery.start_soon(node.admission.submit, r[2].raw)
    await wait_all_tasks_blocked()
    assert node.inbox.queued == 2  # both lanes full
    votes = [sign_vote(key("A"), CHAIN_ID, VoteType.PREVOTE, 1, 0, bytes([x]) * 32)
             for x in (1, 2)]
    EvidenceReporter(key("A"), chain, node.admission)(make_evidence(*votes))
    assert node.inbox.queued == 3  # queued at once, not dropped
    await nursery.start(node.admission.run)
    with trio.fail_after(5):
        while len(node.mempool) < 4:
            await node.inbox.wait_progress()
    reported = node.mempool.oldest(10)[0]  # the node's own went first
    assert isinstance(reported.body, ReportEvidence)
    assert reported.body.evidence == make_evidence(*votes).encode()


async def test_a_client_is_answered_before_a_peer_backlog_is_all_admitted(chain, nursery):
    """A client's call that arrives while the admission task is busy with a peer backlog
    waits for one chunk of peers' transactions, not for all of them; the peers' are still
    verified in full chunks."""
    node = Node(chain)
    backlog = [reading("d1", seq) for seq in range(1, 4 * CHUNK + 1)]
    await node.push(node.peers[0], backlog)
    real = node.mempool.verifier.verify
    in_first_hop, go_on = trio.Event(), trio.Event()

    async def verify(txs, *, bulk=False):  # holds the first hop until the client has come
        if not node.hops:
            in_first_hop.set()
            await go_on.wait()
        return await real(txs, bulk=bulk)  # counts the hop

    node.mempool.verifier.verify = verify  # type: ignore[method-assign]
    await nursery.start(node.admission.run)
    with trio.fail_after(5):
        await in_first_hop.wait()
    answered: list[tuple[int, int]] = []  # (verification hops, peers' backlog) when replied
    late = reading("d2", 1)

    def reply(results) -> None:  # what submit waits for
        assert results == [late]
        answered.append((len(node.hops), node.inbox.backlog()))

    await node.inbox.put(FromClient([late.raw], False, reply))
    go_on.set()
    with trio.fail_after(5):
        await node.inbox.wait_admitted(node.inbox.mark())
    await wait_all_tasks_blocked()
    # answered in the next chunk, before the peers' of that chunk are counted handled
    assert answered == [(2, 3 * CHUNK)]
    assert node.hops == [CHUNK] * 4 + [1]  # full chunks under load: the client's took a slot
    assert node.mempool.oldest(CHUNK + 1)[CHUNK] == late


async def test_a_step_takes_the_nodes_own_a_chunk_of_clients_then_peers_to_whole_chunks():
    """Neither clients nor peers wait behind more than a chunk of the other's: a step is the
    node's own transactions queued, at most one chunk of the clients', then peers' (one chunk
    at most, at least one transaction) up to a whole number of chunks, a call or a message
    split where the step ends."""
    inbox = Inbox()
    a, b = FromPeer("A", [b"a%d" % i for i in range(5)]), FromPeer("B", [b"b0", b"b1"])
    await inbox.put(a)
    await inbox.put(b)
    client = FromClient([b"c0", b"c1", b"c2"], False, print)
    await inbox.put(client)
    own = FromClient([b"o0"], False, print)
    inbox.put_own(own)

    def taken(step):
        return [raw for _, raw in step]

    assert taken(await inbox.take(6)) == [b"o0", b"c0", b"c1", b"c2", b"a0", b"a1"]
    assert inbox.queued == 5 and inbox.backlog() == 7  # a's rest, and b: taken, not handled
    assert taken(await inbox.take(4)) == [b"a2", b"a3", b"a4", b"b0"]  # a's rest, in order
    await inbox.put(FromClient([b"c3", b"c4", b"c5", b"c6", b"c7"], False, print))
    await inbox.put(FromClient([b"c8"], False, print))
    await inbox.put(FromPeer("A", [b"a5", b"a6", b"a7"]))
    assert taken(await inbox.take(4)) == [b"c3", b"c4", b"c5", b"c6",  # a chunk of each
                                          b"b1", b"a5", b"a6", b"a7"]
    assert taken(await inbox.take(4)) == [b"c7", b"c8"]  # the call's rest, in order
    assert inbox.queued == 0


async def test_a_transaction_is_decoded_once_on_its_way_in(chain, nursery, monkeypatch):
    from iomtnode.admission import mempool as mempool_module
    from iomtnode.admission import service as service_module
    from iomtnode.core import tx as tx_module

    decoded: list[bytes] = []
    real = tx_module.decode_tx

    def counting(raw, *args, **kwargs):
        decoded.append(raw)
        return real(raw, *args, **kwargs)

    for module in (tx_module, service_module, mempool_module):
        monkeypatch.setattr(module, "decode_tx", counting)
    node = Node(chain)
    await nursery.start(node.admission.run)
    from_peer, from_client = reading("d1", 1), reading("d1", 2)
    await node.push(node.peers[0], [from_peer])
    with trio.fail_after(5):
        await node.inbox.wait_admitted(node.inbox.mark())
    await node.admission.submit(from_client.raw, reading_only=True)
    assert node.mempool.oldest(10) == [from_peer, from_client]
    assert decoded == [from_peer.raw, from_client.raw]


async def test_a_client_is_told_why_each_transaction_was_refused(chain, nursery):
    from iomtnode.core import codec

    from ..core.sealkit import admit, sidecar_for

    node = Node(chain)
    await nursery.start(node.admission.run)
    vote = admit(key("A"), pub("d9"), pub("P"), CHAIN_ID)
    ok = reading("d3", 1)
    bare = reading("d3", 2).leaf_bytes  # without its sealed sidecar
    other = reading("d3", 3)
    swapped = codec.encode([other.body_bytes, other.signature, sidecar_for(pub("d3"), 9)])
    results = await node.admission.submit_many(
        [b"\x93junk", vote.raw, ok.raw, bare, swapped], reading_only=True)
    assert [type(r) for r in results] == [
        e.MalformedTxRuleError, e.MalformedTxRuleError, type(ok), e.UnpaddedPayloadError,
        e.CommitmentMismatchError]
    assert "expected a reading" in str(results[1]) and results[2] == ok
    assert "none was sent" in str(results[3]) and "commitment" in str(results[4])
    with pytest.raises(e.DuplicateTxError):
        await node.admission.submit(ok.raw)
    assert node.host.penalties == []


async def test_the_inbox_says_how_far_it_has_admitted_what_peers_pushed(chain, nursery):
    """Consensus asks whether the transactions received until a mark are handled (a
    proposal's may be queued still) and hears of each admission step; a client's
    transactions move no mark."""
    node = Node(chain)
    inbox = node.inbox
    steps: list[int] = []

    async def follow() -> None:
        while True:
            await inbox.wait_progress()
            steps.append(len(node.mempool))

    nursery.start_soon(follow)
    assert inbox.admitted(inbox.mark())  # nothing queued: nothing to wait for
    await node.push(node.peers[0], [reading("d1", 1), reading("d1", 2)])
    mark = inbox.mark()
    assert mark == 2 and not inbox.admitted(mark) and inbox.backlog() == 2
    await nursery.start(node.admission.run)
    with trio.fail_after(5):
        await inbox.wait_admitted(mark)
    await wait_all_tasks_blocked()
    assert inbox.admitted(mark) and steps == [2] and inbox.backlog() == 0
    await node.admission.submit(reading("d1", 3).raw)
    await wait_all_tasks_blocked()
    assert inbox.mark() == 2 and steps == [2, 3]  # a step, but no mark moved


async def test_a_wait_for_the_inbox_ends_when_it_has_admitted_up_to_the_mark(chain, nursery):
    """Block relay waits for the inbox before asking a peer for a block's transactions."""
    node = Node(chain)
    inbox = node.inbox
    with trio.fail_after(5):
        await inbox.wait_admitted(inbox.mark())  # nothing queued: returns at once
    await node.push(node.peers[0], [reading("d1", 1), reading("d1", 2)])
    mark = inbox.mark()
    waited: list[int] = []
    done = trio.Event()

    async def wait() -> None:
        await inbox.wait_admitted(mark)
        waited.append(len(node.mempool))
        done.set()

    nursery.start_soon(wait)
    await wait_all_tasks_blocked()
    assert waited == []  # the admission task has not run
    await nursery.start(node.admission.run)
    with trio.fail_after(5):
        await done.wait()
    assert waited == [2] and inbox.backlog() == 0


def next_block(chain, txs):
    built = chain.build(txs, pub("A"), T0 + 1000 * (chain.height + 1))
    assert not built.rejected
    return built, sign_commit([key("A")], CHAIN_ID, built.block.height, 0, built.block.hash)


async def test_the_writer_commits_without_touching_the_mempool(chain):
    pool = Mempool(chain, now_ms=lambda: T0 + 60_000)
    writer = ChainWriter(chain, BlockFeed(chain.height), pool.verifier)
    tx = pool.add_tx(reading("d1", 1))
    assert await writer.commit(*next_block(chain, [tx]))
    assert chain.height == 2 and len(pool) == 1  # nobody told the pool


async def test_the_mempool_follows_the_commit_feed(chain):
    node = Node(chain)  # admission subscribed its mempool to the feed
    writer = ChainWriter(chain, node.feed, node.mempool.verifier)
    txs = [node.mempool.add_tx(reading("d1", seq)) for seq in (1, 2)]
    assert all(tx in node.mempool.verifier for tx in txs)
    assert await writer.commit(*next_block(chain, txs[:1]))
    assert node.mempool.oldest(10) == txs[1:]
    assert txs[0] not in node.mempool.verifier  # forgotten once committed
    assert node.feed.height == chain.height == 2
