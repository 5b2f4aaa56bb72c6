"""A compact block's transactions, asked by index: one request/response pair for proposals
and relayed blocks. Requests are answered from whatever holds the block (consensus's held
blocks first, then the chain's committed blocks, served as stored); answers go to the
assembler that asked that peer; the assembler fills from the mempool and fetches the rest."""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass, field

import pytest

from iomtnode.admission.assembly import Assembler
from iomtnode.admission.blocktxs import (
    ASK_BYTES_PER_PEER,
    ASKS_PER_PEER,
    Asks,
    BadRequestError,
    BlockTxsReactor,
    chain_txs,
    serve,
)
from iomtnode.admission.messages import BlockTxs, GetBlockTxs
from iomtnode.admission.verify import Verifier
from iomtnode.core.block import MAX_IDS_PER_MESSAGE
from iomtnode.core.crypto import blake2b256
from iomtnode.p2p import score
from iomtnode.sync.blockrelay import compact

from ..core.helpers import pub
from .chainkit import source_chain


@dataclass
class Peer:
    node_id: bytes
    sent: list = field(default_factory=list)

    def send(self, msg) -> bool:
        self.sent.append(msg)
        return True


@dataclass
class Router:
    peer_list: list[Peer]
    penalties: list = field(default_factory=list)

    def get(self, node_id: bytes) -> Peer | None:
        return next((p for p in self.peer_list if p.node_id == node_id), None)

    def penalize(self, peer: Peer, points: int, reason: str) -> bool:
        self.penalties.append((peer.node_id, points, reason))
        return False

    def penalize_id(self, node_id: bytes, points: int, reason: str) -> None:
        self.penalties.append((node_id, points, reason))


@dataclass
class Taker:
    got: list = field(default_factory=list)

    async def receive(self, peer, msg) -> None:
        self.got.append((peer.node_id, msg))


def test_a_committed_blocks_transactions_are_served_as_stored_by_index(tmp_path):
    chain, made = source_chain(tmp_path / "data", 1, 5)
    block, _ = made[-1]
    lookups = (lambda block_hash: None, chain_txs(chain))
    assert serve(lookups, GetBlockTxs(block.hash, [0, 4])) == [
        BlockTxs(block.hash, [0, 4], [block.txs[0].raw, block.txs[4].raw])]
    unknown = blake2b256(b"no such block")
    assert serve(lookups, GetBlockTxs(unknown, [0])) == [BlockTxs(unknown, [], [])]


@pytest.mark.parametrize(("indexes", "reason"), [
    ([0] * 10_000, "not strictly increasing"),  # one transaction asked 10,000 times
    ([0, 1, 1, 2], "not strictly increasing"),  # a duplicate
    ([3, 0], "not strictly increasing"),  # out of order
    ([0, 5], "index 5 past the block's 5 transactions"),  # the block has 0..4
])
def test_a_request_with_repeated_disordered_or_missing_indexes_is_refused(
        tmp_path, indexes, reason):
    chain, made = source_chain(tmp_path / "data", 1, 5)
    block, _ = made[-1]
    with pytest.raises(BadRequestError, match=reason):
        serve((chain_txs(chain),), GetBlockTxs(block.hash, indexes))


async def test_a_refused_request_is_not_answered_and_costs_its_sender(tmp_path):
    chain, made = source_chain(tmp_path / "data", 1, 5)
    block, _ = made[-1]
    b = Peer(pub("B"))
    router = Router([b])
    reactor = BlockTxsReactor((chain_txs(chain),), Asks(router), {}, router.penalize)
    await reactor.receive(b, GetBlockTxs(block.hash, [0] * 10_000))
    assert b.sent == []
    assert [(points, reason.split(":")[0]) for _, points, reason in router.penalties] == [
        (score.INVALID_MESSAGE, "block_txs_request_refused")]
    await reactor.receive(b, GetBlockTxs(block.hash, [0, 1]))  # a good one is answered
    assert b.sent == [BlockTxs(block.hash, [0, 1], [block.txs[0].raw, block.txs[1].raw])]


def test_a_block_consensus_holds_is_served_before_the_chain_is_read(tmp_path):
    held = {b"p" * 32: [b"proposed tx"]}

    def chain_is_not_read(block_hash: bytes) -> None:
        raise AssertionError("the chain was read for a held block")

    assert serve((held.get, chain_is_not_read), GetBlockTxs(b"p" * 32, [0])) == [
        BlockTxs(b"p" * 32, [0], [b"proposed tx"])]


