"""Transactions of rules version 3 for tests: sealed readings (a sidecar of the right size
whose commitment matches; the node cannot tell it from a real ciphertext), admissions to a
stream, and a stream's epoch announcement. Real sealing is tested in tests/patient."""

from __future__ import annotations

from iomtnode.core import codec
from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.core.payload import commitment, profile_hash, sidecar_bytes, wraps_hash
from iomtnode.core.tx import AdmitDevice, EpochAnnounce, Reading, SignedTx, sign_tx

NO_WRAPS = codec.encode([])
EPOCH_PUBLIC = blake2b256(b"a test epoch key")  # any 32 bytes but zero: nodes cannot tell
PROFILE = profile_hash(bytes(16), "wearable", "acme")


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


def announce(stream: SigningKey, chain_id: str, epoch: int = 1,
             public: bytes = EPOCH_PUBLIC) -> SignedTx:
    """The stream's ``epoch`` with no grantees."""
    body = EpochAnnounce(stream.public, epoch, public, [], wraps_hash(NO_WRAPS))
    return sign_tx(body, stream, chain_id, NO_WRAPS)
