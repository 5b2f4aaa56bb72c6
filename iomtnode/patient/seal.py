"""Sealing a reading to an epoch key and opening it (docs/privacy.md, section 2).

An ephemeral X25519 key and XChaCha20-Poly1305 whose associated data binds the ciphertext to
the signed reading that carries it (chain, stream, device, sequence number, epoch)::

    a = 32 random bytes;  A = X25519(a, base)
    ss = X25519(a, X_e)                                  # an all-zero result is refused
    key | nonce = HKDF(ss, salt = A | X_e, info = "iomt/reading/v1", length = 32 + 24)
    ciphertext = A | XChaCha20-Poly1305(pad(plaintext, class size), ad, nonce, key)
    sidecar = salt16 | ciphertext

The plaintext is padded (ISO/IEC 7816-4, libsodium's ``sodium_pad``) to its size class, so a
ciphertext's length says only "spot vital", "short strip" or "long strip". ``a`` is dropped at
once: a device cannot open what it sealed.
"""

from __future__ import annotations

import os

import nacl.bindings
import nacl.exceptions

from iomtnode.core import payload
from iomtnode.core.payload import PADDED_BYTES, SALT_BYTES, reading_ad

from .keys import X25519_BYTES, hkdf
from .keys import epoch_public as public_of
from .plaintext import Plaintext, PlaintextError, decode_plaintext

READING_INFO = b"iomt/reading/v1"
AEAD_KEY_BYTES = 32
AEAD_NONCE_BYTES = 24  # XChaCha20: a random-size nonce space, derived per ephemeral key
ZERO_SECRET = bytes(X25519_BYTES)
# the sidecar sizes there are, and the class each one is
_CLASS_OF_SIDECAR = {payload.sidecar_bytes(c): c for c in range(len(PADDED_BYTES))}


class SealError(ValueError):
    """A reading that cannot be sealed: too large for its class, or a bad epoch key."""


class OpenError(ValueError):
    """A sidecar that does not open: wrong key, wrong associated data, bad size or padding."""


def size_class_for(plain_len: int) -> int:
    """The first size class whose padded size holds ``plain_len`` bytes (``sodium_pad``
    needs strictly fewer bytes than the block)."""
    for size_class, padded in enumerate(PADDED_BYTES):
        if plain_len < padded:
            return size_class
    raise SealError(f"a plaintext of {plain_len} bytes is larger than the largest size class "
                    f"({PADDED_BYTES[-1] - 1} bytes): split the recording")


def _key_and_nonce(shared: bytes, ephemeral: bytes, public: bytes) -> tuple[bytes, bytes]:
    okm = hkdf(shared, READING_INFO, AEAD_KEY_BYTES + AEAD_NONCE_BYTES,
               salt=ephemeral + public)
    return okm[:AEAD_KEY_BYTES], okm[AEAD_KEY_BYTES:]


def _shared(secret: bytes, public: bytes) -> bytes | None:
    """X25519(secret, public), or None when it is all zero (a low-order public key)."""
    try:
        shared = nacl.bindings.crypto_scalarmult(secret, public)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, ValueError):
        return None  # libsodium refuses an all-zero result itself
    return None if shared == ZERO_SECRET else shared


def seal(plain: Plaintext, epoch_public: bytes, ad: bytes,
         size_class: int | None = None) -> bytes:
    """The sidecar ``salt | A | AEAD(padded plaintext)`` of ``plain`` sealed to ``X_e``
    with associated data ``ad``; ``size_class`` defaults to the smallest that holds it."""
    if len(epoch_public) != X25519_BYTES:
        raise SealError(f"an epoch public key is {X25519_BYTES} bytes")
    encoded = plain.encode()
    smallest = size_class_for(len(encoded))
    if size_class is None:
        size_class = smallest
    elif not smallest <= size_class < len(PADDED_BYTES):
        raise SealError(f"a plaintext of {len(encoded)} bytes does not fit size class "
                        f"{size_class}; the smallest that holds it is {smallest}")
    ephemeral_secret = os.urandom(X25519_BYTES)
    ephemeral = nacl.bindings.crypto_scalarmult_base(ephemeral_secret)
    shared = _shared(ephemeral_secret, epoch_public)
    del ephemeral_secret  # the device cannot open what it sealed
    if shared is None:
        raise SealError("the epoch public key is of low order (all-zero shared secret)")
    key, nonce = _key_and_nonce(shared, ephemeral, epoch_public)
    padded = nacl.bindings.sodium_pad(encoded, PADDED_BYTES[size_class])
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(padded, ad, nonce, key)
    sidecar = os.urandom(SALT_BYTES) + ephemeral + sealed
    assert len(sidecar) == payload.sidecar_bytes(size_class)
    return sidecar


def sidecar_class(sidecar: bytes) -> int:
    """The size class a sidecar's length says; raises :class:`OpenError` if none."""
    size_class = _CLASS_OF_SIDECAR.get(len(sidecar))
    if size_class is None:
        raise OpenError(f"a sidecar of {len(sidecar)} bytes is of no size class "
                        f"({sorted(_CLASS_OF_SIDECAR)})")
    return size_class


def open_sidecar(sidecar: bytes, epoch_secret: bytes, ad: bytes) -> Plaintext:
    """The plaintext sealed in ``sidecar`` to ``x_e`` with associated data ``ad``; raises
    :class:`OpenError` with the reason on any failure."""
    size_class = sidecar_class(sidecar)
    if len(epoch_secret) != X25519_BYTES:
        raise OpenError(f"an epoch secret is {X25519_BYTES} bytes")
    ephemeral = sidecar[SALT_BYTES:SALT_BYTES + X25519_BYTES]
    shared = _shared(epoch_secret, ephemeral)
    if shared is None:
        raise OpenError("the ciphertext's ephemeral key is of low order")
    key, nonce = _key_and_nonce(shared, ephemeral, public_of(epoch_secret))
    try:
        padded = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sidecar[SALT_BYTES + X25519_BYTES:], ad, nonce, key)
    except nacl.exceptions.CryptoError:
        raise OpenError("the ciphertext does not open with this epoch key and this reading's "
                        "associated data") from None
    try:
        encoded = nacl.bindings.sodium_unpad(padded, PADDED_BYTES[size_class])
    except (nacl.exceptions.CryptoError, ValueError):
        raise OpenError("the plaintext's padding is malformed") from None
    try:
        return decode_plaintext(encoded)
    except PlaintextError as exc:
        raise OpenError(str(exc)) from None


def seal_reading(chain_id: str, stream: bytes, device: bytes, seq: int, epoch: int,
                 epoch_public: bytes, plain: Plaintext) -> tuple[int, bytes, bytes]:
    """``(size_class, commitment, sidecar)`` of ``plain`` sealed for the reading of
    ``device`` with sequence number ``seq`` in ``stream``'s ``epoch``: what the device puts
    in its signed body and beside it."""
    sidecar = seal(plain, epoch_public, reading_ad(chain_id, stream, device, seq, epoch))
    return sidecar_class(sidecar), payload.commitment(sidecar), sidecar


def open_reading(chain_id: str, stream: bytes, device: bytes, seq: int, epoch: int,
                 epoch_secret: bytes, sidecar: bytes) -> Plaintext:
    """The plaintext of a reading's sidecar, opened with the associated data of that very
    reading; raises :class:`OpenError`."""
    return open_sidecar(sidecar, epoch_secret, reading_ad(chain_id, stream, device, seq, epoch))
