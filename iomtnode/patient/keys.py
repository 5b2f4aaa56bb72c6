"""The patient's keys: everything derives from one 32-byte root ``R`` (docs/privacy.md,
section 1), so a patient backs up 32 bytes.

- the identity key ``I`` signs stream certificates, off the ledger;
- a stream key ``S`` per chain, scope and generation is the pseudonym the ledger knows;
- each stream has a key-regression chain of epoch states ``t_e`` (Fu, Kamara, Kohno, NDSS
  2006): whoever holds ``t_e`` derives every earlier state and no later one;
- each epoch's X25519 pair ``x_e, X_e`` derives from ``t_e``; devices seal to ``X_e``;
- a grantee makes its own ed25519 key ``G`` and a separate X25519 box key ``B``, and shows
  the patient a *key card* signed by ``G``.

Pure: no I/O (key files are :mod:`iomtnode.patient.keyfile`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from iomtnode.core import codec
from iomtnode.core.crypto import KEY_BYTES, MAX_CHAIN_ID_BYTES, SIG_BYTES, SigningKey, blake2b256

ROOT_BYTES = 32
STATE_BYTES = 32  # an epoch state t_e
X25519_BYTES = 32
EPOCHS_PER_STREAM = 65_536  # N: epochs 1..N; the top state is t_N
MAX_GENERATION = 2**32 - 1  # a stream generation is a u32
MAX_SCOPE_BYTES = 64  # a scope name ("vitals", "ecg", ...)
CHECKPOINT_EPOCHS = 256  # a regression chain keeps every 256th state: any epoch in <= 255 hashes
MAX_CARD_BYTES = 160  # a key card: two keys and a signature, msgpack-framed (136 B)
MAX_CERTIFICATE_BYTES = 256  # a stream certificate: keys, chain id, scope, signature

IDENTITY_INFO = b"iomt/patient/identity/v1"
STREAM_INFO = b"iomt/patient/stream/v1\x00"
REGRESS_TOP_INFO = b"iomt/patient/regress/v1\x00"
REGRESS_DOMAIN = b"iomt/regress/v1\x00"
EPOCH_KEY_INFO = b"iomt/epoch/x25519/v1"
STREAM_CERT_DOMAIN = b"iomt/stream-cert/v1\x00"
GRANTEE_CARD_DOMAIN = b"iomt/grantee-card/v1\x00"


class PatientKeyError(ValueError):
    """A key, state, epoch or name that is out of range or of the wrong size."""


class CardError(PatientKeyError):
    """A grantee key card that is malformed or whose signature does not bind its box key."""


class CertificateError(PatientKeyError):
    """A stream certificate that is malformed or not signed by the identity it names."""


def hkdf(secret: bytes, info: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    """HKDF-SHA256 (RFC 5869); no salt is the RFC's empty salt."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def new_root() -> bytes:
    """A fresh patient root ``R``: 32 random bytes, the one secret to back up."""
    return os.urandom(ROOT_BYTES)


def _check_root(root: bytes) -> None:
    if type(root) is not bytes or len(root) != ROOT_BYTES:
        raise PatientKeyError(f"a patient root is {ROOT_BYTES} bytes")


def _check_name(what: str, value: str, max_bytes: int) -> bytes:
    raw = value.encode()
    if not raw or len(raw) > max_bytes or b"\x00" in raw:
        raise PatientKeyError(f"{what} must be 1..{max_bytes} bytes without NUL, got {value!r}")
    return raw


def derive_identity(root: bytes) -> SigningKey:
    """The patient's identity key ``I``: signs stream certificates, never on the ledger."""
    _check_root(root)
    return SigningKey(hkdf(root, IDENTITY_INFO))


def derive_stream(root: bytes, chain_id: str, scope: str, generation: int = 0) -> SigningKey:
    """The stream key ``S`` of ``scope`` on ``chain_id``: its public key is the pseudonym the
    ledger knows. A new ``generation`` replaces a stream whose epochs ran out."""
    _check_root(root)
    chain = _check_name("chain id", chain_id, MAX_CHAIN_ID_BYTES)
    scope_raw = _check_name("scope", scope, MAX_SCOPE_BYTES)
    if not 0 <= generation <= MAX_GENERATION:
        raise PatientKeyError(f"a stream generation is a u32, got {generation}")
    info = (STREAM_INFO + chain + b"\x00" + scope_raw + b"\x00"
            + generation.to_bytes(4, "big"))
    return SigningKey(hkdf(root, info))


