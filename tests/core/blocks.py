"""Blocks and certificates for the core tests: authorities A-D, five readings."""

from __future__ import annotations

from iomtnode.core.block import Block, Commit, make_block, sign_commit
from iomtnode.core.crypto import blake2b256
from iomtnode.core.tx import SignedTx

from .helpers import CHAIN_ID, key, pub
from .sealkit import sealed_reading

NAMES = ["A", "B", "C", "D"]
AUTHS = tuple(pub(n) for n in NAMES)
PARENT = blake2b256(b"parent block")
BLOCK_HASH = blake2b256(b"some block")


def reading(seq: int) -> SignedTx:
    return sealed_reading(key("hr1"), seq, 1_000 + seq, CHAIN_ID)


TXS = tuple(reading(s) for s in range(1, 6))


def commit(height: int = 4, round_: int = 0, block_hash: bytes = PARENT,
           names: list[str] | None = None) -> Commit:
    signers = NAMES[:3] if names is None else names
    return sign_commit([key(n) for n in signers], CHAIN_ID, height, round_, block_hash)


def block(**changes: object) -> Block:
    args: dict[str, object] = dict(
        height=5, time_ms=1_700_000_000_000, parent=PARENT, proposer=pub("B"), txs=TXS,
        authorities=AUTHS, last_commit=commit(),
    )
    args.update(changes)
    return make_block(**args)  # type: ignore[arg-type]
