"""Transactions of rules version 3 for tests: sealed readings (a sidecar of the right size
whose commitment matches; the node cannot tell it from a real ciphertext), admissions to a
stream, and a stream's epoch announcement. Real sealing is tested in tests/patient."""

from __future__ import annotations

from collections.abc import Sequence

from iomtnode.core import codec
from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.core.payload import commitment, profile_hash, sidecar_bytes, wrap_hash, wraps_hash
from iomtnode.core.tx import (
    FORWARD,
    AdmitDevice,
    EpochAnnounce,
    Grant,
    Reading,
    RevokeGrant,
    SignedTx,
    sign_tx,
)

NO_WRAPS = codec.encode([])
EPOCH_PUBLIC = blake2b256(b"a test epoch key")  # any 32 bytes but zero: nodes cannot tell
PROFILE = profile_hash(bytes(16), "wearable", "acme")
WRAP_BYTES = 123  # a sealed box of [stream, epoch, mode, secret] (docs/privacy.md, section 3)


def sidecar_for(device: bytes, seq: int, size_class: int = 0) -> bytes:
    """A deterministic stand-in for a sealed payload of ``size_class``."""
    seed = blake2b256(device + seq.to_bytes(8, "big"))
    size = sidecar_bytes(size_class)
    return (seed * (size // 32 + 1))[:size]


def sealed_reading(device: SigningKey, seq: int, ts_ms: int, chain_id: str, *,
                   epoch: int = 1, sidecar: bytes | None = None) -> SignedTx:
    """A reading of ``device`` with its sidecar beside it."""
    side = sidecar_for(device.public, seq) if sidecar is None else sidecar
    body = Reading(device.public, seq, ts_ms, epoch, 0, commitment(side))
    return sign_tx(body, device, chain_id, side)


def admit(authority: SigningKey, device: bytes, stream: bytes, chain_id: str,
          profile: bytes = PROFILE) -> SignedTx:
    return sign_tx(AdmitDevice(authority.public, device, stream, profile), authority, chain_id)


def wrap_for(grantee: bytes) -> bytes:
    """A stand-in for an epoch secret sealed to ``grantee`` (the size of a real wrap)."""
    return (blake2b256(b"wrap" + grantee) * 4)[:WRAP_BYTES]


def announce(stream: SigningKey, chain_id: str, epoch: int = 1,
             public: bytes = EPOCH_PUBLIC, *, grantees: Sequence[bytes] = ()) -> SignedTx:
    """The stream's ``epoch``, wrapped for ``grantees`` (none by default)."""
    keys = sorted(grantees)
    wraps = codec.encode([[g, wrap_for(g)] for g in keys])
    body = EpochAnnounce(stream.public, epoch, public, keys, wraps_hash(wraps))
    return sign_tx(body, stream, chain_id, wraps)


def grant(stream: SigningKey, grantee: bytes, chain_id: str, *, epoch: int = 1,
          expires_ms: int = 2**62, nonce: int = 0) -> SignedTx:
    """A forward grant of the stream's ``epoch`` to ``grantee``, its wrap beside it."""
    wrap = wrap_for(grantee)
    body = Grant(stream.public, grantee, blake2b256(b"box" + grantee), expires_ms, epoch,
                 FORWARD, wrap_hash(wrap), nonce)
    return sign_tx(body, stream, chain_id, wrap)


def revoke_grant(stream: SigningKey, grantee: bytes, chain_id: str, *, epoch: int = 2,
                 rest: Sequence[bytes] = (), nonce: int = 0,
                 public: bytes = EPOCH_PUBLIC) -> SignedTx:
    """The revocation of ``grantee``'s grant with the stream's next ``epoch``, wrapped for
    the ``rest`` of its live grantees."""
    keys = sorted(rest)
    wraps = codec.encode([[g, wrap_for(g)] for g in keys])
    body = RevokeGrant(stream.public, grantee, nonce, epoch, public, keys, wraps_hash(wraps))
    return sign_tx(body, stream, chain_id, wraps)