def _check_stream(stream: bytes) -> None:
    if type(stream) is not bytes or len(stream) != KEY_BYTES:
        raise PatientKeyError(f"a stream is its {KEY_BYTES}-byte public key")


def _check_epoch(epoch: int) -> None:
    if type(epoch) is not int or not 1 <= epoch <= EPOCHS_PER_STREAM:
        raise PatientKeyError(f"epoch {epoch} is not in 1..{EPOCHS_PER_STREAM}")


def regression_top(root: bytes, stream: bytes) -> bytes:
    """``t_N``, the top of ``stream``'s key-regression chain."""
    _check_root(root)
    _check_stream(stream)
    return hkdf(root, REGRESS_TOP_INFO + stream)


def regress(state: bytes) -> bytes:
    """One step down the chain: ``t_{e-1} = H(domain | t_e)``."""
    return blake2b256(REGRESS_DOMAIN + state)


def earlier_state(t_e: bytes, e: int, target: int) -> bytes:
    """``t_target`` from ``t_e`` (``target <= e``): ``e - target`` hashes. There is no way up."""
    if len(t_e) != STATE_BYTES:
        raise PatientKeyError(f"an epoch state is {STATE_BYTES} bytes")
    _check_epoch(e)
    _check_epoch(target)
    if target > e:
        raise PatientKeyError(f"epoch {target} is later than {e}: a state derives only "
                              "earlier ones")
    state = t_e
    for _ in range(e - target):
        state = regress(state)
    return state


