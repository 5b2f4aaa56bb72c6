"""Whom the assembler blames when fetched transactions do not give the header's root, and
how it takes a source's answers to requests it repeated (:mod:`iomtnode.admission.assembly`).
A transaction id covers the body only, so a source can answer the right ids with forged
signature bytes: that source pays, not the peer whose compact block was used."""

from __future__ import annotations

from dataclasses import dataclass, field

from iomtnode.admission.assembly import Assembler
from iomtnode.admission.messages import BlockTxs, GetBlockTxs
from iomtnode.admission.verify import Verifier
from iomtnode.core import codec
from iomtnode.core.tx import SignedTx, decode_tx
from iomtnode.p2p import score
from iomtnode.sync.blockrelay import compact
from iomtnode.sync.messages import CompactBlock

from ..core.helpers import pub
from .chainkit import source_chain
from .test_blocktxs import Waiting


def forged(tx: SignedTx) -> SignedTx:
    """The same transaction (same id, same sidecar) with signature bytes nobody signed."""
    parts = [tx.body_bytes, bytes(64), tx.sidecar] if tx.sidecar else [tx.body_bytes, bytes(64)]
    return decode_tx(codec.encode(parts))


@dataclass
class Net:
    sent: list[tuple[bytes, GetBlockTxs]] = field(default_factory=list)
    penalties: list[tuple[bytes, int]] = field(default_factory=list)
    dropped: list = field(default_factory=list)

    def assembler(self, chain, mempool: dict) -> Assembler[Waiting]:
        return Assembler(mempool.get, lambda peer_id, msg: self.sent.append((peer_id, msg))
                         or True, lambda peer_id, points, reason: self.penalties.append(
                             (peer_id, points)), self.dropped.append,
                         verify=Verifier(chain.chain_id).verify_now, what="block",
                         bad_ids_points=score.INVALID_BLOCK)


def answer(block, indexes, txs=None) -> BlockTxs:
    return BlockTxs(block.hash, indexes, [(txs or block.txs)[i].raw for i in indexes])


async def test_a_source_answering_forged_signatures_pays_and_the_origin_completes_the_block(
        tmp_path, autojump_clock):
    chain, made = source_chain(tmp_path / "data", 1, 4)
    block, commit = made[-1]
    net = Net()
    assembler = net.assembler(chain, {block.txs[0].id: block.txs[0]})
    msg = compact(block, commit)
    assert assembler.fill(block.hash, Waiting(pub("B"), msg, b"k1", 2), block.last_commit) is None
    assembler.add_source(b"k1", pub("C"), msg)
    assembler.tick(assembler.deadline())  # B is slow: C is asked
    assert net.sent[-1] == (pub("C"), GetBlockTxs(block.hash, [1, 2, 3]))
    bad = [None, *(forged(tx) for tx in block.txs[1:])]
    assert assembler.on_txs(pub("C"), answer(block, [1, 2, 3], bad)) is None
    assert net.penalties == [(pub("C"), score.BAD_SIGNATURE)]  # not B, the origin
    assert net.sent[-1] == (pub("B"), GetBlockTxs(block.hash, [1, 2, 3]))  # asked again
    assembler.add_source(b"k1", pub("C"), msg)  # C is never asked again
    whole = assembler.on_txs(pub("B"), answer(block, [1, 2, 3]))
    assert whole is not None and whole[0].hash == block.hash
    assert len(net.penalties) == 1 and net.dropped == []


