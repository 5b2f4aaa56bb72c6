"""Compact proposals (:mod:`iomtnode.consensus.proposals`, assembled by
:mod:`iomtnode.admission.assembly`): blocks assembled from the
mempool, missing transactions fetched from the peers that sent the proposal (a relayer
that checked the block answers too), a peer answering with other transactions penalised
and replaced, a fetch that never completes given up cleanly, relays skipping peers that
hold the proposal, and the message limits for a 10,000-transaction block.

Drivers over real chains and the in-test bus of :mod:`tests.consensus.harness`, under
trio's autojump clock. The proposer of height 1, round 0 is B.
"""

from __future__ import annotations

import itertools

import trio

from iomtnode.admission.assembly import HOLD_S, PENDING_TIMEOUT_S
from iomtnode.admission.blocktxs import ANSWER_BYTES, answer_txs
from iomtnode.admission.messages import BlockTxs, GetBlockTxs
from iomtnode.consensus.messages import ConsensusProposal, ConsensusVote
from iomtnode.consensus.proposals import compact_proposal
from iomtnode.consensus.relay import RELAY_DELAY_S
from iomtnode.consensus.votes import sign_proposal
from iomtnode.core.block import MAX_IDS_PER_MESSAGE, Block, Commit
from iomtnode.core.crypto import blake2b256
from iomtnode.core.tx import SignedTx
from iomtnode.core.vote import NIL, VoteType, decode_vote, sign_vote
from iomtnode.p2p import score
from iomtnode.p2p.messages import (
    MAX_MESSAGE_BYTES,
    decode_message,
    encode_message,
)

from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import admit
from .harness import Cluster, TNode, assert_one_chain, cluster, wait_heights, wait_until


def admissions(n: int, first: int = 0) -> list[SignedTx]:
    """``n`` device admissions signed by authority A (valid in any order)."""
    txs = []
    for i in range(first, first + n):
        device = key(f"device{i}")
        txs.append(admit(key("A"), device.public, pub(f"stream{i}"), CHAIN_ID))
    return txs


def proposed_by_b(net: Cluster, txs: list[SignedTx]) -> tuple[Block, ConsensusProposal]:
    """B's block of ``txs`` at height 1 and its signed proposal for round 0, compact."""
    block = net["B"].chain.build(txs, pub("B"), net.genesis.time_ms + 1).block
    assert len(block.txs) == len(txs)
    proposal = sign_proposal(key("B"), CHAIN_ID, 1, 0, block.hash)
    return block, compact_proposal(proposal.encode(), block)


def requests(net: Cluster, frm: TNode, to: TNode) -> list[GetBlockTxs]:
    return [m for s, t, m in net.bus.direct
            if (s, t) == (frm.id, to.id) and isinstance(m, GetBlockTxs)]


def answers(net: Cluster, frm: TNode, to: TNode) -> list[BlockTxs]:
    return [m for s, t, m in net.bus.direct
            if (s, t) == (frm.id, to.id) and isinstance(m, BlockTxs)]


def prevote_of(net: Cluster, node: TNode, round_: int) -> bytes | None:
    """The block hash ``node`` prevoted at height 1 in ``round_`` (None: not yet)."""
    for sender, msg in net.bus.sent:
        if sender == node.id and isinstance(msg, ConsensusVote):
            v = decode_vote(msg.vote)
            if (v.validator, v.type, v.height, v.round) == (node.id, VoteType.PREVOTE, 1,
                                                             round_):
                return v.block_hash
    return None


# assembling and fetching --------------------------------------------------------------


async def test_proposals_travel_compact_and_are_assembled_from_the_mempool(
        tmp_path, autojump_clock):
    txs = admissions(5)
    async with cluster(tmp_path, signed_before=True) as net:
        for node in net.nodes.values():
            for tx in txs:
                node.mempool.add(tx.raw)
        await net.start()
        await wait_heights(net.nodes.values(), 3)
        assert_one_chain(net.nodes.values(), net.genesis)
        assert [tx.id for tx in net["A"].chain.block_at(1).txs] == [tx.id for tx in txs]
        assert net.bus.direct == []  # nothing fetched: every mempool held every tx
        proposals = [m for _, m in net.bus.sent if isinstance(m, ConsensusProposal)]
        first = next(m for m in proposals if m.tx_ids)
        assert first.tx_ids == [tx.id for tx in txs]
        assert first.header == net["A"].chain.block_at(1).header_bytes
        assert not any(n.network.penalties for n in net.nodes.values())


