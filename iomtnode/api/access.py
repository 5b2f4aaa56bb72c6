"""Who may call each client API method: roles, and the one check the dispatcher makes.

Every method has a :class:`Role` (the table is ``ROLES`` in :mod:`.methods`); a method without one
is refused when the table is built. The dispatcher calls :meth:`Access.check` after the params are
bound and before the method runs, so a method never sees a caller its role does not admit.

- ``PUBLIC``: anyone who can reach the API. Submissions are public because a transaction's own
  signature proves who made it; the chain's blocks, receipts and authorities are what every peer
  holds anyway.
- ``PARTY``: a key the connection has proven (:mod:`.auth`) that the ledger relates to the data
  asked for: for a device (``params.id``), the device itself, its stream's key (the patient's
  key for that scope), or an authority of the chain. Whether the device exists is not told to
  anyone else: the refusal is the same.
- ``CONSENT``: a patient's records (:mod:`.records`): the connection proved the stream's key,
  or the key of a grantee whose grant on the stream is live (``expires_ms`` after the node's
  time). The guard lets these calls through, because a refusal must be audited too and the
  guard cannot wait for the audit log: the method asks :func:`consent` first and records the
  outcome, served or refused (``NO_CONSENT``, the same whether or not the stream exists).
- ``STREAM``: a proven key the ledger knows as a stream (a patient), or an authority's: the
  audit log's leaves and the caller's own records (:mod:`.auditapi`).
- ``ADMIN``: the node's admin token (``params.token``), checked by the dispatcher for the methods
  of the admin table; only those have this role.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.ledger import Device, GrantRecord
from ..core.tx import HISTORY
from .auth import FORBIDDEN
from .jsonrpc import RpcError
from .params import hex_param

NO_CONSENT = -32025  # a patient's records asked by a caller without the stream's consent
NO_CONSENT_MESSAGE = "no consent for this stream"


class Role(enum.Enum):
    PUBLIC = "public"
    PARTY = "party"
    CONSENT = "consent"
    STREAM = "stream"
    ADMIN = "admin"


class Parties(Protocol):
    """What the ledger says of who relates to what (a narrow view of the chain)."""

    def authorities(self) -> tuple[bytes, ...]:
        """The chain's current authorities."""
        ...

    def device(self, key: bytes) -> tuple[Device, int] | None:
        """A device's registration (with its stream), or None."""
        ...

    def known_stream(self, key: bytes) -> bool:
        """Whether the ledger knows ``key`` as a stream (devices were admitted to it)."""
        ...


class Authenticated(Protocol):
    """The connection as the check sees it: the keys it has proven."""

    @property
    def proven_keys(self) -> frozenset[bytes]: ...


class Reader(Authenticated, Protocol):
    """A connection that reads patients' records: each read waits for its rate (every read,
    served or refused, costs the node a durable audit record)."""

    async def admit_audited_read(self) -> None: ...


def device_parties(parties: Parties, params: Mapping[str, Any]) -> set[bytes]:
    """The keys that may read the device ``params.id``: the device and its stream (authorities
    are added by the check)."""
    key = hex_param("id", params.get("id"), 32)
    found = parties.device(key)
    return {key} if found is None else {key, found[0].stream}


# per method of role PARTY: the keys related to what its params ask for
RELATIONS: dict[str, Callable[[Parties, Mapping[str, Any]], set[bytes]]] = {
    "get_device": device_parties,
}


class Access:
    """Checks each call against its method's role (see the module docstring).

    ``ValueError`` at construction if a method of ``methods`` or ``admin_methods`` has no role, if
    an admin method's role is not ``ADMIN`` (or another method's is), or if a ``PARTY`` method has
    no relation in :data:`RELATIONS`.
    """

    def __init__(self, roles: Mapping[str, Role], methods: Collection[str],
                 admin_methods: Collection[str], parties: Parties) -> None:
        missing = sorted((set(methods) | set(admin_methods)) - set(roles))
        if missing:
            raise ValueError(f"methods without a role: {missing}")
        for name in methods:
            if roles[name] is Role.ADMIN:
                raise ValueError(f"{name!r} has role admin but is not in the admin table")
            if roles[name] is Role.PARTY and name not in RELATIONS:
                raise ValueError(f"{name!r} has role party but no relation")
        for name in admin_methods:
            if roles[name] is not Role.ADMIN:
                raise ValueError(f"admin method {name!r} must have role admin")
        self._roles = dict(roles)
        self._parties = parties

    def role(self, method: str) -> Role:
        return self._roles[method]

    def check(self, method: str, params: Mapping[str, Any], conn: Authenticated | None) -> None:
        """Return if the caller may call ``method`` with ``params``; else ``RpcError(FORBIDDEN)``
        (or ``INVALID_PARAMS`` when the params name nothing). Cheapest check first: no proven
        key costs no ledger read."""
        role = self._roles[method]
        if role not in (Role.PARTY, Role.STREAM):  # PUBLIC, CONSENT (decided by the method),
            return  # or ADMIN (the dispatcher checked the token)
        proven = conn.proven_keys if conn is not None else frozenset()
        if proven and not proven.isdisjoint(self._parties.authorities()):
            return
        if role is Role.STREAM:
            if any(self._parties.known_stream(key) for key in sorted(proven)):
                return
            raise RpcError(FORBIDDEN, f"{method} answers only a connection that has proven a "
                           "stream's key (a patient) or an authority's: call auth_challenge, "
                           "then authenticate", {"role": role.value, "proven_keys": len(proven)})
        if proven and not proven.isdisjoint(RELATIONS[method](self._parties, params)):
            return
        raise RpcError(FORBIDDEN, f"{method} answers only a connection that has proven the key "
                       "of a party to the data (for a device: the device, its stream's key or an "
                       "authority): call auth_challenge, then authenticate",
                       {"role": role.value, "proven_keys": len(proven)})


@dataclass(frozen=True, slots=True)
class Consent:
    """Why a caller may read a stream: the proven ``key`` that holds consent, the ``grant``
    it holds (None: the stream's own key) and the first epoch it may read (0: every one)."""

    key: bytes
    grant: GrantRecord | None
    first_epoch: int

    @property
    def own(self) -> bool:
        """Whether the caller proved the stream's own key (the patient)."""
        return self.grant is None


def no_consent() -> RpcError:
    """The refusal of a patient's records: the same error, with no data, whether the stream
    does not exist, the caller proved no key, or its grant expired or was revoked."""
    return RpcError(NO_CONSENT, NO_CONSENT_MESSAGE)


def consent(stream: bytes, known: bool, grants: Mapping[bytes, GrantRecord],
            proven: frozenset[bytes], now_ms: int) -> Consent:
    """Who among the ``proven`` keys may read ``stream`` (``known``: the ledger knows it;
    ``grants``: its grant records) at the node's time ``now_ms``: its own key, else a grantee
    whose grant expires after ``now_ms`` (history mode first, then the earliest first epoch);
    else :func:`no_consent` is raised. An authority's key is no consent: only the patient
    grants."""
    if not known or not proven:
        raise no_consent()
    if stream in proven:
        return Consent(stream, None, 0)
    live = [(key, grant) for key in sorted(proven)
            if (grant := grants.get(key)) is not None and grant.expires_ms > now_ms]
    if not live:
        raise no_consent()
    key, grant = min(live, key=lambda kg: (kg[1].mode != HISTORY, kg[1].first_epoch))
    return Consent(key, grant, 0 if grant.mode == HISTORY else grant.first_epoch)
