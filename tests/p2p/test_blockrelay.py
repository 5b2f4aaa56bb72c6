"""Block relay sends a committed head only to peers not known to hold it."""

from __future__ import annotations

from dataclasses import dataclass, field

from iomtnode.admission.mempool import Mempool
from iomtnode.chain.feed import BlockFeed
from iomtnode.chain.writer import ChainWriter
from iomtnode.p2p.blockrelay import BlockRelay
from iomtnode.p2p.messages import BlockTxs, CompactBlock, GetBlockTxs

from ..admission.chainkit import GENESIS, source_chain
from ..core.helpers import pub


@dataclass
class Peer:
    node_id: bytes
    sent: list = field(default_factory=list)

    def send(self, frame) -> bool:
        self.sent.append(frame)
        return True


@dataclass
class Host:
    peer_list: list[Peer]
    broadcasts: list = field(default_factory=list)

    def peers(self):
        return list(self.peer_list)

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
    relay = BlockRelay(host, chain, ChainWriter(chain, mempool, BlockFeed(chain.height)), mempool,
                       lambda peer, height: None, holders=lambda b: {pub("C")})
    relay.on_committed(block, commit, pub("B"))
    [(msg, targets)] = host.broadcasts
    assert isinstance(msg, CompactBlock) and msg.tx_ids == [tx.id for tx in block.txs]
    # A signed the certificate, B sent it, C voted for it: only D and E lack it
    assert targets == [pub("D"), pub("E")]
    relay.on_committed(made[-2][0], made[-2][1], None)  # not the head: sync's business
    assert len(host.broadcasts) == 1


def test_block_transactions_are_served_as_stored_by_index(tmp_path):
    chain, made = source_chain(tmp_path / "data", 1, 5)
    block, _ = made[-1]
    peer = Peer(pub("D"))
    mempool = Mempool(chain, now_ms=lambda: GENESIS.time_ms)
    relay = BlockRelay(Host([peer]), chain, ChainWriter(chain, mempool, BlockFeed(chain.height)),
                       mempool, lambda peer, height: None)
    relay.on_get_block_txs(peer, GetBlockTxs(block.hash, [4, 0, 9]))  # 9: out of range
    [answer] = peer.sent
    assert isinstance(answer, BlockTxs) and answer.block_hash == block.hash
    assert answer.txs == [block.txs[4].raw, block.txs[0].raw]
    relay.on_get_block_txs(peer, GetBlockTxs(b"\x00" * 32, [0]))  # no such block: no answer
    assert len(peer.sent) == 1