async def test_missing_txs_are_fetched_from_the_sender_even_along_a_line(
        tmp_path, autojump_clock):
    """B - C - D, A silent (so every decision needs D): only B, the proposer, has all the
    transactions. C fetches what it lacks from B; D hears of the proposal from C only and
    fetches every transaction from C, which assembled the block after its own fetch."""
    txs = admissions(6)
    async with cluster(tmp_path, signed_before=True) as net:
        b, c, d = (net[n] for n in "BCD")
        net.bus.links = {frozenset((x.id, y.id)) for x, y in itertools.pairwise([b, c, d])}
        for tx in txs:
            b.mempool.add(tx.raw)
        c.mempool.add(txs[0].raw)  # C lacks all but one
        await net.start("BCD")
        await wait_heights([b, c, d], 2)
        assert_one_chain([b, c, d], net.genesis)
        block = d.chain.block_at(1)
        assert [tx.id for tx in block.txs] == [tx.id for tx in txs]
        assert [m.indexes for m in requests(net, c, b)] == [[1, 2, 3, 4, 5]]
        assert [m.indexes for m in requests(net, d, c)] == [[0, 1, 2, 3, 4, 5]]
        from_c = answers(net, c, d)
        assert from_c and from_c[0].txs == [tx.raw for tx in txs]  # the relayer served
        assert not requests(net, d, b)  # not linked: never asked
        assert prevote_of(net, d, 0) == block.hash  # in time for round 0
        assert not any(n.network.penalties for n in (b, c, d))
        assert all(n.driver is not None and n.driver.stats().pending_blocks == 0 for n in (c, d))


async def test_a_peer_answering_other_txs_is_penalised_and_another_relayer_serves(
        tmp_path, autojump_clock):
    """A runs alone. B's proposal comes from C, then a copy from D; A asks C, C answers
    with other transactions: C is penalised and D is asked, whose answer completes it."""
    txs = admissions(3)
    async with cluster(tmp_path, signed_before=True) as net:
        a, c, d = net["A"], net["C"], net["D"]
        await net.start("A")
        assert a.driver is not None
        block, msg = proposed_by_b(net, txs)
        a.driver.on_message(c.id, msg)
        a.driver.on_message(d.id, msg)
        await wait_until(lambda: bool(requests(net, a, c)))
        asked = requests(net, a, c)[0]
        assert asked.block_hash == block.hash and asked.indexes == [0, 1, 2]
        assert not requests(net, a, d)  # one source at a time
        others = admissions(3, first=10)
        a.driver.on_message(c.id, BlockTxs(block.hash, [0, 1, 2], [t.raw for t in others]))
        await wait_until(lambda: bool(requests(net, a, d)))
        assert [(p, pts) for p, pts, _ in a.network.penalties] == [(c.id, score.INVALID_MESSAGE)]
        assert "not the one asked for" in a.network.penalties[0][2]
        assert requests(net, a, d)[0].indexes == [0, 1, 2]
        a.driver.on_message(d.id, BlockTxs(block.hash, [0, 1, 2], [t.raw for t in txs]))
        await wait_until(lambda: prevote_of(net, a, 0) is not None)
        assert prevote_of(net, a, 0) == block.hash  # the proposal completed, valid
        assert a.driver.stats().pending_blocks == 0
        assert len(a.network.penalties) == 1  # D's answer was fine


async def test_a_fetch_that_never_completes_times_out_cleanly(tmp_path, autojump_clock):
    """The only source answers with a wrong transaction (penalised), then nothing: A
    prevotes nil when its propose timeout fires, gives the block up after
    PENDING_TIMEOUT_S, and a copy sent again later is fetched anew."""
    txs = admissions(2)
    async with cluster(tmp_path, signed_before=True) as net:
        a, c = net["A"], net["C"]
        await net.start("A")
        assert a.driver is not None
        block, msg = proposed_by_b(net, txs)
        a.driver.on_message(c.id, msg)
        await wait_until(lambda: bool(requests(net, a, c)))
        wrong = admissions(1, first=20)[0]
        a.driver.on_message(c.id, BlockTxs(block.hash, [1], [wrong.raw]))
        await wait_until(lambda: bool(a.network.penalties))
        assert a.network.penalties[0][:2] == (c.id, score.INVALID_MESSAGE)
        await wait_until(lambda: prevote_of(net, a, 0) is not None)
        assert prevote_of(net, a, 0) == NIL  # the round's timeout: no proposal at hand
        assert a.driver.stats().pending_blocks == 1
        await wait_until(lambda: a.driver is not None and a.driver.stats().pending_blocks == 0,
                         timeout=PENDING_TIMEOUT_S + 1)
        a.driver.on_message(c.id, msg)  # resent: checked anew
        await wait_until(lambda: len(requests(net, a, c)) == 2)
        a.driver.on_message(c.id, BlockTxs(block.hash, [0, 1], [t.raw for t in txs]))
        await wait_until(lambda: a.driver is not None and a.driver.stats().pending_blocks == 0)
        assert len(a.network.penalties) == 1