async def test_an_answer_goes_to_the_one_that_asked_and_a_request_is_answered(tmp_path):
    b, c, d = Peer(pub("B")), Peer(pub("C")), Peer(pub("D"))
    router = Router([b, c, d])
    asks = Asks(router)
    consensus, sync = Taker(), Taker()
    reactor = BlockTxsReactor((), asks, {"consensus": consensus, "sync": sync}, router.penalize)
    assert asks.sender("consensus")(pub("B"), GetBlockTxs(b"x" * 32, [0]))
    assert asks.sender("sync")(pub("C"), GetBlockTxs(b"y" * 32, [0]))
    assert not asks.sender("sync")(pub("E"), GetBlockTxs(b"y" * 32, [0]))  # not connected
    await reactor.receive(c, BlockTxs(b"y" * 32, [0], [b"t"]))
    await reactor.receive(b, BlockTxs(b"x" * 32, [0], [b"t"]))
    await reactor.receive(d, BlockTxs(b"x" * 32, [0], [b"t"]))  # not asked of D: dropped
    await reactor.receive(b, BlockTxs(b"y" * 32, [0], [b"t"]))  # asked of C, not B
    await reactor.receive(b, BlockTxs(b"x" * 32, [0], [b"t"]))  # answered already: late
    assert consensus.got == [(pub("B"), BlockTxs(b"x" * 32, [0], [b"t"]))]
    assert sync.got == [(pub("C"), BlockTxs(b"y" * 32, [0], [b"t"]))]
    assert router.penalties == []
    await reactor.receive(d, GetBlockTxs(b"z" * 32, [1]))
    assert d.sent == [BlockTxs(b"z" * 32, [], [])]  # held nowhere: said at once


class Queued:
    """A taker that queues answers for a task of its own, as consensus does (its driver
    takes them later), or (``queued=False``) takes them at once, as the relay does."""

    def __init__(self, assembler: Assembler, queued: bool) -> None:
        self.assembler, self.queued = assembler, queued
        self.queue: list = []
        self.whole: list = []

    async def receive(self, peer, msg) -> None:
        self.queue.append((peer.node_id, msg))
        if not self.queued:
            self.take()

    def take(self) -> None:
        for peer_id, msg in self.queue:
            if (done := self.assembler.on_txs(peer_id, msg)) is not None:
                self.whole.append(done[0].hash)
        self.queue.clear()


@pytest.mark.parametrize("first", ["consensus", "sync"])
async def test_two_takers_fetching_one_block_of_one_peer_each_get_their_answer(
        tmp_path, first):
    """A follower that gets a proposal and then the committed compact block of that height
    from the same peer fetches the block's transactions twice from it, other indexes each
    time (the mempool changed in between); each answer goes to the one that asked, before
    consensus's driver has taken its own, and the honest peer is not charged."""
    chain, made = source_chain(tmp_path / "data", 1, 5)
    block, commit = made[-1]
    b = Peer(pub("B"))
    router = Router([b])
    asks = Asks(router)
    pools = {"consensus": {tx.id: tx for tx in block.txs[:2]},  # asks for 2, 3, 4
             "sync": {tx.id: tx for tx in block.txs[:1]}}  # asks for 1, 2, 3, 4
    takers = {}
    for name in ("consensus", "sync"):
        assembler: Assembler[Waiting] = Assembler(
            pools[name].get, asks.sender(name), router.penalize_id,
            lambda waiting: None, verify=Verifier(chain.chain_id).verify_now, what=name)
        takers[name] = Queued(assembler, queued=name == "consensus")
    reactor = BlockTxsReactor((chain_txs(chain),), asks, takers, router.penalize)
    msg = compact(block, commit)
    second = "sync" if first == "consensus" else "consensus"
    for name in (first, second):
        waiting = Waiting(pub("B"), msg, name.encode(), block.height)
        assert takers[name].assembler.fill(block.hash, waiting, block.last_commit) is None
    requests = list(b.sent)
    assert [r.indexes for r in requests] == (
        [[2, 3, 4], [1, 2, 3, 4]] if first == "consensus" else [[1, 2, 3, 4], [2, 3, 4]])
    for request in requests:  # B answers each request, in order
        for answer in serve((chain_txs(chain),), request):
            await reactor.receive(b, answer)
    takers["consensus"].take()  # the driver task gets to its queue
    assert router.penalties == []
    assert takers["consensus"].whole == [block.hash]
    assert takers["sync"].whole == [block.hash]


