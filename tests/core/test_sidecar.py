"""Sidecars: what travels beside a signed transaction and is checked against the hash its body
holds, but is covered by no block hash (docs/privacy.md, section 5).

A node refuses a sidecar of the wrong size (1026) or that does not match its body (1027), a
sidecar on a kind that has none, and a submitted transaction without the sidecar its kind
needs; a block may carry transactions without their sidecars (erased, or never received),
and stripping one changes no leaf, no ``tx_root``, no block hash, and no receipt.
"""

from __future__ import annotations

import pytest

from iomtnode.admission.mempool import Mempool
from iomtnode.core import codec, merkle
from iomtnode.core import errors as e
from iomtnode.core.block import Block, MalformedBlockError, decode_block, make_block, sign_commit
from iomtnode.core.crypto import blake2b256
from iomtnode.core.genesis import Genesis
from iomtnode.core.payload import commitment, sidecar_bytes, wrap_hash, wraps_hash
from iomtnode.core.receipt import make_receipt, verify_receipt
from iomtnode.core.tx import (
    MAX_WRAPPED_KEY_BYTES,
    AuthorityVote,
    EpochAnnounce,
    Grant,
    Reading,
    SidecarError,
    SignedTx,
    UnpaddedSidecarError,
    decode_tx,
    has_sidecar,
    leaf_of,
    sign_tx,
    stripped,
    with_sidecar,
)

from .helpers import CHAIN_ID, key, pub
from .sealkit import announce, sealed_reading, sidecar_for

T0 = 1_700_000_000_000
WRAP = b"w" * 80


def envelope(tx: SignedTx, sidecar: bytes) -> bytes:
    """``tx``'s body and signature with ``sidecar`` beside them, unchecked."""
    return codec.encode([tx.body_bytes, tx.signature, sidecar])


def granted(wrap: bytes = WRAP) -> SignedTx:
    body = Grant(pub("P"), pub("G"), blake2b256(b"box"), T0 + 10**9, 1, 0, wrap_hash(wrap), 0)
    return sign_tx(body, key("P"), CHAIN_ID, wrap)


def epoch_for(grantees: list[str]) -> SignedTx:
    """Epoch 2 of stream P wrapped for ``grantees``, with its wraps beside it."""
    keys = sorted(pub(g) for g in grantees)
    wraps = codec.encode([[k, WRAP] for k in keys])
    body = EpochAnnounce(pub("P"), 2, blake2b256(b"x"), keys, wraps_hash(wraps))
    return sign_tx(body, key("P"), CHAIN_ID, wraps)


def refused_by_mempool(raw: bytes, code: type[e.RuleError]) -> str:
    with pytest.raises(e.RuleError) as info:
        Mempool.decode(raw)
    assert type(info.value) is code, info.value
    return str(info.value)


# each kind's sidecar ------------------------------------------------------------------------


def test_a_reading_of_class_0_carries_its_128_byte_sidecar_beside_the_leaf() -> None:
    tx = sealed_reading(key("hr1"), 1, T0, CHAIN_ID)
    assert len(tx.sidecar) == sidecar_bytes(0) == 128
    assert codec.decode(tx.raw) == [tx.body_bytes, tx.signature, tx.sidecar]
    assert codec.decode(tx.leaf_bytes) == [tx.body_bytes, tx.signature]
    assert tx.body.commitment == commitment(tx.sidecar)
    assert decode_tx(tx.raw, complete=True) == tx
    assert has_sidecar(tx.body)


@pytest.mark.parametrize("size", [0, 1, 127, 129, 300])
def test_a_reading_sidecar_of_another_size_is_unpadded_1026(size: int) -> None:
    tx = sealed_reading(key("hr1"), 1, T0, CHAIN_ID)
    side = (tx.sidecar * 200)[:size]
    if size == 0:
        with pytest.raises(UnpaddedSidecarError, match="none was sent"):
            decode_tx(tx.leaf_bytes, complete=True)
        refused_by_mempool(tx.leaf_bytes, e.UnpaddedPayloadError)
        return
    raw = envelope(tx, side)
    with pytest.raises(UnpaddedSidecarError):
        decode_tx(raw)
    refused_by_mempool(raw, e.UnpaddedPayloadError)


