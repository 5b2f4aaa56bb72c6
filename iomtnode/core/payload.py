"""What the ledger knows of a sealed reading: its size class and the salted commitment to
its ciphertext (docs/privacy.md, section 2). Sealing and opening are the device's and the
reader's business (:mod:`iomtnode.patient`); a node checks only what is here.

A reading's *sidecar* is ``salt | ciphertext``: it travels beside the signed transaction
and is never part of a Merkle leaf, so it can be erased without changing any block hash.
"""

from __future__ import annotations

from . import codec
from .crypto import HASH_BYTES, blake2b256

SALT_BYTES = 16
SEAL_OVERHEAD_BYTES = 48  # an ephemeral X25519 key (32) and an AEAD tag (16)
# padded plaintext bytes of each size class: a spot vital, a short strip, a long strip
PADDED_BYTES = (64, 16_384, 131_072)
INLINE_CLASSES = frozenset({0})  # classes whose sidecar rides inside the transaction envelope
COMMIT_DOMAIN = b"iomt/reading-commit/v1\x00"
READING_AD_DOMAIN = b"iomt/reading-ad/v1\x00"


class PayloadError(ValueError):
    """A sidecar that is not of its class's size or does not match its commitment."""


class PayloadSizeError(PayloadError):
    """A size class that does not exist, or a sidecar not exactly its class's size."""


def sealed_bytes(size_class: int) -> int:
    """Bytes of a ciphertext of ``size_class`` (ephemeral key, AEAD output, tag)."""
    return PADDED_BYTES[size_class] + SEAL_OVERHEAD_BYTES


def sidecar_bytes(size_class: int) -> int:
    """Bytes of a sidecar (salt and ciphertext) of ``size_class``."""
    return SALT_BYTES + sealed_bytes(size_class)


def commitment(sidecar: bytes) -> bytes:
    """The salted commitment a reading's signed body holds: ``H(domain | salt | ciphertext)``
    where the sidecar is ``salt | ciphertext``."""
    return blake2b256(COMMIT_DOMAIN + sidecar)


def check_sidecar(size_class: int, commit: bytes, sidecar: bytes) -> None:
    """Raise :class:`PayloadError` unless ``sidecar`` is exactly ``size_class``'s size and
    hashes to ``commit``."""
    if not 0 <= size_class < len(PADDED_BYTES):
        raise PayloadSizeError(
            f"size class {size_class} is not one of 0..{len(PADDED_BYTES) - 1}")
    if len(sidecar) != sidecar_bytes(size_class):
        raise PayloadSizeError(
            f"sidecar of {len(sidecar)} bytes; size class {size_class} seals to exactly "
            f"{sidecar_bytes(size_class)} (salt and padded ciphertext)")
    if len(commit) != HASH_BYTES or commitment(sidecar) != commit:
        raise PayloadError("sidecar does not hash to the reading's commitment")


def reading_ad(chain_id: str, stream: bytes, device: bytes, seq: int, epoch: int) -> bytes:
    """The associated data a reading's ciphertext is sealed with: binds it to the chain, the
    stream, the device, the sequence number and the epoch of the signed reading."""
    chain = chain_id.encode()
    return (READING_AD_DOMAIN + len(chain).to_bytes(2, "big") + chain + stream + device
            + seq.to_bytes(8, "big") + epoch.to_bytes(8, "big"))


WRAP_DOMAIN = b"iomt/wrap/v1\x00"
WRAPS_DOMAIN = b"iomt/wraps/v1\x00"


def wrap_hash(wrap: bytes) -> bytes:
    """What a grant's body holds of the epoch secret wrapped to its grantee."""
    return blake2b256(WRAP_DOMAIN + wrap)


def wraps_hash(wraps_sidecar: bytes) -> bytes:
    """What an epoch's body holds of its wraps: the hash of the sidecar
    ``encode([[grantee, wrap], ...])`` (grantees ascending, as in the body)."""
    return blake2b256(WRAPS_DOMAIN + wraps_sidecar)


PROFILE_DOMAIN = b"iomt/profile/v1\x00"


def profile_hash(salt: bytes, device_class: str, manufacturer: str) -> bytes:
    """What an admission holds of a device's class and maker: a salted hash, so the ledger
    does not say what the device measures (the salt comes with the admission request)."""
    return blake2b256(PROFILE_DOMAIN + salt + codec.encode([device_class, manufacturer]))