async def test_an_answer_with_an_index_nobody_asked_costs_the_peer(tmp_path):
    b = Peer(pub("B"))
    router = Router([b])
    asks = Asks(router)
    consensus, sync = Taker(), Taker()
    reactor = BlockTxsReactor((), asks, {"consensus": consensus, "sync": sync}, router.penalize)
    asks.sender("consensus")(pub("B"), GetBlockTxs(b"x" * 32, [1, 2]))
    asks.sender("sync")(pub("B"), GetBlockTxs(b"x" * 32, [2, 3]))
    await reactor.receive(b, BlockTxs(b"x" * 32, [1, 4], [b"t", b"u"]))
    assert router.penalties == [(pub("B"), score.INVALID_MESSAGE,
                                 "block txs: index 4 was not asked for")]
    # both are told B does not serve the block, so they ask their next source at once
    assert consensus.got == sync.got == [(pub("B"), BlockTxs(b"x" * 32, [], []))]
    await reactor.receive(b, BlockTxs(b"x" * 32, [2], [b"t"]))  # those requests are gone
    assert len(consensus.got) == len(sync.got) == 1 and len(router.penalties) == 1


async def test_a_peers_requests_are_forgotten_when_it_leaves_and_bounded_meanwhile():
    b = Peer(pub("B"))
    router = Router([b])
    asks = Asks(router)
    sync = Taker()
    reactor = BlockTxsReactor((), asks, {"sync": sync}, router.penalize)
    for n in range(ASKS_PER_PEER + 1):  # the first is forgotten: too many unanswered
        asks.sender("sync")(pub("B"), GetBlockTxs(bytes([n]) * 32, [0]))
    await reactor.receive(b, BlockTxs(bytes([0]) * 32, [0], [b"t"]))
    await reactor.receive(b, BlockTxs(bytes([1]) * 32, [0], [b"t"]))
    assert sync.got == [(pub("B"), BlockTxs(bytes([1]) * 32, [0], [b"t"]))]
    reactor.disconnected(b)
    await reactor.receive(b, BlockTxs(bytes([2]) * 32, [0], [b"t"]))
    assert len(sync.got) == 1 and router.penalties == []


@dataclass(frozen=True)
class Waiting:
    peer_id: bytes
    msg: object
    key: bytes
    height: int


async def test_the_assembler_fills_from_the_mempool_and_asks_sources_in_turn(tmp_path):
    """The assembler both proposals and relayed blocks use: what the mempool holds is not
    asked for; a source answering "not held" is replaced by the next; a wrong transaction
    costs its sender; the block is given with its waiters once whole."""
    chain, made = source_chain(tmp_path / "data", 1, 4)
    block, commit = made[-1]
    mempool = {block.txs[0].id: block.txs[0]}  # the mempool holds the first
    sent: list[tuple[bytes, GetBlockTxs]] = []
    penalties: list[tuple[bytes, int, str]] = []
    dropped: list[Waiting] = []
    assembler: Assembler[Waiting] = Assembler(
        mempool.get, lambda peer_id, msg: sent.append((peer_id, msg)) or True,
        lambda peer_id, points, reason: penalties.append((peer_id, points, reason)),
        dropped.append, verify=Verifier(chain.chain_id).verify_now, what="block")
    msg = compact(block, commit)
    first = Waiting(pub("B"), msg, b"k1", block.height)
    assert assembler.fill(block.hash, first, block.last_commit) is None
    assert sent == [(pub("B"), GetBlockTxs(block.hash, [1, 2, 3]))]
    assembler.fill(block.hash, Waiting(pub("C"), msg, b"k2", block.height), block.last_commit)
    assert assembler.on_txs(pub("B"), BlockTxs(block.hash, [], [])) is None  # not held by B
    assert sent[-1] == (pub("C"), GetBlockTxs(block.hash, [1, 2, 3]))
    wrong = [block.txs[2].raw]
    assert assembler.on_txs(pub("C"), BlockTxs(block.hash, [1], wrong)) is None
    assert penalties == [(pub("C"), score.INVALID_MESSAGE,
                          "block txs: the transaction at 1 is not the one asked for")]
    assert not assembler.expects(pub("C"), block.hash)  # no source left: nobody asked
    assembler.add_source(b"k1", pub("D"), msg)  # a copy from D: asked at once
    assert sent[-1] == (pub("D"), GetBlockTxs(block.hash, [1, 2, 3]))
    whole = assembler.on_txs(pub("D"), BlockTxs(block.hash, [1, 2, 3],
                                                [tx.raw for tx in block.txs[1:]]))
    assert whole is not None
    assembled, waiting = whole
    assert assembled.hash == block.hash and [w.key for w in waiting] == [b"k1", b"k2"]
    assert dropped == [] and len(assembler) == 0 and len(penalties) == 1