async def test_ids_not_those_of_the_block_cost_the_origin_when_it_sent_every_transaction(
        tmp_path):
    chain, made = source_chain(tmp_path / "data", 1, 4)
    block, commit = made[-1]
    net = Net()
    assembler = net.assembler(chain, {})
    real = compact(block, commit)
    swapped = [block.txs[1], block.txs[0], *block.txs[2:]]  # validly signed, wrong order
    msg = CompactBlock(real.header, [tx.id for tx in swapped], real.last_commit, real.commit)
    assert assembler.fill(block.hash, Waiting(pub("B"), msg, b"k1", 2), block.last_commit) is None
    assert assembler.on_txs(pub("B"), answer(block, [0, 1, 2, 3], swapped)) is None
    assert net.penalties == [(pub("B"), score.INVALID_BLOCK)]
    assert [w.key for w in net.dropped] == [b"k1"] and len(assembler) == 0


async def test_a_source_asked_again_answers_both_requests_in_order_without_a_charge(
        tmp_path):
    """A mempool copy with other bytes (same id) makes every transaction fetched again:
    the source asked first answers its first request, then the second, which repeats
    what the first filled; the block is whole once the second is taken."""
    chain, made = source_chain(tmp_path / "data", 1, 4)
    block, commit = made[-1]
    net = Net()
    assembler = net.assembler(chain, {block.txs[0].id: forged(block.txs[0])})
    msg = compact(block, commit)
    assert assembler.fill(block.hash, Waiting(pub("B"), msg, b"k1", 2), block.last_commit) is None
    assembler.add_source(b"k1", pub("C"), msg)
    assembler.tick(assembler.deadline())  # B is slow: C is asked
    assert assembler.on_txs(pub("C"), answer(block, [1, 2, 3])) is None  # root fails
    assert net.sent[-1] == (pub("B"), GetBlockTxs(block.hash, [0, 1, 2, 3]))
    assert assembler.on_txs(pub("B"), answer(block, [1, 2, 3])) is None  # its first request
    whole = assembler.on_txs(pub("B"), answer(block, [0, 1, 2, 3]))
    assert whole is not None and whole[0].hash == block.hash
    assert net.penalties == [] and net.dropped == []


async def test_a_wrong_answer_that_leaves_nothing_missing_completes_the_block_at_once(
        tmp_path):
    chain, made = source_chain(tmp_path / "data", 1, 4)
    block, commit = made[-1]
    net = Net()
    assembler = net.assembler(chain, {})
    msg = compact(block, commit)
    assert assembler.fill(block.hash, Waiting(pub("B"), msg, b"k1", 2), block.last_commit) is None
    assembler.add_source(b"k1", pub("C"), msg)
    wrong = BlockTxs(block.hash, [0, 1, 2, 3, 3],
                     [tx.raw for tx in block.txs] + [block.txs[2].raw])
    whole = assembler.on_txs(pub("B"), wrong)  # 3 given twice, the second time wrong
    assert whole is not None and whole[0].hash == block.hash
    assert net.penalties == [(pub("B"), score.INVALID_MESSAGE)]
    assert net.sent == [(pub("B"), GetBlockTxs(block.hash, [0, 1, 2, 3]))]  # nobody asked again


async def test_wrong_ids_that_a_later_source_answered_drop_the_block_and_charge_nobody(
        tmp_path, autojump_clock):
    """Both senders sent the same wrong ids, and the transactions came from the second,
    all validly signed: nobody can be singled out, so the block is only dropped."""
    chain, made = source_chain(tmp_path / "data", 1, 4)
    block, commit = made[-1]
    net = Net()
    assembler = net.assembler(chain, {})
    real = compact(block, commit)
    swapped = [block.txs[1], block.txs[0], *block.txs[2:]]
    msg = CompactBlock(real.header, [tx.id for tx in swapped], real.last_commit, real.commit)
    assert assembler.fill(block.hash, Waiting(pub("B"), msg, b"k1", 2), block.last_commit) is None
    assembler.add_source(b"k1", pub("C"), msg)
    assembler.tick(assembler.deadline())  # B is slow: C is asked
    assert assembler.on_txs(pub("C"), answer(block, [0, 1, 2, 3], swapped)) is None
    assert net.penalties == [] and [w.key for w in net.dropped] == [b"k1"]
