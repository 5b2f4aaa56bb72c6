"""The peer handshake, as pure checks.

Both sides send :class:`Hello` at once, then :class:`Auth`::

    A -> B  Hello(version, chain, genesis, node_id_A, nonce_A, head)
    B -> A  Hello(version, chain, genesis, node_id_B, nonce_B, head)
    A -> B  Auth(sign_A(H(nonce_B | nonce_A | id_A | id_B)), observed address of B, record_A)
    B -> A  Auth(sign_B(H(nonce_A | nonce_B | id_B | id_A)), observed address of A, record_B)

Each signature covers the other side's fresh nonce, so an ``Auth`` captured from one
session is worthless in any other (a replayed handshake fails), and both identities, so
it cannot be relayed between two other nodes. A wrong version, chain or genesis, a
connection to oneself, or a bad signature is refused with a :class:`HandshakeError`.
"""

from __future__ import annotations

import os

from ..core import codec
from ..core.crypto import BadSignatureError, Domain, SigningKey, blake2b256, verify
from .messages import NONCE_BYTES, PROTOCOL_VERSION, Auth, Hello

HANDSHAKE_TIMEOUT_S = 5.0  # a peer must complete the handshake within this


class HandshakeError(ValueError):
    """A refused handshake; the message is the reason logged on both sides."""


def make_hello(key: SigningKey, chain_id: str, genesis_hash: bytes, height: int,
               head_hash: bytes, nonce: bytes | None = None) -> Hello:
    return Hello(PROTOCOL_VERSION, chain_id, genesis_hash, key.public,
                 nonce if nonce is not None else os.urandom(NONCE_BYTES), height, head_hash)


def check_hello(theirs: Hello, ours: Hello) -> None:
    """Refuse a peer on another protocol version, chain or genesis, or ourselves."""
    if theirs.version != ours.version:
        raise HandshakeError(
            f"protocol version {theirs.version}, this node speaks {ours.version}"
        )
    if theirs.chain_id != ours.chain_id:
        raise HandshakeError(f"chain {theirs.chain_id!r}, this node is on {ours.chain_id!r}")
    if theirs.genesis_hash != ours.genesis_hash:
        raise HandshakeError(
            f"genesis {theirs.genesis_hash.hex()[:16]}, this node's is "
            f"{ours.genesis_hash.hex()[:16]}"
        )
    if theirs.node_id == ours.node_id:
        raise HandshakeError("connected to itself")
    if theirs.nonce == ours.nonce:
        raise HandshakeError("nonce echoed back")


def _digest(their_nonce: bytes, my_nonce: bytes, my_id: bytes, their_id: bytes) -> bytes:
    return blake2b256(codec.encode([their_nonce, my_nonce, my_id, their_id]))


def make_auth(key: SigningKey, chain_id: str, ours: Hello, theirs: Hello,
              observed_address: str, record: bytes) -> Auth:
    """Our Auth: a signature over the peer's nonce (and both ids)."""
    digest = _digest(theirs.nonce, ours.nonce, ours.node_id, theirs.node_id)
    return Auth(key.sign(Domain.HANDSHAKE, chain_id, digest), observed_address, record)


def check_auth(auth: Auth, ours: Hello, theirs: Hello) -> None:
    """Refuse an Auth that is not the peer's signature over our nonce this session."""
    digest = _digest(ours.nonce, theirs.nonce, theirs.node_id, ours.node_id)
    try:
        verify(theirs.node_id, Domain.HANDSHAKE, ours.chain_id, digest, auth.signature)
    except BadSignatureError:
        raise HandshakeError(
            f"handshake signature of {theirs.node_id.hex()[:16]} does not verify"
        ) from None
