"""A block may carry transactions without their sidecars (a node that erased them, or never
received them, still serves and checks the chain), and a node's chain answers receipts that
verify whether or not the stored block kept the sidecar."""

from __future__ import annotations

from iomtnode.chain.chain import Chain
from iomtnode.core.receipt import verify_receipt
from iomtnode.core.tx import stripped
from iomtnode.store import BlockStore

from ..admission.chainkit import GENESIS, reading, seal, seal_unchecked, source_chain


def test_a_block_of_stripped_readings_is_valid_and_has_the_same_hash(tmp_path):
    source, made = source_chain(tmp_path / "source", blocks=0, per_block=0)
    with BlockStore.open(tmp_path / "other") as store:
        other = Chain(store, GENESIS)
        for block, commit in made:
            other.commit(other.check(block, commit), commit)
        full = [reading("d1", 1), reading("d2", 1)]
        block, commit = seal_unchecked(source, tuple(full))
        bare, _ = seal_unchecked(source, tuple(stripped(tx) for tx in full))
        assert bare.hash == block.hash and bare.encode() != block.encode()
        other.commit(other.check(bare, commit), commit)  # the rules read only bodies
        assert other.head.hash == block.hash
        for tx in full:
            proven, header = verify_receipt(other.receipt(tx.id), GENESIS)
            assert proven == stripped(tx) and header.height == 2
    source.store.close()


def test_receipts_of_a_block_stored_with_its_sidecars_verify(tmp_path):
    chain, _ = source_chain(tmp_path / "data", blocks=0, per_block=0)
    try:
        txs = [reading("d1", 1), reading("d3", 1)]
        seal(chain, txs)
        for tx in txs:
            doc = chain.receipt(tx.id)
            assert doc["tx"] == tx.leaf_bytes.hex()  # never the sidecar
            assert verify_receipt(doc, GENESIS)[0] == stripped(tx)
    finally:
        chain.store.close()
