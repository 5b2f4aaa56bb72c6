"""A compact block's transactions, asked by index: one request/response pair for proposals
and relayed blocks. Requests are answered from whatever holds the block (consensus's held
blocks first, then the chain's committed blocks, served as stored); answers go to the
assembler that asked that peer; the assembler fills from the mempool and fetches the rest."""

from __future__ import annotations

from dataclasses import dataclass, field

from iomtnode.admission.assembly import Assembler
from iomtnode.admission.blocktxs import BlockTxsReactor, chain_txs
from iomtnode.admission.messages import BlockTxs, GetBlockTxs
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
class Taker:
    asked: set[tuple[bytes, bytes]]
    got: list = field(default_factory=list)

    def expects(self, peer_id: bytes, block_hash: bytes) -> bool:
        return (peer_id, block_hash) in self.asked

    async def receive(self, peer, msg) -> None:
        self.got.append((peer.node_id, msg))


def test_a_committed_blocks_transactions_are_served_as_stored_by_index(tmp_path):
    chain, made = source_chain(tmp_path / "data", 1, 5)
    block, _ = made[-1]
    reactor = BlockTxsReactor((lambda block_hash: None, chain_txs(chain)), ())
    assert reactor.answer(GetBlockTxs(block.hash, [4, 0, 9])) == [  # 9: out of range
        BlockTxs(block.hash, [4, 0], [block.txs[4].raw, block.txs[0].raw])]
    unknown = blake2b256(b"no such block")
    assert reactor.answer(GetBlockTxs(unknown, [0])) == [BlockTxs(unknown, [], [])]


def test_a_block_consensus_holds_is_served_before_the_chain_is_read(tmp_path):
    held = {b"p" * 32: [b"proposed tx"]}

    def chain_is_not_read(block_hash: bytes) -> None:
        raise AssertionError("the chain was read for a held block")

    reactor = BlockTxsReactor((held.get, chain_is_not_read), ())
    assert reactor.answer(GetBlockTxs(b"p" * 32, [0])) == [
        BlockTxs(b"p" * 32, [0], [b"proposed tx"])]


async def test_an_answer_goes_to_the_one_that_asked_and_a_request_is_answered(tmp_path):
    consensus = Taker({(pub("B"), b"x" * 32)})
    sync = Taker({(pub("C"), b"y" * 32)})
    reactor = BlockTxsReactor((), (consensus, sync))
    b, c, d = Peer(pub("B")), Peer(pub("C")), Peer(pub("D"))
    await reactor.receive(c, BlockTxs(b"y" * 32, [0], [b"t"]))
    await reactor.receive(b, BlockTxs(b"x" * 32, [0], [b"t"]))
    await reactor.receive(d, BlockTxs(b"x" * 32, [0], [b"t"]))  # not asked of D: dropped
    await reactor.receive(b, BlockTxs(b"y" * 32, [0], [b"t"]))  # asked of C, not B
    assert consensus.got == [(pub("B"), BlockTxs(b"x" * 32, [0], [b"t"]))]
    assert sync.got == [(pub("C"), BlockTxs(b"y" * 32, [0], [b"t"]))]
    await reactor.receive(d, GetBlockTxs(b"z" * 32, [1]))
    assert d.sent == [BlockTxs(b"z" * 32, [], [])]  # held nowhere: said at once


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
    _, made = source_chain(tmp_path / "data", 1, 4)
    block, commit = made[-1]
    mempool = {block.txs[0].id: block.txs[0]}  # the mempool holds the first
    sent: list[tuple[bytes, GetBlockTxs]] = []
    penalties: list[tuple[bytes, int, str]] = []
    dropped: list[Waiting] = []
    assembler: Assembler[Waiting] = Assembler(
        mempool.get, lambda peer_id, msg: sent.append((peer_id, msg)) or True,
        lambda peer_id, points, reason: penalties.append((peer_id, points, reason)),
        dropped.append, what="block")
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
