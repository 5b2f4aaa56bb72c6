"""Receipts of one block's transactions build its Merkle tree once (``ReceiptTrees``): the
receipts are the same documents as before and verify offline; the kept trees stay within
their byte and tree bounds, the least recently used dropped first; a tree is used only for
the block it was built from, and a stored block that does not match its header is refused."""

from __future__ import annotations

from typing import Any

import pytest

from iomtnode.chain.chain import Chain
from iomtnode.chain.receipts import _handoffs_before
from iomtnode.chain.trees import DamagedBlockError, ReceiptTrees
from iomtnode.core import merkle
from iomtnode.core.block import decode_header
from iomtnode.core.genesis import Genesis
from iomtnode.core.receipt import ReceiptError, make_receipt, verify_receipt
from iomtnode.core.tx import SignedTx, decode_tx, leaf_of, stripped

from ..core.helpers import pub
from .streamkit import GENESIS, T0, erase, reading, seal, stream_chain


@pytest.fixture
def chain(tmp_path):
    chain = stream_chain(tmp_path / "data")
    yield chain
    chain.store.close()


@pytest.fixture
def builds(monkeypatch) -> list[int]:
    """The sizes of the trees built, in order."""
    built: list[int] = []
    real = merkle.levels_of_hashes

    def counting(hashes: list[bytes]) -> merkle.Levels:
        built.append(len(hashes))
        return real(hashes)

    monkeypatch.setattr(merkle, "levels_of_hashes", counting)
    return built


class Readings:
    """New readings of d1 and d2, their sequence numbers going on."""

    def __init__(self) -> None:
        self.seq = {"d1": 0, "d2": 0}

    def __call__(self, n: int) -> list[SignedTx]:
        out = []
        for i in range(n):
            device = ("d1", "d2")[i % 2]
            self.seq[device] += 1
            out.append(reading(device, self.seq[device], T0 + self.seq[device]))
        return out


@pytest.fixture
def readings() -> Readings:
    return Readings()


def rebuilt_receipt(chain: Chain, tx_id: bytes) -> dict[str, Any]:
    """The receipt as it was made before trees were kept: every leaf and the whole tree
    computed again from the stored block."""
    location = chain.store.tx_location(tx_id)
    assert location is not None
    height, index = location
    header_bytes, raws = chain.block_parts_at(height)
    leaves = [leaf_of(raw) for raw in raws]
    commit = chain.commit_at(height)
    assert commit is not None
    return make_receipt(chain.chain_id, decode_tx(leaves[index]), decode_header(header_bytes),
                        header_bytes, commit, merkle.prove(leaves, index),
                        _handoffs_before(chain, height))


def parts(chain: Chain, height: int) -> tuple[bytes, Any, list[bytes]]:
    header_bytes, raws = chain.block_parts_at(height)
    return header_bytes, decode_header(header_bytes), raws


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8])
def test_receipts_of_a_block_build_its_tree_once_and_are_the_same_documents(
        chain, builds, readings, n):
    txs = readings(n)
    seal(chain, txs)
    for tx in [*txs, *reversed(txs)]:
        doc = chain.receipt(tx.id)
        assert doc == rebuilt_receipt(chain, tx.id)
        proven, header = verify_receipt(doc, GENESIS)
        assert proven == stripped(tx) and header.height == chain.height
    assert builds == [n]  # the first receipt built the tree; the others walked it
    assert len(chain.receipt_trees) == 1


def test_receipts_from_a_kept_tree_verify_after_the_sidecars_are_erased(chain, builds, readings):
    txs = readings(5)
    seal(chain, txs)
    height = chain.height
    before = {tx.id: chain.receipt(tx.id) for tx in txs}
    seal(chain, [erase(T0, T0 + 100)])
    chain.store.sidecars.wait_compacted()  # the erasure job has rewritten the block
    assert all(tx.sidecar == b"" for tx in chain.block_at(height).txs)
    for tx in txs:
        assert chain.receipt(tx.id) == before[tx.id] == rebuilt_receipt(chain, tx.id)
        verify_receipt(before[tx.id], GENESIS)
    assert builds == [5]  # built before the erasure, kept and true after it


