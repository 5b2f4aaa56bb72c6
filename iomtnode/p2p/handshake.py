"""The peer handshake, as pure checks.

It runs on a connection the transport has secured (TLS 1.3, see :mod:`.tls`), whose channel
binding both ends know: the SHA-256 of the TLS server's certificate (RFC 5929
``tls-server-end-point``). Both sides send :class:`Hello` at once, then :class:`Auth`::

    A -> B  Hello(version, chain, genesis, node_id_A, nonce_A, head)
    B -> A  Hello(version, chain, genesis, node_id_B, nonce_B, head)
    A -> B  Auth(sign_A(H(nonce_B | nonce_A | id_A | id_B | cb | dialed_A)), cb, dialed_A, ...)
    B -> A  Auth(sign_B(H(nonce_A | nonce_B | id_B | id_A | cb | dialed_B)), cb, dialed_B, ...)

Each signature covers the other side's fresh nonce, so an ``Auth`` captured from one session
is worthless in any other (a replayed handshake fails); both identities; the channel binding
``cb``; and which end the signer is (``dialed``: the TLS client). So it is valid on this one
TLS connection, from the other end only. A party that relays the handshake between two nodes
holds a TLS connection of its own with each. If it accepted either one, it showed its own
certificate there, and if it dialed either one, that node showed its own; it cannot show a
node's certificate without that node's TLS key. So either the two connections' bindings
differ, or the relay is the server of both (both nodes dialed it) and both Auths say
"dialed": each node refuses the other's Auth, and the relay learns nothing and can inject
nothing. Such a refusal blames the connection, never the node id the Auth claims (the relay
is not that node). A wrong version, chain or genesis, an unencrypted connection, a
connection to oneself, an Auth from another connection or a bad signature is refused with a
:class:`HandshakeError`.
"""

from __future__ import annotations

import os

from ..core import codec
from ..core.crypto import BadSignatureError, Domain, SigningKey, blake2b256, verify
from .messages import NONCE_BYTES, PROTOCOL_VERSION, Auth, Hello

HANDSHAKE_TIMEOUT_S = 5.0  # a peer must complete the handshake (TLS included) within this
TO_ITSELF = "connected to itself"  # a dial answered by this very node (its own address)


class HandshakeError(ValueError):
    """A refused handshake; the message is the reason logged on both sides."""


def make_hello(key: SigningKey, chain_id: str, genesis_hash: bytes, height: int,
               head_hash: bytes, nonce: bytes | None = None) -> Hello:
    return Hello(PROTOCOL_VERSION, chain_id, genesis_hash, key.public,
                 nonce if nonce is not None else os.urandom(NONCE_BYTES), height, head_hash)


def check_hello(theirs: Hello, ours: Hello, binding: bytes | None) -> None:
    """Refuse a peer on another protocol version, chain or genesis, on a connection that is
    not encrypted (``binding`` None), or ourselves. The version is checked first, so a node of
    an older version, which speaks no TLS, learns why it is refused."""
    if theirs.version != ours.version:
        raise HandshakeError(
            f"protocol version {theirs.version}, this node speaks {ours.version}"
        )
    if binding is None:
        raise HandshakeError(f"the connection is not encrypted: protocol version "
                             f"{ours.version} runs over TLS 1.3 only")
    if theirs.chain_id != ours.chain_id:
        raise HandshakeError(f"chain {theirs.chain_id!r}, this node is on {ours.chain_id!r}")
    if theirs.genesis_hash != ours.genesis_hash:
        raise HandshakeError(
            f"genesis {theirs.genesis_hash.hex()[:16]}, this node's is "
            f"{ours.genesis_hash.hex()[:16]}"
        )
    if theirs.node_id == ours.node_id:
        raise HandshakeError(TO_ITSELF)
    if theirs.nonce == ours.nonce:
        raise HandshakeError("nonce echoed back")


def _digest(their_nonce: bytes, my_nonce: bytes, my_id: bytes, their_id: bytes,
            binding: bytes, dialed: bool) -> bytes:
    return blake2b256(codec.encode([their_nonce, my_nonce, my_id, their_id, binding, dialed]))


def make_auth(key: SigningKey, chain_id: str, ours: Hello, theirs: Hello, binding: bytes,
              dialed: bool, observed_address: str, record: bytes) -> Auth:
    """Our Auth: a signature over the peer's nonce, both ids, the connection's channel
    ``binding`` and our end of it (``dialed``: we are the TLS client)."""
    digest = _digest(theirs.nonce, ours.nonce, ours.node_id, theirs.node_id, binding, dialed)
    return Auth(key.sign(Domain.HANDSHAKE, chain_id, digest), binding, dialed,
                observed_address, record)


def check_auth(auth: Auth, ours: Hello, theirs: Hello, binding: bytes, dialed: bool) -> None:
    """Refuse an Auth that is not the peer's signature over our nonce on this connection
    (channel ``binding``), from its other end (we ``dialed`` it or not). The reasons name the
    connection, not the node id claimed: an Auth made on another connection was relayed by
    whoever is at the other end of this one."""
    if auth.binding != binding:
        raise HandshakeError(
            f"handshake relayed: signed for another connection (channel binding "
            f"{auth.binding.hex()[:16]}, this connection's is {binding.hex()[:16]})"
        )
    if auth.dialed == dialed:
        both = "dialed" if dialed else "accepted"
        raise HandshakeError(f"handshake relayed: signed for another connection (both ends "
                             f"{both} one with this channel binding)")
    digest = _digest(ours.nonce, theirs.nonce, theirs.node_id, ours.node_id, binding,
                     not dialed)
    try:
        verify(theirs.node_id, Domain.HANDSHAKE, ours.chain_id, digest, auth.signature)
    except BadSignatureError:
        raise HandshakeError(
            f"handshake signature of {theirs.node_id.hex()[:16]} does not verify on this "
            f"connection"
        ) from None
