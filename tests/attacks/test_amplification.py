"""Amplification: a peer that makes a node work far beyond what its requests cost it.

Real nodes on the in-memory network under a virtual clock: node 0 (the authority) and node 1
(an honest follower), and an attacker that completes the handshake with its own key through
the project's own p2p stack and then sends what it likes. Each attempt is refused or bounded
with a logged reason, the attacker is banned, the honest follower stays connected with a
clean score, and the network keeps finalizing. Last, honest load (readings, and the sync
of a long chain by a node that joins late) never meets a limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
from trio.testing import wait_all_tasks_blocked

from iomtnode.admission.messages import BlockTxs, GetBlockTxs, TxRequest, Txs
from iomtnode.config import Config
from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.p2p import records, score
from iomtnode.p2p.messages import (
    MAX_MESSAGE_BYTES,
    MESSAGE_TYPES,
    Auth,
    GetPeers,
    Hello,
    PeerRecords,
    Ping,
    Pong,
)
from iomtnode.p2p.peer import Peer
from iomtnode.p2p.records import sign_record
from iomtnode.p2p.router import Router
from iomtnode.store import BlockStore
from iomtnode.sync.messages import GetBlocks, Status

from ..core import sealkit as kit
from ..node.harness import BASE, Net, start_net

pytestmark = pytest.mark.timeout(120)

LONG_CHAIN = 1000  # blocks a late node syncs


class Sink:
    """The attacker's reactor for everything the node sends it: counted, never judged."""

    def __init__(self) -> None:
        self.got: dict[type, list[Any]] = {}

    async def receive(self, peer: Peer, msg: Any) -> None:
        self.got.setdefault(type(msg), []).append(msg)

    def connected(self, peer: Peer) -> None:
        pass

    def disconnected(self, peer: Peer) -> None:
        pass


@dataclass
class Attacker:
    key: SigningKey
    router: Router
    peer: Peer  # its connection to node 0
    sink: Sink

    async def send(self, messages: list[Any]) -> None:
        """Send ``messages`` as fast as its queue allows (no virtual time passes)."""
        for start in range(0, len(messages), 256):
            for msg in messages[start:start + 256]:
                self.peer.send(msg)
            await wait_all_tasks_blocked()


@asynccontextmanager
async def attacker(net: Net, tmp: Path) -> AsyncIterator[Attacker]:
    """A stranger with its own key, connected to node 0 (a full handshake)."""
    key = SigningKey.generate()
    node = net.node(0)
    sink = Sink()
    taken = (Hello, Auth, Ping, Pong, PeerRecords, GetPeers)
    with BlockStore.open(tmp / "attacker") as store:
        router = Router(Config(p2p_listen="10.0.0.66:0"), key, store, net.chain_id,
                        node.genesis.hash, lambda: (0, bytes(32)),
                        transport=net.network.transport("10.0.0.66"))
        router.register([k for k in MESSAGE_TYPES.values() if k not in taken], sink)
        router.host.config = replace(router.host.config, port=None)
        async with trio.open_nursery() as nursery:
            await nursery.start(router.host.run)
            peer = await router.host.dial(net.p2p(0))
            yield Attacker(key, router, peer, sink)
            nursery.cancel_scope.cancel()


@pytest.fixture
async def net(tmp_path, nursery):  # each test takes autojump_clock: pytest-trio needs it there
    return await start_net(Net(tmp_path, 2), nursery)


def events(logs: list[dict], name: str) -> list[dict]:
    return [e for e in logs if e["event"] == name]


async def banned(net: Net, who: Attacker) -> None:
    node = net.node(0)
    await net.wait(lambda: node.p2p.host.scoreboard.is_banned(who.key.public,
                                                             trio.current_time()),
                   "the attacker banned")
    assert node.p2p.get(who.key.public) is None


async def honest_unharmed(net: Net, since_height: int) -> None:
    """The follower is still node 0's peer with a clean score; both keep finalizing."""
    await net.wait_height(since_height + 2)
    node, follower = net.node(0), net.keys[1].public
    assert node.p2p.get(follower) is not None, "honest peer dropped"
    assert node.p2p.host.scoreboard.score(follower, trio.current_time()) == 0.0
    assert net.node(1).p2p.limits.dropped == 0


async def block_with_txs(net: Net, n: int) -> Any:
    """A committed block holding ``n`` readings (from a device admitted first, to a stream
    whose epoch is announced)."""
    device, authority = SigningKey.generate(), net.keys[0]
    now = net.now_ms()
    readings = [kit.sealed_reading(device, seq, now + seq, net.chain_id)
                for seq in range(1, n + 1)]
    async with net.client(0) as client:
        await net.enroll(client, authority, device, [net.node(0)])
        for start in range(0, n, 100):
            await client.call("submit_readings",
                              txs=[tx.raw.hex() for tx in readings[start:start + 100]])
    chain = net.node(0).chain
    await net.wait(lambda: all(chain.store.tx_location(tx.id) for tx in readings), "committed")
    return chain.block_at(chain.store.tx_location(readings[0].id)[0])


