"""Sealing a reading's plaintext to its stream's epoch key, and opening it (docs/privacy.md,
section 2): an ephemeral X25519 key, HKDF-SHA256, XChaCha20-Poly1305 with the reading's
associated data, over the plaintext padded (ISO/IEC 7816-4) to its size class."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
    sodium_pad,
    sodium_unpad,
)
from nacl.exceptions import CryptoError

from iomtnode.core import payload

from .plaintext import Plaintext, PlaintextError, decode_plaintext

READING_INFO = b"iomt/reading/v1"


class OpenError(ValueError):
    """A sidecar that does not open with this key and associated data."""


def size_class_for(plain_len: int) -> int:
    """The first size class whose padded size holds ``plain_len`` bytes (and the padding)."""
    for size_class, padded in enumerate(payload.PADDED_BYTES):
        if plain_len < padded:
            return size_class
    raise ValueError(f"a plaintext of {plain_len} bytes is larger than the largest size "
                     f"class ({payload.PADDED_BYTES[-1] - 1} bytes): split the recording")


def _key_nonce(shared: bytes, ephemeral: bytes, public: bytes) -> tuple[bytes, bytes]:
    if shared == bytes(32):
        raise OpenError("the X25519 exchange gave the all-zero secret (a low-order key)")
    okm = HKDF(algorithm=hashes.SHA256(), length=56, salt=ephemeral + public,
               info=READING_INFO).derive(shared)
    return okm[:32], okm[32:]


def seal(plain: Plaintext, epoch_public: bytes, ad: bytes, size_class: int | None = None
         ) -> bytes:
    """The sidecar ``salt | ciphertext`` of ``plain`` sealed to ``epoch_public``."""
    data = plain.encode()
    chosen = size_class_for(len(data)) if size_class is None else size_class
    padded_len = payload.PADDED_BYTES[chosen]
    if len(data) >= padded_len:
        raise ValueError(f"a plaintext of {len(data)} bytes does not fit size class {chosen}")
    padded = sodium_pad(data, padded_len)
    ephemeral_secret = os.urandom(32)
    ephemeral = crypto_scalarmult_base(ephemeral_secret)
    key, nonce = _key_nonce(crypto_scalarmult(ephemeral_secret, epoch_public), ephemeral,
                            epoch_public)
    sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(padded, ad, nonce, key)
    return os.urandom(payload.SALT_BYTES) + ephemeral + sealed


def open_sidecar(sidecar: bytes, epoch_secret: bytes, ad: bytes) -> Plaintext:
    """The plaintext sealed in ``sidecar``; raises :class:`OpenError` on any failure."""
    ciphertext = sidecar[payload.SALT_BYTES:]
    if len(ciphertext) not in [payload.sealed_bytes(c) for c in range(len(payload.PADDED_BYTES))]:
        raise OpenError(f"a sealed payload of {len(ciphertext)} bytes is of no size class")
    ephemeral = ciphertext[:32]
    public = crypto_scalarmult_base(epoch_secret)
    key, nonce = _key_nonce(crypto_scalarmult(epoch_secret, ephemeral), ephemeral, public)
    try:
        padded = crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext[32:], ad, nonce, key)
        return decode_plaintext(sodium_unpad(padded, len(padded)))
    except (CryptoError, PlaintextError, ValueError) as exc:
        raise OpenError(f"the payload does not open with this key for this reading: {exc}"
                        ) from None


def seal_reading(chain_id: str, stream: bytes, device: bytes, seq: int, epoch: int,
                 epoch_public: bytes, plain: Plaintext) -> tuple[int, bytes, bytes]:
    """``(size class, commitment, sidecar)`` of a reading: what its body holds and what
    travels beside it."""
    ad = payload.reading_ad(chain_id, stream, device, seq, epoch)
    sidecar = seal(plain, epoch_public, ad)
    size_class = payload.PADDED_BYTES.index(len(sidecar) - payload.SALT_BYTES
                                            - payload.SEAL_OVERHEAD_BYTES)
    return size_class, payload.commitment(sidecar), sidecar
