"""Receipts: a proof, checkable offline, that a transaction is in a finalized block.

A receipt holds the signed transaction, the header of its block, that block's commit
certificate and the Merkle path from the transaction to the header's ``tx_root``. All
of them are carried as their exact wire bytes (hex in JSON); the readable fields beside
them are for people and are never trusted by :func:`verify_receipt`.

Authority changes: the verifier trusts the genesis authorities. When governance changed
the set before the transaction's block, the receipt also carries one *handoff* per
change: the header of the last block of the old set (its ``next_authorities_hash`` names
the new set), that block's certificate by the old set, and the new set. The verifier
walks them in order from the genesis set, so each new set is vouched for by a quorum of
the one before. (Like any light client, it cannot tell whether a receipt left out a
later handoff: a quorum of a *former* authority set could sign a false block. Keep
authority keys of retired authorities destroyed.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import merkle
from .block import (
    Commit,
    Header,
    InvalidCommitError,
    MalformedBlockError,
    authorities_hash,
    decode_commit,
    decode_header,
)
from .crypto import BadSignatureError, blake2b256
from .genesis import Genesis
from .tx import MalformedTxError, SignedTx, decode_tx, tx_to_json

RECEIPT_VERSION = 2  # 2: handoffs across authority-set changes
MAX_PROOF_PATH = merkle.MAX_PROOF_DEPTH
MAX_HANDOFFS = 1024  # authority-set changes a receipt may walk through
MAX_AUTHORITIES = 1024  # keys in one handoff's authority set


class ReceiptError(ValueError):
    """A receipt that does not prove what it claims; the message says which check failed."""


@dataclass(frozen=True, slots=True)
class Handoff:
    """The last block certified by one authority set, and the set that follows it."""

    header_bytes: bytes
    commit: Commit
    next_authorities: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {"header": self.header_bytes.hex(), "commit": self.commit.encode().hex(),
                "next_authorities": [a.hex() for a in self.next_authorities]}


def make_receipt(
    chain_id: str, tx: SignedTx, header: Header, header_bytes: bytes, commit: Commit,
    proof: merkle.Proof, handoffs: tuple[Handoff, ...] = (),
) -> dict[str, Any]:
    return {
        "version": RECEIPT_VERSION,
        "chain_id": chain_id,
        "height": header.height,
        "block_hash": blake2b256(header_bytes).hex(),
        "tx_id": tx.id.hex(),
        "tx": tx.leaf_bytes.hex(),  # never the sidecar (served only with consent)
        "header": header_bytes.hex(),
        "commit": commit.encode().hex(),
        "proof": {"index": proof.index, "count": proof.count,
                  "path": [h.hex() for h in proof.path]},
        "handoffs": [h.to_json() for h in handoffs],
        "transaction": tx_to_json(tx),
    }


def _hex(doc: dict[str, Any], name: str) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str):
        raise ReceiptError(f"receipt field {name!r} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ReceiptError(f"receipt field {name!r} is not valid hex") from None


def verify_receipt(doc: Any, genesis: Genesis) -> tuple[SignedTx, Header]:
    """Check a receipt against a genesis; return the proven transaction and its header.

    Raises :class:`ReceiptError` naming the first check that failed: structure, the
    transaction's signature, its Merkle path to the header, the header's authority set,
    or the commit certificate (a quorum of that authority set precommitted this header).
    """
    if not isinstance(doc, dict) or doc.get("version") != RECEIPT_VERSION:
        raise ReceiptError(f"not a version {RECEIPT_VERSION} receipt")
    if doc.get("chain_id") != genesis.chain_id:
        raise ReceiptError(
            f"receipt is for chain {doc.get('chain_id')!r}, genesis is {genesis.chain_id!r}"
        )
    try:
        tx = decode_tx(_hex(doc, "tx"))
        header_bytes = _hex(doc, "header")
        header = decode_header(header_bytes)
        commit = decode_commit(_hex(doc, "commit"))
    except (MalformedTxError, MalformedBlockError) as exc:
        raise ReceiptError(f"malformed receipt: {exc}") from None
    try:
        tx.verify(genesis.chain_id)
    except BadSignatureError as exc:
        raise ReceiptError(f"transaction signature is invalid: {exc}") from None
    proof = _proof(doc.get("proof"))
    if proof.count != header.tx_count:
        raise ReceiptError(f"proof is for {proof.count} leaves, block has {header.tx_count}")
    if not merkle.verify(tx.leaf_bytes, proof, header.tx_root):
        raise ReceiptError("Merkle proof does not lead from the transaction to the header")
    authorities = _walk_handoffs(doc.get("handoffs", []), genesis, header.height)
    if header.authorities_hash != authorities_hash(authorities):
        raise ReceiptError(
            "block is certified by an authority set the receipt does not lead to from the "
            "genesis authorities: the receipt is of another network (another genesis with "
            f"chain id {genesis.chain_id}), or a handoff is missing"
        )
    block_hash = _certified(header_bytes, header, commit, authorities, genesis.chain_id,
                            "commit certificate")
    # the readable copies must say what the bytes proved, or the receipt is a lie
    for name, proven in (("tx_id", tx.id.hex()), ("height", header.height),
                         ("block_hash", block_hash.hex())):
        if name in doc and doc[name] != proven:
            raise ReceiptError(f"receipt field {name!r} does not match what the proof shows")
    return tx, header


def _certified(header_bytes: bytes, header: Header, commit: Commit,
               authorities: tuple[bytes, ...], chain_id: str, what: str) -> bytes:
    """Check that ``commit`` is a quorum of ``authorities`` for this header; its hash."""
    block_hash = blake2b256(header_bytes)
    if commit.block_hash != block_hash or commit.height != header.height:
        raise ReceiptError(f"{what} is for another block")
    try:
        commit.verify(authorities, chain_id)
    except InvalidCommitError as exc:
        raise ReceiptError(f"{what} is invalid: {exc}") from None
    return block_hash


def _walk_handoffs(value: Any, genesis: Genesis, height: int) -> tuple[bytes, ...]:
    """The authority set the handoffs lead to from the genesis set, each checked."""
    if not isinstance(value, list) or len(value) > MAX_HANDOFFS:
        raise ReceiptError(f"receipt field 'handoffs' must be a list of at most {MAX_HANDOFFS}")
    authorities, last = genesis.authorities, -1
    for n, item in enumerate(value):
        what = f"handoff {n}"
        if not isinstance(item, dict):
            raise ReceiptError(f"{what} must be an object")
        keys = item.get("next_authorities")
        if (not isinstance(keys, list) or not 1 <= len(keys) <= MAX_AUTHORITIES
                or not all(isinstance(k, str) for k in keys)):
            raise ReceiptError(f"{what}: next_authorities must be a list of hex keys")
        try:
            header_bytes = _hex(item, "header")
            header = decode_header(header_bytes)
            commit = decode_commit(_hex(item, "commit"))
            following = tuple(bytes.fromhex(k) for k in keys)
        except (MalformedBlockError, ValueError) as exc:
            raise ReceiptError(f"{what} is malformed: {exc}") from None
        if not last < header.height < height:
            raise ReceiptError(f"{what} is at height {header.height}, out of order")
        if header.authorities_hash != authorities_hash(authorities):
            raise ReceiptError(f"{what} is not certified by the set the earlier ones lead to")
        _certified(header_bytes, header, commit, authorities, genesis.chain_id,
                   f"{what} certificate")
        if header.next_authorities_hash != authorities_hash(following):
            raise ReceiptError(f"{what}: the header names another next authority set")
        authorities, last = following, header.height
    return authorities


def _proof(value: Any) -> merkle.Proof:
    if not isinstance(value, dict):
        raise ReceiptError("receipt field 'proof' must be an object")
    index, count, path = value.get("index"), value.get("count"), value.get("path")
    if type(index) is not int or type(count) is not int or not isinstance(path, list):
        raise ReceiptError("proof needs integer index and count and a path list")
    if len(path) > MAX_PROOF_PATH or not all(isinstance(h, str) for h in path):
        raise ReceiptError("proof path must be at most 64 hex hashes")
    try:
        hashes = tuple(bytes.fromhex(h) for h in path)
    except ValueError:
        raise ReceiptError("proof path holds invalid hex") from None
    return merkle.Proof(index, count, hashes)