async def test_a_block_asked_for_10000_times_over_is_refused(net, tmp_path, autojump_clock):
    block = await block_with_txs(net, 40)
    count = len(block.txs)
    h0 = net.node(0).chain.height
    with structlog.testing.capture_logs() as logs:
        async with attacker(net, tmp_path) as evil:
            # the honest shape (every index once, in order) is answered, in frames the
            # receiver accepts
            await evil.send([GetBlockTxs(block.hash, list(range(count)))])
            await net.wait(lambda: sum(len(m.txs) for m in evil.sink.got.get(BlockTxs, []))
                           == count, "the honest request answered")
            assert evil.peer.counters["BlockTxs"].bytes_in < MAX_MESSAGE_BYTES
            # 10,000 copies of index 0 (a 10 kB request for about 3 MB before): refused
            await evil.send([GetBlockTxs(block.hash, [0] * 10_000)])
            await net.wait(lambda: events(logs, "peer_penalized"), "the request refused")
            assert len(evil.sink.got[BlockTxs]) == 1  # nothing more was sent
            await evil.send([GetBlockTxs(block.hash, [0] * 10_000)] * 5)
            await banned(net, evil)
        assert len(evil.sink.got[BlockTxs]) == 1
    penalty = events(logs, "peer_penalized")[0]
    assert penalty["points"] == score.INVALID_MESSAGE
    assert penalty["reason"].startswith("block_txs_request_refused: 10000 indexes not strictly")
    await honest_unharmed(net, h0)


async def test_a_tx_request_naming_ids_twice_is_refused(net, tmp_path, autojump_clock):
    h0 = net.node(0).chain.height
    some = blake2b256(b"some id")
    with structlog.testing.capture_logs() as logs:
        async with attacker(net, tmp_path) as evil:
            await evil.send([TxRequest([some] * 4096)] * 6)
            await banned(net, evil)
    assert Txs not in evil.sink.got
    reasons = [e["reason"] for e in events(logs, "peer_penalized")]
    assert reasons[0] == "tx_request_refused: 4095 of 4096 ids asked more than once"
    await honest_unharmed(net, h0)


def flood_of(kind: type) -> Callable[[Net], Any]:
    def make(net: Net) -> Any:
        head = net.node(0).chain.block_at(1).hash
        return {
            GetBlocks: GetBlocks(1, 64),
            GetBlockTxs: GetBlockTxs(head, []),
            TxRequest: TxRequest([blake2b256(b"nothing")]),  # unique ids, none pending: a lookup
            GetPeers: GetPeers(),
            Status: Status(0, bytes(32)),
        }[kind]
    return make


@pytest.mark.parametrize("kind", [GetBlocks, GetBlockTxs, TxRequest, GetPeers, Status])
async def test_a_flood_of_requests_is_cut_at_its_rate_and_banned(
        net, tmp_path, autojump_clock, kind):
    node = net.node(0)
    rate = node.p2p.limits.rate(kind)
    assert rate is not None
    await net.wait_height(1)
    h0 = node.chain.height
    flood = int(rate.burst) + int(-score.BAN_THRESHOLD // score.RATE_LIMITED) + 10
    request = flood_of(kind)(net)
    with structlog.testing.capture_logs() as logs:
        async with attacker(net, tmp_path) as evil:
            if kind is TxRequest:  # that id is not refused as never offered to it
                node.services.gossip.known_by(evil.key.public).add(request.ids[0])
            seen_by_node = node.p2p.get(evil.key.public)
            assert seen_by_node is not None
            await evil.send([request] * flood)
            await banned(net, evil)
    read = seen_by_node.counters[kind.__name__].messages_in  # the rest went unread
    handled = read - node.p2p.limits.dropped
    assert node.p2p.limits.dropped > 0
    assert handled <= rate.burst + 1  # no virtual time passed: the burst and no more
    assert any(e["reason"].startswith(f"rate_limited: {kind.__name__} dropped")
               for e in events(logs, "peer_penalized"))
    await honest_unharmed(net, h0)


async def test_replayed_peer_records_cost_a_lookup_and_a_flood_of_them_is_banned(
        net, tmp_path, autojump_clock, monkeypatch):
    checked: list[bytes] = []
    real = records.verify

    def counting(node_id: bytes, *args: Any) -> None:
        checked.append(node_id)
        real(node_id, *args)

    monkeypatch.setattr(records, "verify", counting)
    node = net.node(0)
    other = SigningKey.generate()  # a valid record of a node nobody runs
    record = sign_record(other, ("10.0.0.77:7000",), 1, net.now_ms(), net.chain_id)
    h0 = node.chain.height
    burst = int(node.p2p.limits.rate(PeerRecords).burst) - 1  # its stack sent one on connect
    async with attacker(net, tmp_path) as evil:
        await evil.send([PeerRecords([record.raw] * 64)] * burst)
        await net.wait(lambda: node.p2p.pex.verified.replays >= burst * 64 - 1, "replays")
        assert checked.count(other.public) == 1  # verified once, then looked up
        await evil.send([PeerRecords([record.raw] * 64)] * 60)
        await banned(net, evil)
    assert checked.count(other.public) <= len(net.live())  # once per node at most
    await honest_unharmed(net, h0)


async def test_honest_load_and_a_long_sync_never_meet_a_limit(tmp_path, nursery,
                                                               autojump_clock):
    net = Net(tmp_path, 3, config=replace(BASE, empty_block_interval_s=0.02))  # 50 blocks/s
    await net.start(nursery, 0)
    await net.start(nursery, 1, (net.p2p(0),))
    await net.wait(lambda: len(net.node(0).p2p.peers()) == 1, "connected")
    await block_with_txs(net, 500)
    await net.wait(lambda: net.node(0).chain.height >= LONG_CHAIN, "a long chain", 60)
    joined = await net.start(nursery, 2, (net.p2p(0), net.p2p(1)))
    await net.wait(lambda: joined.chain.height >= LONG_CHAIN, "synced", 60)
    assert [n.p2p.limits.dropped for n in net.live()] == [0, 0, 0]
    assert all(n.p2p.host.scoreboard.penalties.total() == 0 for n in net.live())