class QueuedTxs:
    """A gossip inbox (Progress) that the test moves along by hand."""

    def __init__(self, received: int) -> None:
        self.received = received
        self.handled = 0
        self._progressed = trio.Event()

    def progress(self, handled: int) -> None:
        self.handled = handled
        self._progressed.set()
        self._progressed = trio.Event()

    async def wait_progress(self) -> None:
        await self._progressed.wait()

    def mark(self) -> int:
        return self.received

    def admitted(self, mark: int) -> bool:
        return self.handled >= mark


async def held_proposal(net: Cluster, a: TNode, c: TNode, txs: list[SignedTx],
                        inbox: QueuedTxs) -> Block:
    """Start A with ``inbox``, give it B's proposal of ``txs`` from C, and wait until the
    block waits for transactions; returns the block."""
    await a.start(net.nursery, inbox=inbox)
    assert a.driver is not None
    block, msg = proposed_by_b(net, txs)
    a.driver.on_message(c.id, msg)
    await wait_until(lambda: a.driver is not None and a.driver.stats().pending_blocks == 1,
                     every=0.01)
    return block


async def test_txs_still_queued_for_admission_are_waited_for_not_fetched(
        tmp_path, autojump_clock):
    """A loaded node gets B's proposal while the transactions it names are queued in its
    gossip inbox: it waits for the inbox (woken by its progress, before HOLD_S), takes
    them from the mempool and asks nobody for them."""
    txs = admissions(3)
    inbox = QueuedTxs(received=3)
    async with cluster(tmp_path, signed_before=True) as net:
        a, c = net["A"], net["C"]
        block = await held_proposal(net, a, c, txs, inbox)
        assert a.driver is not None
        started = trio.current_time()
        for tx in txs:  # the inbox admits them...
            a.mempool.add(tx.raw)
        inbox.progress(3)  # ... and says so: the driver follows it
        await wait_until(lambda: prevote_of(net, a, 0) is not None, every=0.01)
        assert prevote_of(net, a, 0) == block.hash
        assert trio.current_time() - started < HOLD_S
        assert requests(net, a, c) == [] and a.driver.stats().pending_blocks == 0


async def test_an_inbox_that_does_not_catch_up_in_time_leaves_the_rest_to_a_fetch(
        tmp_path, autojump_clock):
    """The inbox stays behind: after HOLD_S the node takes what its mempool got meanwhile
    and asks the sender only for the rest."""
    txs = admissions(3)
    inbox = QueuedTxs(received=3)
    async with cluster(tmp_path, signed_before=True) as net:
        a, c = net["A"], net["C"]
        block = await held_proposal(net, a, c, txs, inbox)
        assert a.driver is not None
        started = trio.current_time()
        a.mempool.add(txs[0].raw)  # admitted meanwhile
        await wait_until(lambda: bool(requests(net, a, c)), every=0.01)
        assert trio.current_time() - started >= HOLD_S - 0.02
        assert [m.indexes for m in requests(net, a, c)] == [[1, 2]]
        a.driver.on_message(c.id, BlockTxs(block.hash, [1, 2], [t.raw for t in txs[1:]]))
        await wait_until(lambda: prevote_of(net, a, 0) is not None, every=0.01)
        assert prevote_of(net, a, 0) == block.hash