def test_a_reading_sidecar_that_does_not_match_its_commitment_is_1027() -> None:
    tx = sealed_reading(key("hr1"), 1, T0, CHAIN_ID)
    other = sidecar_for(pub("hr1"), 2)
    assert len(other) == len(tx.sidecar) and other != tx.sidecar
    with pytest.raises(SidecarError) as info:
        decode_tx(envelope(tx, other))
    assert type(info.value) is SidecarError
    refused_by_mempool(envelope(tx, other), e.CommitmentMismatchError)
    with pytest.raises(SidecarError):
        with_sidecar(stripped(tx), other)


def test_a_reading_of_a_larger_class_keeps_its_payload_off_the_envelope() -> None:
    side = sidecar_for(pub("hr1"), 1, size_class=1)
    body = Reading(pub("hr1"), 1, T0, 1, 1, commitment(side))
    tx = sign_tx(body, key("hr1"), CHAIN_ID)
    assert not has_sidecar(body) and not tx.sidecar
    assert Mempool.decode(tx.raw) == tx  # complete without one: its blob is in the store
    with pytest.raises(UnpaddedSidecarError, match="blob store"):
        decode_tx(envelope(tx, b"\x00" * 128))


def test_a_grant_wrap_must_hash_to_its_wrap_hash() -> None:
    tx = granted()
    assert tx.sidecar == WRAP and decode_tx(tx.raw, complete=True) == tx
    with pytest.raises(SidecarError, match="wrap_hash") as info:
        decode_tx(envelope(tx, WRAP[:-1] + b"x"))
    assert type(info.value) is SidecarError
    refused_by_mempool(envelope(tx, WRAP[:-1] + b"x"), e.CommitmentMismatchError)
    refused_by_mempool(tx.leaf_bytes, e.UnpaddedPayloadError)  # submitted without its wrap


def test_a_grant_wrap_over_the_limit_is_refused() -> None:
    big = b"w" * (MAX_WRAPPED_KEY_BYTES + 1)
    with pytest.raises(UnpaddedSidecarError, match="at most"):
        granted(big)
    granted(b"w" * MAX_WRAPPED_KEY_BYTES)


def test_epoch_wraps_must_name_exactly_the_bodys_grantees() -> None:
    tx = epoch_for(["G", "H"])
    assert decode_tx(tx.raw, complete=True) == tx
    for named in (["G"], ["G", "X"], ["G", "H", "X"]):
        # the wraps hash to the body's wraps_hash, but name other grantees
        keys = sorted(pub(g) for g in named)
        wraps = codec.encode([[k, WRAP] for k in keys])
        body = EpochAnnounce(pub("P"), 2, blake2b256(b"x"), sorted(pub(g) for g in ["G", "H"]),
                             wraps_hash(wraps))
        bare = sign_tx(body, key("P"), CHAIN_ID)
        with pytest.raises(SidecarError, match="exactly the body's grantees"):
            decode_tx(envelope(bare, wraps))
        refused_by_mempool(envelope(bare, wraps), e.CommitmentMismatchError)
    with pytest.raises(SidecarError, match="wraps_hash"):
        decode_tx(envelope(tx, codec.encode([])))


def test_epoch_wraps_that_are_not_pairs_of_grantee_and_wrap_are_refused() -> None:
    for wraps in (codec.encode([[pub("G")]]), codec.encode([[b"k", WRAP]]), codec.encode(7),
                  codec.encode([[pub("G"), b"w" * (MAX_WRAPPED_KEY_BYTES + 1)]])):
        body = EpochAnnounce(pub("P"), 2, blake2b256(b"x"), [pub("G")], wraps_hash(wraps))
        bare = sign_tx(body, key("P"), CHAIN_ID)
        with pytest.raises(SidecarError, match="epoch wraps"):
            decode_tx(envelope(bare, wraps))


def test_a_sidecar_on_a_kind_that_has_none_is_refused() -> None:
    tx = sign_tx(AuthorityVote(pub("A"), pub("B"), True, 0), key("A"), CHAIN_ID)
    assert not has_sidecar(tx.body)
    assert Mempool.decode(tx.raw) == tx
    with pytest.raises(UnpaddedSidecarError, match="has no sidecar"):
        decode_tx(envelope(tx, b"anything"))
    refused_by_mempool(envelope(tx, b"anything"), e.UnpaddedPayloadError)


