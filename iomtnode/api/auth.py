"""Clients that prove a key: a server challenge, signed by the client, on one connection.

A client that acts for a key (a device, a patient, a grantee, an authority) calls
``auth_challenge`` and gets a fresh random nonce for this connection, then
``authenticate(public_key, signature)`` with its signature in
:attr:`~iomtnode.core.crypto.Domain.API_AUTH` on the chain's id over
:func:`~iomtnode.core.challenge.challenge_digest` of the nonce and the connection's channel
binding (see :mod:`iomtnode.core.challenge`). From then on the connection carries that key
(:attr:`ConnectionAuth.keys`), and methods whose role needs it (:mod:`.access`) answer.

Anyone can make a key, so a proven key by itself earns nothing but what :mod:`.access` grants
it. Only a key the ledger knows when it is proven (an authority, an active device, the patient
of one: :attr:`ConnectionAuth.participants`) lifts the connection's rate limit and keeps it
from being evicted (:mod:`.connection`, :mod:`.server`); a fresh key is as anonymous as no key.

Each challenge answers one ``authenticate``, right or wrong: to prove a second key, ask again. A
connection proves at most :data:`MAX_PROVEN_KEYS` keys and may fail :data:`MAX_AUTH_FAILURES`
times; the next failure closes it (1008), and from then on it verifies no signature (a
batch's later requests still run while the close takes effect), so a client cannot make the
node verify signatures without end on one connection.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from ..core.challenge import NONCE_BYTES, challenge_digest
from ..core.crypto import KEY_BYTES, SIG_BYTES, BadSignatureError, Domain, verify
from .jsonrpc import RpcError
from .params import hex_param

log = structlog.get_logger(__name__)

MAX_PROVEN_KEYS = 8  # keys one connection may prove (a gateway for a few devices, a patient)
MAX_AUTH_FAILURES = 3  # refused authenticate calls per connection; one more closes it (1008)

# error codes (server-defined JSON-RPC range)
NO_CHALLENGE = -32020  # authenticate without a challenge pending: ask auth_challenge first
BAD_AUTH_SIGNATURE = -32021  # the signature is not the key's over this connection's challenge
TOO_MANY_KEYS = -32022  # the connection already carries MAX_PROVEN_KEYS keys
FORBIDDEN = -32023  # the method needs a proven key this connection does not carry
TOO_MANY_FAILURES = -32024  # past MAX_AUTH_FAILURES: the connection verifies nothing more


def _nobody(key: bytes) -> bool:
    """A ledger that knows no key."""
    return False


class ConnectionAuth:
    """What one connection has proven: its pending challenge and its proven keys.

    ``binding`` is the connection's channel binding (``tls-server-end-point`` of the API's
    certificate under TLS, empty otherwise).
    """

    def __init__(self, binding: bytes = b"") -> None:
        self._binding = binding
        self._nonce: bytes | None = None
        self._keys: dict[bytes, None] = {}  # ordered, for the report
        self._participants: set[bytes] = set()  # of those, the keys the ledger knew
        self.failures = 0

    @property
    def keys(self) -> frozenset[bytes]:
        """The public keys this connection has proven (empty until ``authenticate``)."""
        return frozenset(self._keys)

    @property
    def participants(self) -> frozenset[bytes]:
        """The proven keys the ledger knew when they were proven (an authority, an active
        device, the patient of one); empty for a client that proved only keys of its own
        making."""
        return frozenset(self._participants)

    @property
    def participant(self) -> bool:
        """Whether :attr:`participants` holds a key (asked per request: no copy)."""
        return bool(self._participants)

    @property
    def binding(self) -> bytes:
        return self._binding

    def challenge(self) -> bytes:
        """A fresh nonce for this connection; replaces any pending one."""
        self._nonce = os.urandom(NONCE_BYTES)
        return self._nonce

    def prove(self, public: bytes, signature: bytes, chain_id: str, *,
              known: Callable[[bytes], bool] = _nobody) -> None:
        """Add ``public`` to the proven keys if ``signature`` answers the pending challenge on
        ``chain_id``, and to :attr:`participants` if ``known(public)`` (the ledger's view,
        asked only after the signature verified); else an :class:`RpcError` with the precise
        code. The challenge is used up either way."""
        nonce, self._nonce = self._nonce, None
        if self.failures > MAX_AUTH_FAILURES:  # closing: no more verifications
            raise RpcError(TOO_MANY_FAILURES, f"more than {MAX_AUTH_FAILURES} failed "
                           "authentications on this connection: open another one",
                           {"failures": self.failures, "failures_allowed": MAX_AUTH_FAILURES})
        if nonce is None:
            raise self._refused(NO_CHALLENGE, "no challenge pending on this connection: call "
                                "auth_challenge first (each challenge answers one authenticate)")
        if public in self._keys:  # proven already: no verification; the ledger may know it now
            if known(public):
                self._participants.add(public)
            return
        if len(self._keys) >= MAX_PROVEN_KEYS:
            raise RpcError(TOO_MANY_KEYS, f"this connection already carries {MAX_PROVEN_KEYS} "
                           "keys; open another connection")
        try:
            verify(public, Domain.API_AUTH, chain_id, challenge_digest(nonce, self._binding),
                   signature)
        except BadSignatureError:
            raise self._refused(BAD_AUTH_SIGNATURE, "the signature is not this key's over this "
                                "connection's challenge (in domain api-auth, on this chain, with "
                                "this connection's channel binding)") from None
        self._keys[public] = None
        if known(public):
            self._participants.add(public)

    def _refused(self, code: int, message: str) -> RpcError:
        self.failures += 1
        return RpcError(code, message, {"failures": self.failures,
                                        "failures_allowed": MAX_AUTH_FAILURES})


class AuthConnection(Protocol):
    """A connection as these methods see it (the server's ``Connection``)."""

    @property
    def auth(self) -> ConnectionAuth: ...

    def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class AuthApi:
    """The ``auth_challenge`` and ``authenticate`` methods (see the module docstring)."""

    def __init__(self, chain_id: str, known: Callable[[bytes], bool]) -> None:
        """``known(key)``: whether the ledger knows ``key`` now (``ChainQueries.participant``)."""
        self._chain_id = chain_id
        self._known = known

    def methods(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {"auth_challenge": self.auth_challenge, "authenticate": self.authenticate}

    async def auth_challenge(self, conn: AuthConnection) -> dict[str, Any]:
        """A fresh nonce to sign: ``{nonce, chain_id, binding}`` (``binding`` names the
        channel binding the signature must cover: ``tls-server-end-point`` or ``none``)."""
        return {"nonce": conn.auth.challenge().hex(), "chain_id": self._chain_id,
                "binding": "tls-server-end-point" if conn.auth.binding else "none"}

    async def authenticate(self, public_key: str, signature: str, conn: AuthConnection
                           ) -> dict[str, Any]:
        """Prove ``public_key`` with ``signature`` over the pending challenge; returns the keys
        this connection now carries (``keys``) and those of them the ledger knows
        (``participants``: while it has one, the connection is not rate limited)."""
        public = hex_param("public_key", public_key, KEY_BYTES)
        sig = hex_param("signature", signature, SIG_BYTES)
        try:
            conn.auth.prove(public, sig, self._chain_id, known=self._known)
        except RpcError:  # logged by the server's refusal log (api_request_refused, a warning)
            if conn.auth.failures > MAX_AUTH_FAILURES:
                conn.close(1008, "too many failed authentications")
            raise
        participant = public in conn.auth.participants
        log.debug("api_key_proven", key=public.hex()[:16], participant=participant)
        return {"keys": sorted(k.hex() for k in conn.auth.keys),
                "participants": sorted(k.hex() for k in conn.auth.participants)}
