"""Block sync against peers that claim heights they do not serve (under a virtual clock,
verification inline): each is penalised and its claim dropped, its range served by an
honest peer, and re-announcing the claim does not bring it back for a while.

Peers: A and B honest (they hold blocks 1..12), L a liar (its id sorts first, so it is
given the first range: the one the node waits for first)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio

from iomtnode.admission.mempool import Mempool
from iomtnode.admission.verify import Verifier
from iomtnode.chain.chain import Chain
from iomtnode.chain.feed import BlockFeed
from iomtnode.chain.writer import ChainWriter
from iomtnode.p2p import score
from iomtnode.store import BlockStore
from iomtnode.sync.blocksync import REQUEST_TIMEOUT_S, UNSERVED_TIMEOUT_POINTS, BlockSync
from iomtnode.sync.messages import Blocks, GetBlocks, Status
from iomtnode.sync.planner import UNSERVED_IGNORED_S

from ..admission.chainkit import GENESIS, T0, source_chain

HEAD = 12
NOW_MS = T0 + 3_600_000  # an hour after genesis: 12 is plausible, 2^64-1 is not
A, B, L = b"\x0a" * 32, b"\x0b" * 32, b"\x01" * 32


@dataclass
class FakePeer:
    """Answers GetBlocks as ``mode`` says: "serve" from ``items``, "silent" never, "empty"
    with no block, "garbage" with a block that does not decode. Records what it was asked
    (with the follower's height then)."""

    node_id: bytes
    items: dict
    mode: str = "serve"
    cap: int = HEAD  # blocks served at most per answer (as when an answer is full)
    sync: BlockSync | None = None
    asked: list = field(default_factory=list)

    def send(self, msg) -> bool:
        if not isinstance(msg, GetBlocks):
            return True
        assert self.sync is not None
        self.asked.append((msg.start, msg.count))
        match self.mode:
            case "serve":
                blocks = [self.items[h] for h in range(msg.start, msg.start + msg.count)
                          if h in self.items][:self.cap]
            case "empty":
                blocks = []
            case "garbage":
                blocks = [[b"\x93junk", b"\x93junk"]]
            case _:
                return True
        self.sync.on_blocks(self, Blocks(msg.start, blocks))
        return True


@dataclass
class Hosts:
    peers: dict
    penalties: list = field(default_factory=list)

    def get(self, node_id):
        return self.peers.get(node_id)

    def penalize(self, peer, points, reason) -> bool:
        self.penalties.append((peer.node_id, points, reason))
        return False


@pytest.fixture
def items(tmp_path):
    _, blocks = source_chain(tmp_path / "source", HEAD - 1, 3)  # heights 1..12
    return {b.height: [b.encode(), c.encode()] for b, c in blocks}


def follower(path, peers: list[FakePeer], now_ms=lambda: NOW_MS) -> tuple[BlockSync, Hosts]:
    chain = Chain(BlockStore.open(path), GENESIS)
    verifier = Verifier(chain.chain_id, inline=True)
    mempool = Mempool(chain, now_ms=lambda: T0 + 10_000, verifier=verifier)
    feed = BlockFeed(chain.height)
    writer = ChainWriter(chain, feed, verifier, inline=True)
    host = Hosts({p.node_id: p for p in peers})
    sync = BlockSync(host, chain, writer, feed, mempool.verified, now_ms=now_ms)
    for peer in peers:
        peer.sync = sync
    return sync, host


async def sync_to_head(sync: BlockSync, peers: list[FakePeer]) -> None:
    """Run ``sync`` after each of ``peers`` claimed HEAD, until it holds HEAD (5 s)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        for peer in peers:
            sync.saw_height(peer.node_id, HEAD)
        with trio.fail_after(5):
            while sync._chain.height < HEAD:  # noqa: ASYNC110 - no event for the height
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("mode, points, waited", [
    ("silent", UNSERVED_TIMEOUT_POINTS, REQUEST_TIMEOUT_S),
    ("empty", score.INVALID_MESSAGE, 0.0),
])
async def test_a_claim_not_served_is_penalised_dropped_and_its_range_served_by_another(
        tmp_path, items, autojump_clock, mode, points, waited):
    liar = FakePeer(L, {}, mode)
    peers = [liar, FakePeer(A, items, cap=3), FakePeer(B, items)]
    sync, host = follower(tmp_path / "follower", peers)
    for peer in peers:
        sync.saw_height(peer.node_id, HEAD)
    started = trio.current_time()
    with trio.fail_after(REQUEST_TIMEOUT_S + 5):
        await sync._catch_up()  # one catch-up: the liar's range is asked of another peer
    assert sync._chain.height == HEAD
    assert trio.current_time() - started == pytest.approx(waited, abs=0.5)
    assert liar.asked == [(1, 4)]
    # re-assigned to A, which serves 3 blocks an answer: the fourth is asked of A again
    assert peers[1].asked[:3] == [(5, 4), (1, 4), (4, 1)]
    [(who, charged, why)] = host.penalties
    assert (who, charged) == (L, points) and why.startswith("sync claim not served")
    assert L not in sync.peer_heights
    sync.saw_height(L, HEAD + 5)  # announced again
    assert sync.planner.believed(L, NOW_MS) == 0 and sync.target == HEAD


async def test_a_range_that_does_not_decode_costs_its_server_and_its_claim(
        tmp_path, items, autojump_clock):
    liar = FakePeer(L, {}, "garbage")
    peers = [liar, FakePeer(A, items), FakePeer(B, items)]
    sync, host = follower(tmp_path / "follower", peers)
    await sync_to_head(sync, peers)
    assert [(who, points) for who, points, _ in host.penalties] == [(L, score.INVALID_BLOCK)]
    assert liar.asked == [(1, 4)] and L not in sync.peer_heights


async def test_a_liar_that_re_announces_is_asked_once_per_ignore_period(
        tmp_path, items, autojump_clock):
    """The liar claims 2^64-1 (beyond the chain's age), never answers and announces its
    claim every second: the node syncs from A and B at once, tries the liar only once level,
    and then not again until :data:`UNSERVED_IGNORED_S` has passed."""
    liar = FakePeer(L, {}, "silent")
    peers = [liar, FakePeer(A, items), FakePeer(B, items)]
    sync, host = follower(tmp_path / "follower", peers,
                          now_ms=lambda: NOW_MS + int(trio.current_time() * 1000))
    heights_asked: list[int] = []
    send = liar.send

    def noting(msg) -> bool:
        if isinstance(msg, GetBlocks):
            heights_asked.append(sync._chain.height)
        return send(msg)

    liar.send = noting
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        for peer in peers:
            sync.saw_height(peer.node_id, HEAD)
        with trio.fail_after(1):  # no request waits on the liar
            while sync._chain.height < HEAD:
                sync.saw_height(L, 2**64 - 1)
                await trio.sleep(0.01)
        for _ in range(int(UNSERVED_IGNORED_S) - 5):
            sync.saw_height(L, 2**64 - 1)
            await trio.sleep(1)
        assert heights_asked == [HEAD]  # once, when level
        assert [(who, points) for who, points, _ in host.penalties] == [
            (L, UNSERVED_TIMEOUT_POINTS)]
        for _ in range(int(REQUEST_TIMEOUT_S) + 10):  # it was dropped after a timeout
            sync.saw_height(L, 2**64 - 1)
            await trio.sleep(1)
        assert heights_asked == [HEAD, HEAD]  # the period over: tried again
        nursery.cancel_scope.cancel()
    assert sync._chain.height == HEAD


@dataclass
class HelloOf:
    height: int


async def test_through_the_reactor_a_reconnect_does_not_restore_an_unserved_claim(
        tmp_path, items, autojump_clock):
    from iomtnode.sync.reactor import SyncReactor

    liar = FakePeer(L, {}, "empty")
    peers = [liar, FakePeer(A, items), FakePeer(B, items)]
    sync, host = follower(tmp_path / "follower", peers)
    reactor = SyncReactor(sync, relay=None, head=lambda: (0, bytes(32)))  # type: ignore[arg-type]
    for peer in peers:
        peer.hello = HelloOf(HEAD)
        reactor.connected(peer)
    await reactor.receive(liar, Status(HEAD + 3, bytes(32)))
    assert sync.peer_heights == {L: HEAD + 3, A: HEAD, B: HEAD}
    await sync._catch_up()
    assert sync._chain.height == HEAD and L not in sync.peer_heights
    assert [(who, points) for who, points, _ in host.penalties] == [(L, score.INVALID_MESSAGE)]
    reactor.disconnected(liar)
    liar.hello = HelloOf(HEAD + 3)
    reactor.connected(liar)  # back, with the same claim in its handshake
    await reactor.receive(liar, Status(HEAD + 3, bytes(32)))
    assert sync.peer_heights[L] == HEAD + 3 and sync.target == HEAD  # claimed, not believed


async def test_a_request_whose_connection_closes_is_asked_again_and_blames_no_one(
        tmp_path, items, autojump_clock):
    """A's connection is replaced by a new one (from the same node) just after a request went
    out on it: the request ends at once, A is neither penalised nor doubted, and the range is
    asked again, long before the request's timeout."""
    old = FakePeer(A, items, "silent")
    peers = [old, FakePeer(B, items)]
    sync, host = follower(tmp_path / "follower", peers)
    send = old.send

    def then_replaced(msg) -> bool:
        send(msg)
        if isinstance(msg, GetBlocks):
            host.peers[A] = FakePeer(A, items, sync=sync)
            sync.connection_lost(old)
        return True

    old.send = then_replaced
    for peer in peers:
        sync.saw_height(peer.node_id, HEAD)
    started = trio.current_time()
    with trio.fail_after(REQUEST_TIMEOUT_S):
        while sync._chain.height < HEAD:
            await sync._catch_up()
    assert trio.current_time() - started < 1
    assert old.asked and host.penalties == []
    assert sync.peer_heights[A] == HEAD