def test_an_empty_sidecar_is_left_out_not_sent() -> None:
    tx = sealed_reading(key("hr1"), 1, T0, CHAIN_ID)
    refused_by_mempool(envelope(tx, b""), e.MalformedTxRuleError)


# leaves and stripping -----------------------------------------------------------------------


def _every_form() -> list[SignedTx]:
    reading = sealed_reading(key("hr1"), 1, T0, CHAIN_ID)
    big = epoch_for([f"G{i}" for i in range(8)])  # a sidecar over 255 bytes: bin 16
    assert len(big.sidecar) > 255
    vote = sign_tx(AuthorityVote(pub("A"), pub("B"), True, 0), key("A"), CHAIN_ID)
    return [reading, stripped(reading), granted(), big, stripped(big), vote,
            announce(key("P"), CHAIN_ID)]


@pytest.mark.parametrize("tx", _every_form(), ids=lambda tx: f"{tx.kind_name}-{len(tx.sidecar)}")
def test_leaf_of_raw_is_the_leaf(tx: SignedTx) -> None:
    assert leaf_of(tx.raw) == tx.leaf_bytes == codec.encode([tx.body_bytes, tx.signature])
    assert decode_tx(leaf_of(tx.raw)) == stripped(tx)


def test_stripping_keeps_the_id_body_and_signature() -> None:
    tx = sealed_reading(key("hr1"), 1, T0, CHAIN_ID)
    bare = stripped(tx)
    assert (bare.id, bare.body, bare.signature, bare.raw) == (
        tx.id, tx.body, tx.signature, tx.leaf_bytes)
    assert bare.sidecar == b"" and bare.leaf_bytes == tx.leaf_bytes
    assert with_sidecar(bare, tx.sidecar) == tx
    bare.verify(CHAIN_ID)


# blocks and receipts with and without sidecars ----------------------------------------------

GENESIS = Genesis(CHAIN_ID, T0, (pub("A"),), 1)


def _blocks() -> tuple[list[SignedTx], Block, Block]:
    txs = [sealed_reading(key("hr1"), s, T0 + s, CHAIN_ID) for s in range(1, 4)] + [granted()]
    def block(txs: tuple[SignedTx, ...]) -> Block:
        return make_block(height=1, time_ms=T0 + 1000, parent=bytes(32), proposer=pub("A"),
                          txs=txs, authorities=(pub("A"),), last_commit=None)

    full, bare = block(tuple(txs)), block(tuple(stripped(tx) for tx in txs))
    return txs, full, bare


def test_stripping_sidecars_changes_no_leaf_root_or_block_hash() -> None:
    txs, full, bare = _blocks()
    assert full.hash == bare.hash
    assert full.header.tx_root == merkle.root([tx.leaf_bytes for tx in txs])
    assert full.encode() != bare.encode()
    # a block carries complete or stripped transactions; both decode to the same block hash
    assert decode_block(full.encode()).txs == full.txs
    assert decode_block(bare.encode()).txs == tuple(stripped(tx) for tx in txs)
    assert decode_block(bare.encode()).hash == full.hash


def test_a_block_whose_sidecar_is_another_than_committed_is_refused() -> None:
    txs, full, _ = _blocks()
    header, raws, commit = codec.decode(full.encode())
    raws[0] = envelope(txs[0], sidecar_for(pub("hr1"), 9))
    with pytest.raises(MalformedBlockError, match="commitment"):
        decode_block(codec.encode([header, raws, commit]))


def test_a_receipt_verifies_with_or_without_the_sidecar() -> None:
    txs, full, bare = _blocks()
    commit = sign_commit([key("A")], CHAIN_ID, 1, 0, full.hash)
    for block in (full, bare):
        leaves = [tx.leaf_bytes for tx in block.txs]
        for index, tx in enumerate(block.txs):
            doc = make_receipt(CHAIN_ID, tx, block.header, block.header_bytes,
                               commit, merkle.prove(leaves, index))
            proven, header = verify_receipt(doc, GENESIS)
            assert proven == stripped(txs[index]) and header.height == 1
            assert doc["tx"] == txs[index].leaf_bytes.hex()  # never the sidecar