@dataclass
class Forgetful(Peer):
    """A peer that keeps nothing it is sent."""

    def send(self, msg) -> bool:
        return True


def test_the_requests_remembered_per_peer_are_bounded_in_bytes():
    """A peer can make this node ask it for 10,000 transactions again and again (compact
    blocks of unknown ids): what is remembered of its requests stays within
    ASK_BYTES_PER_PEER, about, however many come."""
    b = Forgetful(pub("B"))
    asks = Asks(Router([b]))
    send = asks.sender("sync")
    send(pub("B"), GetBlockTxs(b"w" * 32, [0]))  # the dict entries exist before measuring
    indexes = list(range(MAX_IDS_PER_MESSAGE))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(ASKS_PER_PEER + 8):
            send(pub("B"), GetBlockTxs(n.to_bytes(32, "big"), indexes))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= ASK_BYTES_PER_PEER + ASKS_PER_PEER * 512  # bitmaps, and each request's own


async def test_an_answer_to_a_forgotten_request_costs_the_peer_nothing():
    """Consensus then sync ask B for block x; so many other requests follow that
    consensus's is forgotten. B answers both in order: what sync waits for goes to sync,
    the rest is dropped without a charge; an index of another block is still charged."""
    b = Peer(pub("B"))
    router = Router([b])
    asks = Asks(router)
    consensus, sync = Taker(), Taker()
    reactor = BlockTxsReactor((), asks, {"consensus": consensus, "sync": sync}, router.penalize)
    x = b"x" * 32
    asks.sender("consensus")(pub("B"), GetBlockTxs(x, [2, 3, 4]))
    asks.sender("sync")(pub("B"), GetBlockTxs(x, [1, 2, 3, 4]))
    for n in range(ASKS_PER_PEER - 1):  # other blocks' requests, still unanswered
        asks.sender("sync")(pub("B"), GetBlockTxs(bytes([n]) * 32, [0]))
    await reactor.receive(b, BlockTxs(x, [2, 3, 4], [b"t2", b"t3", b"t4"]))
    await reactor.receive(b, BlockTxs(x, [1, 2, 3, 4], [b"t1", b"t2", b"t3", b"t4"]))
    assert router.penalties == [] and consensus.got == []
    assert sync.got == [(pub("B"), BlockTxs(x, [2, 3, 4], [b"t2", b"t3", b"t4"])),
                        (pub("B"), BlockTxs(x, [1], [b"t1"]))]
    await reactor.receive(b, BlockTxs(bytes([0]) * 32, [5], [b"t5"]))  # not asked, not forgotten
    assert [points for _, points, _ in router.penalties] == [score.INVALID_MESSAGE]


async def test_a_request_of_scattered_indexes_waits_for_those_only():
    b = Peer(pub("B"))
    router = Router([b])
    asks = Asks(router)
    sync = Taker()
    reactor = BlockTxsReactor((), asks, {"sync": sync}, router.penalize)
    x = b"x" * 32
    asks.sender("sync")(pub("B"), GetBlockTxs(x, [9, 1, 5]))
    await reactor.receive(b, BlockTxs(x, [5], [b"t5"]))
    await reactor.receive(b, BlockTxs(x, [1, 9], [b"t1", b"t9"]))
    assert [msg.indexes for _, msg in sync.got] == [[5], [1, 9]] and router.penalties == []
    asks.sender("sync")(pub("B"), GetBlockTxs(x, [1, 5]))
    await reactor.receive(b, BlockTxs(x, [3], [b"t3"]))  # inside the span, not asked
    assert [points for _, points, _ in router.penalties] == [score.INVALID_MESSAGE]
