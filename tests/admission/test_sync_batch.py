"""A syncing node commits ranges of blocks in one synced batch: every block still checked in
full against its predecessors, nothing visible before the batch is durable, and an invalid
block stops the range after the valid blocks before it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from iomtnode.admission.mempool import Mempool
from iomtnode.chain.chain import InvalidBlockError
from iomtnode.chain.feed import BlockFeed, each_block
from iomtnode.chain.writer import ChainWriter
from iomtnode.core import codec
from iomtnode.p2p import score
from iomtnode.store import BlockStore, StagedStore
from iomtnode.sync.blocksync import BlockSync
from iomtnode.sync.messages import Blocks, GetBlocks

from .chainkit import FIRST_BLOCK_TXS as FIRST
from .chainkit import GENESIS, forged, new_chain, reading, seal_unchecked, source_chain


class CountingStore(BlockStore):
    batches: list[int]

    def commit_blocks(self, records) -> None:
        self.batches.append(len(records))
        super().commit_blocks(records)


def follower(path):
    from iomtnode.chain.chain import Chain

    store = CountingStore.open(path)
    store.batches = []
    chain = Chain(store, GENESIS)
    store.batches.clear()  # the genesis block
    mempool = Mempool(chain, now_ms=lambda: GENESIS.time_ms + 10_000)
    feed = BlockFeed(chain.height)
    writer = ChainWriter(chain, feed, mempool.verifier)
    feed.listen(mempool.committed)
    heard: list[int] = []
    feed.listen(each_block(lambda block, commit, source: heard.append(block.height)))
    return chain, writer, heard, mempool


async def test_a_range_is_checked_block_by_block_and_written_once(tmp_path):
    source, blocks = source_chain(tmp_path / "source", 6, 40)
    chain, writer, heard, mempool = follower(tmp_path / "follower")
    verifier = mempool.verifier
    done = await writer.apply_many(blocks, b"\x01" * 32, lambda tx: False)
    assert done == len(blocks) == 7
    assert chain.store.batches == [7]  # one synced write for the whole range
    assert heard == list(range(1, 8))  # listeners and subscribers still hear of each
    assert chain.height == source.height and chain.head.hash == source.head.hash
    assert chain.committed_txs == source.committed_txs == FIRST + 6 * 40
    assert verifier.verified_count == FIRST + 6 * 40  # every signature, once
    for height in range(1, 8):
        assert chain.store.block_bytes(height) == source.store.block_bytes(height)
    assert await writer.apply_many(blocks[:2], b"\x01" * 32, lambda tx: False) == 0  # stale


async def test_an_invalid_block_stops_the_range_after_the_valid_ones(tmp_path):
    source, blocks = source_chain(tmp_path / "source", 3, 10)
    bad = seal_unchecked(source, (forged(reading("d1", 99)),))
    chain, writer, heard, _mempool = follower(tmp_path / "follower")
    with pytest.raises(InvalidBlockError, match="signature"):
        await writer.apply_many([*blocks, bad], b"\x01" * 32, lambda tx: False)
    assert chain.height == 4 and heard == [1, 2, 3, 4] and chain.store.batches == [4]
    assert chain.store.head() == (4, source.head.hash)


async def test_a_rule_breaker_later_in_the_range_sees_the_state_of_earlier_blocks(tmp_path):
    source, blocks = source_chain(tmp_path / "source", 1, 3)  # d1..d3 at seq 1
    replay = seal_unchecked(source, (reading("d1", 1),))  # seq 1 again: stale after block 2
    chain, writer, _, _mempool = follower(tmp_path / "follower")
    with pytest.raises(InvalidBlockError, match="sequence"):
        await writer.apply_many([*blocks, replay], b"\x01" * 32, lambda tx: False)
    assert chain.height == 2


def test_staged_blocks_are_invisible_until_flushed_and_then_whole(tmp_path):
    source, blocks = source_chain(tmp_path / "source", 2, 5)
    chain = new_chain(tmp_path / "follower")
    staged = chain.staged()
    for block, commit in blocks:
        staged.commit(staged.check(block, commit), commit)
    assert isinstance(staged.store, StagedStore) and staged.store.staged == 3
    assert staged.height == 3 and chain.height == 0
    assert chain.store.head()[0] == 0 and chain.store.block_bytes(1) is None
    assert staged.store.block_bytes(2) == source.store.block_bytes(2)
    assert staged.store.tx_location(blocks[2][0].txs[0].id) == (3, 0)
    assert dict(staged.store.iter_state(b"q")) == dict(source.store.iter_state(b"q"))
    with pytest.raises(AssertionError):
        chain.adopt(staged)  # not flushed yet
    assert staged.store.flush() == 3
    chain.adopt(staged)
    assert chain.height == 3 and chain.store.head() == source.store.head()
    assert dict(chain.store.iter_state(b"")) == dict(source.store.iter_state(b""))
    chain.store.close()
    source.store.close()


@dataclass
class ServingPeer:
    """Answers GetBlocks at once from ``items`` (height -> [block, certificate])."""

    node_id: bytes
    items: dict
    sync: object = None

    def send(self, msg) -> bool:
        if isinstance(msg, GetBlocks):
            self.sync.on_blocks(self, Blocks(msg.start, [
                self.items[h] for h in range(msg.start, msg.start + msg.count) if h in self.items]))
        return True


@dataclass
class Hosts:
    peers: dict
    penalties: list = field(default_factory=list)

    def get(self, node_id):
        return self.peers.get(node_id)

    def penalize(self, peer, points, reason):
        self.penalties.append((points, reason))


@pytest.mark.parametrize("damage, reason", [
    ("swap", "block 5: transactions do not match tx_root"),
    ("junk", "block 5: transaction"),
    ("forge", "block 8: tx .* bad reading signature"),
])
async def test_a_served_range_stops_at_a_bad_block_and_costs_its_server(
        tmp_path, damage, reason):
    source, blocks = source_chain(tmp_path / "source", 6, 40)
    items = {b.height: [b.encode(), c.encode()] for b, c in blocks}
    good = 7
    if damage == "forge":  # a well-formed block 8 holding a transaction with a bad signature
        bad, commit = seal_unchecked(source, (forged(reading("d1", 99)),))
        items[8] = [bad.encode(), commit.encode()]
    else:  # block 5 with one transaction replaced: it no longer decodes or matches
        block5 = blocks[4][0]
        raws = [tx.raw for tx in block5.txs]
        raws[7] = reading("d1", 999).raw if damage == "swap" else b"\x93junk"
        last = block5.last_commit.encode() if block5.last_commit else b""
        items[5] = [codec.encode([block5.header_bytes, raws, last]), items[5][1]]
        good = 4
    chain, writer, heard, mempool = follower(tmp_path / "follower")
    peer = ServingPeer(b"\x07" * 32, items)
    host = Hosts({peer.node_id: peer})
    sync = BlockSync(host, chain, writer, BlockFeed(chain.height), mempool.verified)
    peer.sync = sync
    sync.saw_height(peer.node_id, max(items))
    await sync._catch_up()
    assert chain.height == good and heard == list(range(1, good + 1))
    [(points, why)] = host.penalties
    assert points == score.INVALID_BLOCK and re.search(reason, why), why
    # every signature of the transactions that decoded was checked once, by the sync's
    # verifier while the range was decoded (a bad one failed there and again, by the
    # node's, before its block's check, which names it; the swapped block's were checked
    # before its Merkle root was)
    assert sync.signatures.verified_count == {
        "swap": FIRST + 4 * 40, "junk": FIRST + 3 * 40,
        "forge": FIRST + 6 * 40 + 1}[damage]
    assert mempool.verifier.verified_count == (1 if damage == "forge" else 0)


async def test_committed_transactions_leave_the_verifier_record(tmp_path):
    _, blocks = source_chain(tmp_path / "source", 2, 10)
    chain, writer, _, mempool = follower(tmp_path / "follower")
    verifier = mempool.verifier
    await writer.apply_many(blocks[:2], b"\x01" * 32, lambda tx: False)
    pending = blocks[2][0].txs
    await verifier.verify(pending)  # verified, not committed yet
    assert all(tx in verifier for tx in pending)
    assert not any(tx in verifier for b, _ in blocks[:2] for tx in b.txs)  # committed: gone
    await writer.apply_many(blocks[2:], b"\x01" * 32, verifier.__contains__)
    assert chain.height == 3 and not any(tx in verifier for tx in pending)


@dataclass
class CappedPeer(ServingPeer):
    """Serves at most ``cap`` blocks per answer (as a peer whose answer hit the size
    budget) and records what it was asked."""

    cap: int = 1_000
    asked: list = field(default_factory=list)

    def send(self, msg) -> bool:
        if isinstance(msg, GetBlocks):
            self.asked.append((msg.start, msg.count))
            msg = GetBlocks(msg.start, min(msg.count, self.cap))
        return super().send(msg)


async def test_a_range_served_short_is_filled_in_so_the_ranges_after_it_still_apply(
        tmp_path, monkeypatch):
    from iomtnode.sync import planner

    monkeypatch.setattr(planner, "RANGE_BLOCKS", 4)
    _, blocks = source_chain(tmp_path / "source", 11, 3)  # heights 1..12
    items = {b.height: [b.encode(), c.encode()] for b, c in blocks}
    chain, writer, heard, mempool = follower(tmp_path / "follower")
    peers = {bytes([i]) * 32: CappedPeer(bytes([i]) * 32, items, cap=cap)
             for i, cap in ((1, 3), (2, 100), (3, 100))}  # 1 is asked for 1..4 (peers
    # alike are ranked by id), 2 for 5..8: it still applies once 4 is filled in
    host = Hosts(peers)
    sync = BlockSync(host, chain, writer, BlockFeed(chain.height), mempool.verified)
    for peer in peers.values():
        peer.sync = sync
        sync.saw_height(peer.node_id, 12)
    verified_before = mempool.verifier.verified_count
    await sync._catch_up()
    assert chain.height == 12 and heard == list(range(1, 13)) and host.penalties == []
    short = next(p for p in peers.values() if p.cap == 3)
    first = short.asked[0][0]
    assert short.asked == [(first, 4), (first + 3, 1)]  # the block it left out, asked again
    assert sync.signatures.verified_count == FIRST + 11 * 3  # once each
    assert mempool.verifier.verified_count == verified_before  # and not again


async def test_a_catch_up_is_recorded_with_its_heights_transactions_and_seconds(tmp_path):
    # real time: the verifying worker processes answer in it
    import trio

    _, blocks = source_chain(tmp_path / "source", 5, 4)  # heights 1..6
    items = {b.height: [b.encode(), c.encode()] for b, c in blocks}
    chain, writer, _, mempool = follower(tmp_path / "follower")
    peer = ServingPeer(b"\x07" * 32, items)
    sync = BlockSync(Hosts({peer.node_id: peer}), chain, writer, BlockFeed(chain.height),
                     mempool.verified)
    peer.sync = sync
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        sync.saw_height(peer.node_id, 6)
        with trio.fail_after(30):
            while not sync.catch_ups:  # noqa: ASYNC110 - the record has no event to wait on
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    [episode] = sync.catch_ups
    assert episode["from_height"] == 0 and episode["to_height"] == chain.height == 6
    assert episode["txs"] == chain.committed_txs == FIRST + 5 * 4
    assert 0 < episode["seconds"] < 30


@dataclass
class SilentPeer:
    node_id: bytes
    asked: list = field(default_factory=list)

    def send(self, msg) -> bool:
        self.asked.append(msg)
        return True


async def test_the_late_answer_to_a_request_no_longer_wanted_costs_nothing(tmp_path):
    import trio

    chain, writer, _, mempool = follower(tmp_path / "follower")
    peer = SilentPeer(b"\x09" * 32)
    host = Hosts({peer.node_id: peer})
    sync = BlockSync(host, chain, writer, BlockFeed(chain.height), mempool.verified)
    with trio.move_on_after(0.05):  # the range is no longer wanted (its round ended)
        await sync._request(peer.node_id, 1, 4)
    assert peer.asked == [GetBlocks(1, 4)]
    sync.on_blocks(peer, Blocks(1, []))  # its answer comes anyway
    assert host.penalties == []
    sync.on_blocks(peer, Blocks(1, []))  # a second one was never asked for
    assert [why for _, why in host.penalties] == ["blocks nobody asked for"]


async def test_a_catch_up_holds_at_most_its_budget_of_decoded_transactions(
        tmp_path, monkeypatch):
    from iomtnode.sync import blocksync, decoding, planner

    monkeypatch.setattr(blocksync, "DECODED_TXS_AHEAD", 100)
    monkeypatch.setattr(planner, "RANGE_BLOCKS", 2)
    _, blocks = source_chain(tmp_path / "source", 9, 40)  # heights 1..10, 40 txs from 2
    items = {b.height: [b.encode(), c.encode()] for b, c in blocks}
    chain, writer, heard, mempool = follower(tmp_path / "follower")
    peers = {bytes([i]) * 32: ServingPeer(bytes([i]) * 32, items) for i in (1, 2, 3)}
    host = Hosts(peers)
    sync = BlockSync(host, chain, writer, BlockFeed(chain.height), mempool.verified)
    for peer in peers.values():
        peer.sync = sync
        sync.saw_height(peer.node_id, 10)
    held: list[int] = []
    take = decoding.TxBudget.take

    async def recording_take(self, count, own=0):
        await take(self, count, own)
        held.append(self.held)

    monkeypatch.setattr(decoding.TxBudget, "take", recording_take)
    await sync._catch_up()
    assert chain.height == 10 and heard == list(range(1, 11)) and host.penalties == []
    # blocks of 40 (3 in the first): two or three held at once, never a third of 40 more
    assert len(held) == 10 and 40 < max(held) <= 100


async def test_one_range_larger_than_the_budget_still_applies(tmp_path, monkeypatch):
    import trio

    from iomtnode.sync import blocksync

    monkeypatch.setattr(blocksync, "DECODED_TXS_AHEAD", 50)
    _, blocks = source_chain(tmp_path / "source", 6, 40)  # heights 1..7: 4 + 6 x 40 txs
    items = {b.height: [b.encode(), c.encode()] for b, c in blocks}
    chain, writer, heard, mempool = follower(tmp_path / "follower")
    peer = ServingPeer(b"\x07" * 32, items)  # one peer: the whole chain is one range
    host = Hosts({peer.node_id: peer})
    sync = BlockSync(host, chain, writer, BlockFeed(chain.height), mempool.verified)
    peer.sync = sync
    sync.saw_height(peer.node_id, 7)
    with trio.fail_after(30):  # waiting on its own blocks would never end
        await sync._catch_up()
    assert chain.height == 7 and heard == list(range(1, 8)) and host.penalties == []
