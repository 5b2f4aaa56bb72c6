"""``verify_receipt``: a receipt that lies in one place proves nothing.

Pure: blocks, certificates and receipts are made here, no store. Authorities A, B, C and
D (quorum 3) certify block 1 (three readings) and block 2 (one); the honest receipt is
for the first reading of block 1. Each case changes one thing in it; removing the rule
that refuses it from ``verify_receipt`` lets the receipt verify.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from iomtnode.core import merkle
from iomtnode.core.block import Block, Commit, make_block, sign_commit
from iomtnode.core.genesis import Genesis
from iomtnode.core.receipt import ReceiptError, make_receipt, verify_receipt
from iomtnode.core.tx import SignedTx, stripped

from .helpers import CHAIN_ID, key, pub
from .sealkit import sealed_reading

T0 = 1_700_000_000_000
ABCD = tuple(pub(n) for n in "ABCD")
GENESIS = Genesis(CHAIN_ID, T0, ABCD, 1)


def reading(seq: int) -> SignedTx:
    return sealed_reading(key("hr1"), seq, T0 + seq, CHAIN_ID)


def certify(block: Block, signers: str = "ABC", height: int | None = None) -> Commit:
    return sign_commit([key(n) for n in signers], CHAIN_ID,
                       block.height if height is None else height, 0, block.hash)


BLOCK_1 = make_block(height=1, time_ms=T0 + 1000, parent=bytes(32), proposer=pub("B"),
                     txs=(reading(1), reading(2), reading(3)), authorities=ABCD,
                     last_commit=None)
FORK_1 = make_block(height=1, time_ms=T0 + 1001, parent=bytes(32), proposer=pub("B"),
                    txs=(reading(1),), authorities=ABCD, last_commit=None)  # another block 1
BLOCK_2 = make_block(height=2, time_ms=T0 + 2000, parent=BLOCK_1.hash, proposer=pub("C"),
                     txs=(reading(4),), authorities=ABCD, last_commit=certify(BLOCK_1))


def receipt_of(block: Block, index: int) -> dict[str, Any]:
    proof = merkle.prove([tx.leaf_bytes for tx in block.txs], index)
    return make_receipt(CHAIN_ID, block.txs[index], block.header, block.header_bytes,
                        certify(block), proof)


def honest() -> dict[str, Any]:
    return receipt_of(BLOCK_1, 0)


def with_proof(**change: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc["proof"] = {**doc["proof"], **change}
    return edit


def set_field(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc[name] = value
    return edit


def flip_last_path_hash(doc: dict[str, Any]) -> None:
    path = list(doc["proof"]["path"])
    last = bytearray.fromhex(path[-1])
    last[0] ^= 1
    path[-1] = last.hex()
    doc["proof"] = {**doc["proof"], "path": path}


@dataclass(frozen=True)
class Case:
    id: str
    edit: Callable[[dict[str, Any]], None]
    refused: str


CASES = [
    # the genuine certificate of another block 1 beside block 1's header
    Case("commit-of-another-block", set_field("commit", certify(FORK_1).encode().hex()),
         "commit certificate is for another block"),
    # the genuine certificate of block 2
    Case("commit-of-the-next-block", set_field("commit", certify(BLOCK_2).encode().hex()),
         "commit certificate is for another block"),
    # a genuine certificate of block 1's hash, signed as if at height 2
    Case("commit-of-another-height",
         set_field("commit", certify(BLOCK_1, height=2).encode().hex()),
         "commit certificate is for another block"),
    # a certificate of block 1 by A and B only
    Case("commit-below-quorum", set_field("commit", certify(BLOCK_1, "AB").encode().hex()),
         "commit certificate is invalid: 2 of 4 authorities signed; 3 needed"),
    # the path of leaf 0 of 3 also leads to the root if the tree had 4 leaves (asserted
    # below): only the count against the header's tx_count refuses it
    Case("proof-count-not-tx-count", with_proof(count=4), "proof is for 4 leaves, block has 3"),
    # a sibling hash on the path changed
    Case("merkle-path-changed", flip_last_path_hash,
         "Merkle proof does not lead from the transaction to the header"),
    # the path of leaf 0 given for leaf 1
    Case("merkle-index-moved", with_proof(index=1),
         "Merkle proof does not lead from the transaction to the header"),
    # block 2's (genuinely signed) reading with block 1's path
    Case("another-blocks-transaction", set_field("tx", BLOCK_2.txs[0].leaf_bytes.hex()),
         "Merkle proof does not lead from the transaction to the header"),
    # the readable copies say something else than the bytes prove
    Case("readable-tx-id", set_field("tx_id", reading(2).id.hex()),
         "receipt field 'tx_id' does not match what the proof shows"),
    Case("readable-height", set_field("height", 2),
         "receipt field 'height' does not match what the proof shows"),
    Case("readable-block-hash", set_field("block_hash", BLOCK_2.hash.hex()),
         "receipt field 'block_hash' does not match what the proof shows"),
]


def test_the_honest_receipts_verify() -> None:
    tx, header = verify_receipt(honest(), GENESIS)
    assert (tx.id, header.height) == (reading(1).id, 1)
    for index in (1, 2):
        proven = verify_receipt(receipt_of(BLOCK_1, index), GENESIS)[0]
        assert proven == stripped(BLOCK_1.txs[index])  # a receipt never carries a sidecar
        assert BLOCK_1.txs[index].sidecar and not proven.sidecar
    assert verify_receipt(receipt_of(BLOCK_2, 0), GENESIS)[1].height == 2


def test_the_wrong_count_case_passes_the_merkle_check() -> None:
    """Else the count case would be refused by the path, count rule or not."""
    proof = merkle.prove([tx.leaf_bytes for tx in BLOCK_1.txs], 0)
    assert merkle.verify(BLOCK_1.txs[0].leaf_bytes, merkle.Proof(0, 4, proof.path),
                         BLOCK_1.header.tx_root)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_receipt_that_lies_once_is_refused(case: Case) -> None:
    doc = honest()
    case.edit(doc)
    assert doc != honest()
    with pytest.raises(ReceiptError, match=case.refused):
        verify_receipt(doc, GENESIS)