def test_the_bytes_held_are_bounded_and_the_least_recently_used_tree_goes_first(
        chain, builds, readings):
    for size in (8, 8, 8):
        seal(chain, readings(size))
    heights = [chain.height - 2, chain.height - 1, chain.height]
    one = merkle.levels([b""] * 8).nbytes  # a tree of 8 leaves: 15 hashes
    trees = ReceiptTrees(max_bytes=2 * one, max_blocks=100)
    for height in (heights[0], heights[1], heights[0], heights[2]):
        trees.tree(*parts(chain, height))
    assert len(trees) == 2 and trees.nbytes == 2 * one <= trees.max_bytes
    builds.clear()
    trees.tree(*parts(chain, heights[0]))  # used last but one: kept
    assert builds == []
    trees.tree(*parts(chain, heights[1]))  # the least recently used: dropped, built again
    assert builds == [8]


def test_the_trees_held_are_bounded(chain, builds, readings):
    for size in (1, 2, 3):
        seal(chain, readings(size))
    trees = ReceiptTrees(max_bytes=1 << 20, max_blocks=2)
    for height in (chain.height - 2, chain.height - 1, chain.height):
        trees.tree(*parts(chain, height))
    assert len(trees) == 2
    trees.tree(*parts(chain, chain.height - 2))
    assert builds == [1, 2, 3, 1]


def test_a_tree_larger_than_the_room_is_used_but_not_kept(chain, builds, readings):
    seal(chain, readings(1))
    seal(chain, readings(4))
    trees = ReceiptTrees(max_bytes=merkle.levels([b""] * 4).nbytes - 1)
    builds.clear()
    trees.tree(*parts(chain, chain.height - 1))
    tree = trees.tree(*parts(chain, chain.height))
    assert tree.count == 4 and len(trees) == 1  # and the small tree was not pushed out
    trees.tree(*parts(chain, chain.height - 1))
    assert builds == [1, 4]


def test_a_tree_is_used_only_for_its_own_block(tmp_path, readings):
    # two chains with different blocks at the same height, one set of trees
    a, b = stream_chain(tmp_path / "a"), stream_chain(tmp_path / "b")
    try:
        seal(a, readings(3))
        seal(b, Readings()(2))
        assert a.height == b.height and a.head_hash != b.head_hash
        trees = ReceiptTrees()
        tree_a = trees.tree(*parts(a, a.height))
        tree_b = trees.tree(*parts(b, b.height))
        assert tree_a.root == a.head.header.tx_root != tree_b.root == b.head.header.tx_root
        assert len(trees) == 2
    finally:
        a.store.close()
        b.store.close()


def test_a_stored_block_that_does_not_match_its_header_is_refused(chain, readings):
    txs = readings(3)
    seal(chain, txs)
    header_bytes, header, raws = parts(chain, chain.height)
    trees = ReceiptTrees()
    other = readings(1)[0].raw
    for wrong in (raws[:-1], [*raws[:-1], other], [raws[1], raws[0], raws[2]]):
        with pytest.raises(DamagedBlockError):
            trees.tree(header_bytes, header, wrong)
    assert len(trees) == 0
    trees.tree(header_bytes, header, raws)
    assert len(trees) == 1


def test_a_receipt_is_refused_when_its_transaction_is_not_the_kept_tree_s(chain, readings,
                                                                        monkeypatch):
    txs = readings(3)
    seal(chain, txs)
    height = chain.height
    chain.receipt(txs[0].id)  # the tree is kept
    header_bytes, raws = chain.block_parts_at(height)
    swapped = [raws[1], raws[0], raws[2]]
    monkeypatch.setattr(chain, "block_parts_at", lambda h: (header_bytes, swapped))
    with pytest.raises(DamagedBlockError):
        chain.receipt(txs[0].id)  # would carry transaction 1 with the proof of leaf 0
    assert verify_receipt(chain.receipt(txs[2].id), GENESIS)[0] == stripped(txs[2])


def test_a_receipt_checked_against_another_network_s_genesis_says_so(chain, readings):
    """Two networks may share a chain id (every `iomtnode init` makes "iomt-local"): a
    receipt checked against the other's genesis.json names that, not only a missing handoff."""
    tx, = readings(1)
    seal(chain, [tx])
    other = Genesis(GENESIS.chain_id, GENESIS.time_ms, (pub("Z"),), 1)
    with pytest.raises(ReceiptError, match=r"receipt is of another network .*, or a handoff"):
        verify_receipt(chain.receipt(tx.id), other)
