"""What a client signs to prove its key to a node's API, and the TLS channel binding it covers.

The node gives each connection a fresh random nonce (``auth_challenge``); the client signs, in
:attr:`~iomtnode.core.crypto.Domain.API_AUTH` on the chain's id, the digest of that nonce and
the channel binding of the connection: the ``tls-server-end-point`` binding of RFC 5929 (a hash
of the API's certificate as the client received it) when the API speaks TLS, empty bytes when it
does not. A signature made for one connection therefore never proves a key on another (other
nonce), on another chain (other signing prefix), as another kind of message (other domain), or
through a TLS relay that shows the client its own certificate (other binding).
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes

from .crypto import blake2b256

NONCE_BYTES = 32  # a challenge: 256 random bits, never reused
MAX_BINDING_BYTES = 64  # a channel binding: a SHA-512 digest at most

# RFC 5929 section 4.1: a certificate signed with MD5 or SHA-1 (or with no hash, as ed25519)
# is hashed with SHA-256; otherwise with its signature's own hash
_BINDING_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


class ChallengeError(ValueError):
    """A nonce or channel binding of the wrong size, or a certificate that cannot be read."""


def challenge_digest(nonce: bytes, binding: bytes) -> bytes:
    """The digest a client signs (``Domain.API_AUTH``) to prove its key on one connection."""
    if len(nonce) != NONCE_BYTES:
        raise ChallengeError(f"a challenge nonce is {NONCE_BYTES} bytes, got {len(nonce)}")
    if len(binding) > MAX_BINDING_BYTES:
        raise ChallengeError(f"a channel binding is at most {MAX_BINDING_BYTES} bytes")
    return blake2b256(nonce + bytes((len(binding),)) + binding)


def tls_server_end_point(cert_der: bytes) -> bytes:
    """The ``tls-server-end-point`` channel binding (RFC 5929) of a server's DER certificate."""
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        algorithm = cert.signature_hash_algorithm
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ChallengeError(f"cannot read the certificate: {exc}") from None
    name = algorithm.name if isinstance(algorithm, hashes.HashAlgorithm) else ""
    return _BINDING_HASHES.get(name, hashlib.sha256)(cert_der).digest()
