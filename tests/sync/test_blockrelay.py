"""Block relay sends a committed head only to peers not known to hold it, and has a
compact block it receives assembled (:mod:`iomtnode.admission.assembly`): from the mempool,
from the admission inbox for a while, the rest asked of its sender."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from iomtnode.admission.assembly import ASK_TIMEOUT_S, HOLD_S, PENDING_TIMEOUT_S
from iomtnode.admission.mempool import Mempool
from iomtnode.admission.messages import BlockTxs, GetBlockTxs
from iomtnode.chain.feed import BlockFeed
from iomtnode.chain.writer import ChainWriter
from iomtnode.core.block import sign_commit
from iomtnode.core.crypto import blake2b256
from iomtnode.p2p import score
from iomtnode.sync.blockrelay import INBOX_HOLD_TXS, BlockRelay, compact
from iomtnode.sync.messages import CompactBlock

from ..admission.chainkit import GENESIS, T0, new_chain, source_chain
from ..core.helpers import CHAIN_ID, key, pub


@dataclass
class Peer:
    node_id: bytes
    sent: list = field(default_factory=list)

    def send(self, frame) -> bool:
        self.sent.append(frame)
        return True


@dataclass
class Host:
    """The router, as the relay sees it."""

    peer_list: list[Peer]
    broadcasts: list = field(default_factory=list)
    penalties: list = field(default_factory=list)

    def peers(self):
        return list(self.peer_list)

    def get(self, node_id: bytes) -> Peer | None:
        return next((p for p in self.peer_list if p.node_id == node_id), None)

    def ask(self, node_id: bytes, msg: GetBlockTxs) -> bool:
        """Send a request as Asks.sender does (without the routing it records)."""
        peer = self.get(node_id)
        return peer is not None and peer.send(msg)

    def penalize(self, peer: Peer, points: int, reason: str) -> bool:
        self.penalties.append((peer.node_id, points, reason))
        return False

    def penalize_id(self, node_id: bytes, points: int, reason: str) -> None:
        self.penalties.append((node_id, points, reason))

    def broadcast(self, msg, exclude=()) -> int:
        targets = [p.node_id for p in self.peer_list if p.node_id not in exclude]
        self.broadcasts.append((msg, targets))
        return len(targets)


def test_a_head_goes_to_peers_but_its_source_signers_and_known_holders(tmp_path):
    chain, made = source_chain(tmp_path / "data", 1, 3)
    block, commit = made[-1]
    peers = [Peer(pub(name)) for name in ("A", "B", "C", "D", "E")]
    host = Host(peers)
    mempool = Mempool(chain, now_ms=lambda: GENESIS.time_ms)
    writer = ChainWriter(chain, BlockFeed(chain.height), mempool.verifier)
    relay = BlockRelay(host, chain, writer, mempool, lambda peer, height: None, host.ask,
                       holders=lambda b: {pub("C")})
    relay.on_committed(block, commit, pub("B"))
    [(msg, targets)] = host.broadcasts
    assert isinstance(msg, CompactBlock) and msg.tx_ids == [tx.id for tx in block.txs]
    # A signed the certificate, B sent it, C voted for it: only D and E lack it
    assert targets == [pub("D"), pub("E")]
    relay.on_committed(made[-2][0], made[-2][1], None)  # not the head: sync's business
    assert len(host.broadcasts) == 1


class Inbox:
    """A gossip inbox that holds ``queued`` until waited for (then admits them), or
    forever (``stuck``)."""

    def __init__(self, mempool: Mempool, queued: list, stuck: bool = False,
                 backlog: int = 3) -> None:
        self.mempool, self.queued, self.stuck = mempool, queued, stuck
        self.handled = 0
        self.queued_count = backlog

    def backlog(self) -> int:
        return 0 if self.handled else self.queued_count

    def mark(self) -> int:
        return 1

    def admitted(self, mark: int) -> bool:
        return self.handled >= mark

    async def wait_admitted(self, mark: int) -> None:
        if self.stuck:
            await trio.sleep_forever()
        for tx in self.queued:
            self.mempool.add_tx(tx)
        self.handled = mark


async def follower_with(tmp_path, inbox_txs: str, stuck: bool = False, backlog: int = 3):
    """A follower one block behind a source chain whose last block has six readings: it
    holds the first three in its mempool; the rest are in its inbox (or nowhere)."""
    _, made = source_chain(tmp_path / "source", 1, 6)
    chain = new_chain(tmp_path / "follower")
    mempool = Mempool(chain, now_ms=lambda: T0 + 60_000)
    writer = ChainWriter(chain, BlockFeed(chain.height), mempool.verifier)
    assert await writer.apply(*made[0], pub("A"), mempool.verified)
    block, commit = made[-1]
    for tx in block.txs[:3]:
        mempool.add_tx(tx)
    inbox = Inbox(mempool, list(block.txs[3:]) if inbox_txs == "inbox" else [], stuck,
                  backlog)
    peer = Peer(pub("B"))
    host = Host([peer])
    relay = BlockRelay(host, chain, writer, mempool, lambda peer, height: None, host.ask,
                       inbox=inbox)
    return chain, relay, peer, compact(block, commit), block


async def test_the_senders_answer_completes_the_block(tmp_path):
    chain, relay, peer, msg, block = await follower_with(tmp_path, "nowhere")
    with trio.fail_after(10):
        await relay.on_compact(peer, msg)
        assert peer.sent == [GetBlockTxs(block.hash, [3, 4, 5])]
        await relay.on_block_txs(peer, BlockTxs(block.hash, [3, 4, 5],
                                                [tx.raw for tx in block.txs[3:]]))
    assert chain.height == 2 and chain.head.hash == block.hash
    assert relay._router.penalties == []


async def test_a_wrong_answer_costs_its_sender(tmp_path):
    chain, relay, peer, msg, block = await follower_with(tmp_path, "nowhere")
    with trio.fail_after(10):
        await relay.on_compact(peer, msg)
        wrong = [tx.raw for tx in block.txs[4:]]  # the transaction at 4 given for 3
        await relay.on_block_txs(peer, BlockTxs(block.hash, [3, 4], wrong))
    assert relay._router.penalties == [(peer.node_id, score.INVALID_MESSAGE,
                                        "block txs: the transaction at 3 is not the one "
                                        "asked for")]
    assert chain.height == 1
    assert peer.sent == [GetBlockTxs(block.hash, [3, 4, 5])]  # no other source: sync takes over


async def test_a_compact_blocks_missing_transactions_are_taken_from_the_inbox(tmp_path):
    chain, relay, peer, msg, _ = await follower_with(tmp_path, "inbox")
    with trio.fail_after(10):
        await relay.on_compact(peer, msg)
    assert peer.sent == []  # nothing asked of the peer: the inbox had them
    assert chain.height == 2 and chain.head.hash == blake2b256(msg.header)


async def test_what_the_inbox_does_not_bring_in_time_is_asked_for(tmp_path, autojump_clock):
    chain, relay, peer, msg, _ = await follower_with(tmp_path, "inbox", stuck=True)
    start = trio.current_time()
    await relay.on_compact(peer, msg)
    assert trio.current_time() - start == pytest.approx(HOLD_S)
    [ask] = peer.sent
    assert isinstance(ask, GetBlockTxs) and ask.indexes == [3, 4, 5]
    assert chain.height == 1  # until the peer answers


async def test_what_the_inbox_did_not_have_is_asked_for_once_it_caught_up(tmp_path):
    chain, relay, peer, msg, _ = await follower_with(tmp_path, "nowhere")
    with trio.fail_after(10):
        await relay.on_compact(peer, msg)
    [ask] = peer.sent
    assert isinstance(ask, GetBlockTxs) and ask.indexes == [3, 4, 5]
    assert chain.height == 1


async def test_an_inbox_too_far_behind_is_not_waited_for(tmp_path, autojump_clock):
    # it could not admit so many within the hold, and the wait would stall the peer
    chain, relay, peer, msg, _ = await follower_with(tmp_path, "inbox",
                                                  backlog=INBOX_HOLD_TXS + 1)
    start = trio.current_time()
    await relay.on_compact(peer, msg)
    assert trio.current_time() == start
    [ask] = peer.sent
    assert isinstance(ask, GetBlockTxs) and ask.indexes == [3, 4, 5]
    assert chain.height == 1  # until the peer answers


@dataclass
class Waited(Peer):
    """A peer whose requests can be waited for."""

    asked: trio.Event = field(default_factory=trio.Event)

    def send(self, frame) -> bool:
        self.asked.set()
        return super().send(frame)


async def test_a_silent_source_is_replaced_by_the_next_sender_after_the_ask_timeout(
        tmp_path, autojump_clock):
    """B sent the compact block first and is asked; C's copy makes C a source; B never
    answers, and no other message comes: after ASK_TIMEOUT_S C is asked, and its answer
    completes the block."""
    chain, made = await follower_blocks(tmp_path)
    block, commit = made[-1]
    b, c = Waited(pub("B")), Waited(pub("C"))
    host = Host([b, c])
    mempool = Mempool(chain, now_ms=lambda: T0 + 60_000)
    for tx in block.txs[:3]:
        mempool.add_tx(tx)
    writer = ChainWriter(chain, BlockFeed(chain.height), mempool.verifier)
    relay = BlockRelay(host, chain, writer, mempool, lambda peer, height: None, host.ask)
    msg = compact(block, commit)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        start = trio.current_time()
        await relay.on_compact(b, msg)
        await relay.on_compact(c, msg)
        assert b.sent == [GetBlockTxs(block.hash, [3, 4, 5])] and c.sent == []
        with trio.fail_after(PENDING_TIMEOUT_S):
            await c.asked.wait()
        assert trio.current_time() - start == pytest.approx(ASK_TIMEOUT_S)
        assert c.sent == [GetBlockTxs(block.hash, [3, 4, 5])]
        await relay.on_block_txs(c, BlockTxs(block.hash, [3, 4, 5],
                                             [tx.raw for tx in block.txs[3:]]))
        assert chain.height == 2 and chain.head.hash == block.hash
        assert host.penalties == []
        nursery.cancel_scope.cancel()


async def test_a_block_nobody_serves_is_given_up_after_the_pending_timeout(
        tmp_path, autojump_clock):
    """B is asked and stays silent, and nobody else sends the block: the run task gives
    the block up after PENDING_TIMEOUT_S (sync takes over), so a later copy is fetched
    afresh."""
    chain, made = await follower_blocks(tmp_path)
    block, commit = made[-1]
    b = Waited(pub("B"))
    host = Host([b])
    mempool = Mempool(chain, now_ms=lambda: T0 + 60_000)
    writer = ChainWriter(chain, BlockFeed(chain.height), mempool.verifier)
    relay = BlockRelay(host, chain, writer, mempool, lambda peer, height: None, host.ask)
    msg = compact(block, commit)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        await relay.on_compact(b, msg)
        await relay.on_compact(b, msg)  # a copy while it is fetched: nothing new
        assert len(b.sent) == 1
        await trio.sleep(PENDING_TIMEOUT_S)  # virtual time: the fetch's whole life...
        await trio.testing.wait_all_tasks_blocked()  # ... and the run task's turn
        await relay.on_compact(b, msg)
        assert b.sent == [GetBlockTxs(block.hash, list(range(6)))] * 2
        nursery.cancel_scope.cancel()


async def follower_blocks(tmp_path):
    """A follower one block behind a source chain whose last block has six readings."""
    _, made = source_chain(tmp_path / "source", 1, 6)
    chain = new_chain(tmp_path / "follower")
    mempool = Mempool(chain, now_ms=lambda: T0 + 60_000)
    writer = ChainWriter(chain, BlockFeed(chain.height), mempool.verifier)
    assert await writer.apply(*made[0], pub("A"), mempool.verified)
    return chain, made


async def test_a_forged_certificate_costs_its_sender_before_any_transaction_is_verified(
        tmp_path):
    # any peer may relay a compact block for the next height: one whose certificate no
    # authority signed, with transactions only its sender holds, had the node verify every
    # transaction's signature before it looked at the certificate
    _, made = source_chain(tmp_path / "source", 1, 60)
    chain = new_chain(tmp_path / "follower")
    mempool = Mempool(chain, now_ms=lambda: T0 + 60_000)
    writer = ChainWriter(chain, BlockFeed(chain.height), mempool.verifier)
    assert await writer.apply(*made[0], pub("A"), mempool.verified)
    block, commit = made[-1]
    evil = Peer(pub("E"))
    host = Host([evil])
    relay = BlockRelay(host, chain, writer, mempool, lambda peer, height: None, host.ask)
    before = mempool.verifier.verified_count
    forged = sign_commit([key("E")], CHAIN_ID, block.height, 0, block.hash)
    with trio.fail_after(10):
        await relay.on_compact(evil, compact(block, forged))
        indexes = list(range(len(block.txs)))
        assert evil.sent == [GetBlockTxs(block.hash, indexes)]
        await relay.on_block_txs(evil, BlockTxs(block.hash, indexes,
                                                [tx.raw for tx in block.txs]))
    assert mempool.verifier.verified_count == before  # not one of the 60
    [(who, points, reason)] = host.penalties
    assert (who, points) == (pub("E"), score.INVALID_BLOCK)
    assert reason == f"invalid block: block 2: {pub('E').hex()[:16]} is not an authority"
    assert chain.height == 1
    with trio.fail_after(10):  # the block with its own certificate: verified and committed
        await relay.on_compact(evil, compact(block, commit))
        await relay.on_block_txs(evil, BlockTxs(block.hash, indexes,
                                                [tx.raw for tx in block.txs]))
    assert chain.height == 2 and mempool.verifier.verified_count == before + 60
