"""A sync answer that arrives after its request timed out is dropped, not penalised; blocks
nobody asked for still cost the sender."""

from __future__ import annotations

from dataclasses import dataclass, field

from iomtnode.p2p import score
from iomtnode.sync import blocksync
from iomtnode.sync.blocksync import BlockSync
from iomtnode.sync.messages import Blocks, GetBlocks

from .chainkit import GENESIS


@dataclass
class Peer:
    node_id: bytes
    sent: list = field(default_factory=list)

    def send(self, msg) -> bool:
        self.sent.append(msg)
        return True


@dataclass
class Host:
    peer: Peer
    penalties: list = field(default_factory=list)

    def get(self, node_id):
        return self.peer if node_id == self.peer.node_id else None

    def penalize(self, peer, points, reason):
        self.penalties.append((points, reason))


class FakeChain:
    height = 0
    chain_id = "iomt-test"
    genesis = GENESIS


class FakeWriter:  # never asked to commit here
    inline = True  # a virtual clock's node: no worker processes


async def test_late_answers_are_dropped_and_unrequested_ones_penalised(autojump_clock,
                                                                       monkeypatch):
    monkeypatch.setattr(blocksync, "REQUEST_TIMEOUT_S", 1.0)
    peer = Peer(b"\x01" * 32)
    host = Host(peer)
    sync = BlockSync(host, FakeChain(), FakeWriter(), None, lambda tx: False)
    assert await sync._request(peer.node_id, 5, 3) is None  # nobody answers in time
    assert peer.sent == [GetBlocks(5, 3)]
    sync.on_blocks(peer, Blocks(5, []))  # the answer, late
    assert host.penalties == []
    sync.on_blocks(peer, Blocks(5, []))  # again: now nobody asked for it
    sync.on_blocks(peer, Blocks(9, []))
    assert [points for points, _ in host.penalties] == [score.UNREQUESTED] * 2
