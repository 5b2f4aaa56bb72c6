"""A one-authority chain on real LevelDB with a patient's stream: devices admitted to it,
its first epoch announced, readings of every size class, grants and erasures."""

from __future__ import annotations

from pathlib import Path

from iomtnode.chain.chain import Chain
from iomtnode.core import codec
from iomtnode.core.block import Block, Commit, sign_commit
from iomtnode.core.fields import U64_MAX
from iomtnode.core.genesis import Genesis
from iomtnode.core.payload import commitment, sidecar_bytes, wrap_hash, wraps_hash
from iomtnode.core.tx import (
    FORWARD,
    EpochAnnounce,
    Erase,
    Grant,
    Reading,
    RevokeGrant,
    SignedTx,
    sign_tx,
)
from iomtnode.store import BlockStore

from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import EPOCH_PUBLIC, admit, announce, sealed_reading

T0 = 1_700_000_000_000
GENESIS = Genesis(CHAIN_ID, T0, (pub("A"),), 1)
STREAM = key("S")  # the patient's stream key
DEVICES = ("d1", "d2")


def seal(chain: Chain, txs: list[SignedTx]) -> tuple[Block, Commit]:
    """Build, certify and commit the next block of ``chain`` from ``txs``."""
    built = chain.build(txs, pub("A"), T0 + 1000 * (chain.height + 1))
    assert not built.rejected, built.rejected
    commit = sign_commit([key("A")], CHAIN_ID, built.block.height, 0, built.block.hash)
    chain.commit(built, commit)
    return built.block, commit


def stream_chain(path: Path) -> Chain:
    """A chain whose block 1 admits the devices to STREAM and block 2 announces epoch 1."""
    chain = Chain(BlockStore.open(path), GENESIS)
    seal(chain, [admit(key("A"), pub(d), STREAM.public, CHAIN_ID) for d in DEVICES])
    seal(chain, [announce(STREAM, CHAIN_ID)])
    return chain


def reading(device: str, seq: int, ts_ms: int, epoch: int = 1) -> SignedTx:
    """A class 0 reading with its 128-byte sidecar."""
    return sealed_reading(key(device), seq, ts_ms, CHAIN_ID, epoch=epoch)


def blob_for(device: str, seq: int, size_class: int = 1) -> bytes:
    seed = pub(device) + seq.to_bytes(8, "big")
    return (seed * (sidecar_bytes(size_class) // len(seed) + 1))[:sidecar_bytes(size_class)]


def blob_reading(device: str, seq: int, ts_ms: int, blob: bytes, size_class: int = 1,
                 epoch: int = 1) -> SignedTx:
    """A class 1 or 2 reading naming ``blob`` (which travels apart from it)."""
    body = Reading(pub(device), seq, ts_ms, epoch, size_class, commitment(blob))
    return sign_tx(body, key(device), CHAIN_ID)


def grant(grantee: str, epoch: int = 1, nonce: int = 1, mode: int = FORWARD) -> SignedTx:
    wrap = b"wrap for " + grantee.encode() + epoch.to_bytes(8, "big")
    body = Grant(STREAM.public, pub(grantee), EPOCH_PUBLIC, U64_MAX - 1, epoch, mode,
                 wrap_hash(wrap), nonce)
    return sign_tx(body, STREAM, CHAIN_ID, wrap)


def epoch_wraps(grantees: list[str], epoch: int) -> tuple[list[bytes], bytes]:
    pairs = sorted((pub(g), b"epoch wrap " + g.encode() + epoch.to_bytes(8, "big"))
                   for g in grantees)
    return [p[0] for p in pairs], codec.encode([list(p) for p in pairs])


def epoch(grantees: list[str], number: int) -> SignedTx:
    names, wraps = epoch_wraps(grantees, number)
    body = EpochAnnounce(STREAM.public, number, EPOCH_PUBLIC, names, wraps_hash(wraps))
    return sign_tx(body, STREAM, CHAIN_ID, wraps)


def revoke(grantee: str, remaining: list[str], number: int, nonce: int = 1) -> SignedTx:
    names, wraps = epoch_wraps(remaining, number)
    body = RevokeGrant(STREAM.public, pub(grantee), nonce, number, EPOCH_PUBLIC, names,
                       wraps_hash(wraps))
    return sign_tx(body, STREAM, CHAIN_ID, wraps)


def erase(since_ms: int = 0, until_ms: int = U64_MAX, nonce: int = 1) -> SignedTx:
    return sign_tx(Erase(STREAM.public, STREAM.public, since_ms, until_ms, b"", nonce), STREAM,
                   CHAIN_ID)