class Regression:
    """The chain below one known state ``t_top`` of epoch ``top``, with every
    :data:`CHECKPOINT_EPOCHS`-th state kept: built with ``top`` hashes once, after which
    any epoch up to ``top`` costs at most 255 hashes."""

    __slots__ = ("_checkpoints", "top")

    def __init__(self, state: bytes, top: int) -> None:
        if len(state) != STATE_BYTES:
            raise PatientKeyError(f"an epoch state is {STATE_BYTES} bytes")
        _check_epoch(top)
        self.top = top
        points = {top: state}  # epoch -> state, at top and every multiple of the interval
        for epoch in range(top - 1, CHECKPOINT_EPOCHS - 1, -1):
            state = regress(state)
            if epoch % CHECKPOINT_EPOCHS == 0:
                points[epoch] = state
        self._checkpoints = points

    def state(self, epoch: int) -> bytes:
        """``t_epoch``, for ``1 <= epoch <= top``."""
        _check_epoch(epoch)
        if epoch > self.top:
            raise PatientKeyError(f"epoch {epoch} is later than {self.top}: no way up the chain")
        mark = min(self.top, -(-epoch // CHECKPOINT_EPOCHS) * CHECKPOINT_EPOCHS)
        state = self._checkpoints[mark]
        for _ in range(mark - epoch):
            state = regress(state)
        return state


@functools.lru_cache(maxsize=64)  # a patient's few streams; each 256 states of 32 B
def _stream_regression(root: bytes, stream: bytes) -> Regression:
    return Regression(regression_top(root, stream), EPOCHS_PER_STREAM)


def epoch_state(root: bytes, stream: bytes, epoch: int) -> bytes:
    """``t_epoch`` of ``stream``: the walk down from ``t_N`` is made once per stream."""
    _check_root(root)
    _check_stream(stream)
    return _stream_regression(root, stream).state(epoch)


def epoch_keypair(t_e: bytes) -> tuple[bytes, bytes]:
    """``(x_e, X_e)``: the epoch's X25519 secret and the public key devices seal to."""
    if len(t_e) != STATE_BYTES:
        raise PatientKeyError(f"an epoch state is {STATE_BYTES} bytes")
    secret = hkdf(t_e, EPOCH_KEY_INFO)
    return secret, nacl.bindings.crypto_scalarmult_base(secret)


def epoch_public(x_e: bytes) -> bytes:
    """``X_e`` from ``x_e``."""
    if len(x_e) != X25519_BYTES:
        raise PatientKeyError(f"an X25519 secret is {X25519_BYTES} bytes")
    return nacl.bindings.crypto_scalarmult_base(x_e)


def sign_raw(key: SigningKey, message: bytes) -> bytes:
    """An ed25519 signature over ``message`` itself (which starts with its own domain)."""
    return nacl.signing.SigningKey(key.seed).sign(message).signature


def verify_raw(public: bytes, message: bytes, signature: bytes) -> bool:
    if len(public) != KEY_BYTES or len(signature) != SIG_BYTES:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def _certificate_message(chain_id: str, stream: bytes, scope: str) -> bytes:
    chain = _check_name("chain id", chain_id, MAX_CHAIN_ID_BYTES)
    scope_raw = _check_name("scope", scope, MAX_SCOPE_BYTES)
    return STREAM_CERT_DOMAIN + bytes((len(chain),)) + chain + stream + scope_raw


def stream_certificate(identity: SigningKey, chain_id: str, stream_pub: bytes,
                       scope: str) -> bytes:
    """The certificate the patient shows an authority's registration desk: ``encode([I,
    chain id, S, scope, sign_I(domain | len(chain id) | chain id | S | scope)])``."""
    _check_stream(stream_pub)
    signature = sign_raw(identity, _certificate_message(chain_id, stream_pub, scope))
    return codec.encode([identity.public, chain_id, stream_pub, scope, signature])


def check_certificate(certificate: bytes) -> tuple[bytes, str, bytes, str]:
    """``(I, chain id, S, scope)`` of a stream certificate whose signature verifies; raises
    :class:`CertificateError` with the reason otherwise."""
    try:
        value = codec.decode(certificate, max_bytes=MAX_CERTIFICATE_BYTES)
    except codec.DecodeError as exc:
        raise CertificateError(f"stream certificate: {exc}") from None
    if (type(value) is not list or len(value) != 5 or type(value[0]) is not bytes
            or type(value[1]) is not str or type(value[2]) is not bytes
            or type(value[3]) is not str or type(value[4]) is not bytes):
        raise CertificateError("stream certificate is not [identity, chain id, stream, "
                               "scope, signature]")
    identity, chain_id, stream, scope, signature = value
    if len(stream) != KEY_BYTES:
        raise CertificateError(f"stream certificate: a stream is {KEY_BYTES} bytes")
    try:
        message = _certificate_message(chain_id, stream, scope)
    except PatientKeyError as exc:
        raise CertificateError(f"stream certificate: {exc}") from None
    if not verify_raw(identity, message, signature):
        raise CertificateError("stream certificate: the signature does not verify")
    return identity, chain_id, stream, scope


@dataclass(frozen=True, slots=True)
class GranteeKeys:
    """A grantee's ed25519 key ``G`` (its id on the ledger) and its separate X25519 box key
    ``B`` (what the patient wraps epoch keys to). Make one per patient: ``G`` is public."""

    signing: SigningKey
    box_secret: bytes

    def __post_init__(self) -> None:
        if len(self.box_secret) != X25519_BYTES:
            raise PatientKeyError(f"a box secret is {X25519_BYTES} bytes")

    @classmethod
    def generate(cls) -> GranteeKeys:
        return cls(SigningKey.generate(), os.urandom(X25519_BYTES))

    @property
    def grantee(self) -> bytes:
        """``G``: the grantee's public key, its id in grants."""
        return self.signing.public

    @property
    def box_public(self) -> bytes:
        """``B``: the public box key wraps are sealed to."""
        return nacl.bindings.crypto_scalarmult_base(self.box_secret)

    def card(self) -> bytes:
        """The key card ``encode([G, B, sign_G(domain | B)])`` the patient checks before
        granting."""
        box = self.box_public
        return codec.encode([self.grantee, box, sign_raw(self.signing,
                                                         GRANTEE_CARD_DOMAIN + box)])

    def __repr__(self) -> str:  # never print a private key by accident
        return f"GranteeKeys(grantee={self.grantee.hex()[:16]}...)"


def check_card(card: bytes) -> tuple[bytes, bytes]:
    """``(G, B)`` of a key card whose signature by ``G`` covers ``B``; raises
    :class:`CardError` with the reason otherwise."""
    try:
        value = codec.decode(card, max_bytes=MAX_CARD_BYTES)
    except codec.DecodeError as exc:
        raise CardError(f"key card: {exc}") from None
    if type(value) is not list or len(value) != 3 or any(type(v) is not bytes for v in value):
        raise CardError("key card is not [grantee key, box key, signature]")
    grantee, box, signature = value
    if len(grantee) != KEY_BYTES or len(box) != X25519_BYTES:
        raise CardError(f"key card: keys are {KEY_BYTES} bytes")
    if box == bytes(X25519_BYTES):
        raise CardError("key card: the box key is all zero")
    if not verify_raw(grantee, GRANTEE_CARD_DOMAIN + box, signature):
        raise CardError("key card: the grantee key's signature does not cover this box key")
    return grantee, box