async def test_a_node_answers_only_for_blocks_it_holds(tmp_path, autojump_clock):
    async with cluster(tmp_path, signed_before=True) as net:
        a, c = net["A"], net["C"]
        await net.start("A")
        assert a.driver is not None
        unknown = blake2b256(b"no such block")
        net.bus.send(c.id, a.id, GetBlockTxs(unknown, [0, 1]))
        assert answers(net, a, c) == [BlockTxs(unknown, [], [])]  # "not held", at once


# relaying -----------------------------------------------------------------------------


async def test_a_valid_proposal_is_relayed_once_and_not_to_peers_that_hold_it(
        tmp_path, autojump_clock):
    """From its proposer B, A relays after RELAY_DELAY_S, skipping B and D (whose prevote
    for the block came meanwhile); a copy from C later is not relayed again."""
    txs = admissions(2)
    async with cluster(tmp_path, signed_before=True) as net:
        a = net["A"]
        for tx in txs:
            a.mempool.add(tx.raw)
        await net.start("A")
        assert a.driver is not None
        block, msg = proposed_by_b(net, txs)
        a.driver.on_message(pub("B"), msg)
        prevote = sign_vote(key("D"), CHAIN_ID, VoteType.PREVOTE, 1, 0, block.hash)
        a.driver.on_message(pub("D"), ConsensusVote(prevote.encode()))
        await wait_until(lambda: prevote_of(net, a, 0) is not None, every=RELAY_DELAY_S / 5)
        assert not [m for s, m in net.bus.sent if s == a.id and m == msg]  # not yet
        await wait_until(lambda: any(s == a.id and m == msg for s, m in net.bus.sent))
        a.driver.on_message(pub("C"), msg)  # a copy: its sender holds it, nothing sent
        relays = [(m, skip) for s, m, skip in net.bus.skipped if s == a.id and m == msg]
        assert len(relays) == 1 and relays[0][1] == {pub("B"), pub("D")}
        assert prevote_of(net, a, 0) == block.hash


async def test_in_a_full_mesh_no_proposal_goes_back_to_a_peer_that_sent_it(
        tmp_path, autojump_clock):
    """Every node hears each proposal from its proposer first; by the time its relay is
    due, the others' prevotes (or copies) say they hold it: no node is sent a proposal by a
    peer it sent that proposal to, nor twice by one peer."""
    txs = admissions(4)
    async with cluster(tmp_path, signed_before=True) as net:
        for node in net.nodes.values():
            for tx in txs:
                node.mempool.add(tx.raw)
        await net.start()
        await wait_heights(net.nodes.values(), 5)
        sent: set[tuple[bytes, bytes, bytes]] = set()
        for sender, receiver, msg in net.bus.delivered:
            if not isinstance(msg, ConsensusProposal):
                continue
            at = (sender, receiver, msg.proposal)
            assert at not in sent, "sent twice"
            assert (receiver, sender, msg.proposal) not in sent, "sent back"
            sent.add(at)
        assert len(sent) >= 5 * 3  # each height's proposal reached the 3 others


# limits -------------------------------------------------------------------------------


def test_a_10000_tx_block_fits_the_message_limits():
    tx = admissions(1)[0]
    ids = [blake2b256(i.to_bytes(4, "big")) for i in range(10_000)]
    authorities = sorted(key(f"auth{i}").public for i in range(128))
    last = Commit(0, 0, blake2b256(b"parent"), tuple((k, bytes(64)) for k in authorities))
    header = bytes(1024)  # the largest header a message may carry
    msg = ConsensusProposal(bytes(180), header, ids, last.encode())
    frame = encode_message(msg)
    assert len(frame) < MAX_MESSAGE_BYTES / 8 and decode_message(frame) == msg
    assert MAX_IDS_PER_MESSAGE >= 10_000
    request = GetBlockTxs(blake2b256(b"b"), list(range(10_000)))
    assert decode_message(encode_message(request)) == request
    # a 10,000-tx block of ~3 MiB: its transactions come back split, each answer in one frame
    big = Block(None, b"h", (tx,) * 10_000, None)  # type: ignore[arg-type]
    assert len(tx.raw) * 10_000 > ANSWER_BYTES
    sent = answer_txs(big.hash, [t.raw for t in big.txs], list(range(10_000)))
    assert len(sent) >= 2
    assert [i for m in sent for i in m.indexes] == list(range(10_000))
    for m in sent:
        assert len(encode_message(m)) <= MAX_MESSAGE_BYTES and len(m.txs) == len(m.indexes)
        assert decode_message(encode_message(m)) == m
