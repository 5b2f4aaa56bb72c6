"""Who may call each client API method: roles, and the one check the dispatcher makes.

Every method has a :class:`Role` (the table is ``ROLES`` in :mod:`.methods`); a method without one
is refused when the table is built. The dispatcher calls :meth:`Access.check` after the params are
bound and before the method runs, so a method never sees a caller its role does not admit.

- ``PUBLIC``: anyone who can reach the API. Submissions are public because a transaction's own
  signature proves who made it; the chain's blocks, receipts and authorities are what every peer
  holds anyway.
- ``PARTY``: a key the connection has proven (:mod:`.auth`) that the ledger relates to the data
  asked for: for a device (``params.id``), the device itself, its patient, or an authority of the
  chain. Whether the device exists is not told to anyone else: the refusal is the same.
- ``ADMIN``: the node's admin token (``params.token``), checked by the dispatcher for the methods
  of the admin table; only those have this role.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

from ..core.ledger import Device
from .auth import FORBIDDEN
from .jsonrpc import RpcError
from .params import hex_param


class Role(enum.Enum):
    PUBLIC = "public"
    PARTY = "party"
    ADMIN = "admin"


class Parties(Protocol):
    """What the ledger says of who relates to what (a narrow view of the chain)."""

    def authorities(self) -> tuple[bytes, ...]:
        """The chain's current authorities."""
        ...

    def device(self, key: bytes) -> tuple[Device, int] | None:
        """A device's registration (with its patient), or None."""
        ...


class Authenticated(Protocol):
    """The connection as the check sees it: the keys it has proven."""

    @property
    def proven_keys(self) -> frozenset[bytes]: ...


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
        if role is not Role.PARTY:  # PUBLIC, or ADMIN (the dispatcher checked the token)
            return
        proven = conn.proven_keys if conn is not None else frozenset()
        if proven and not proven.isdisjoint(self._parties.authorities()):
            return
        if proven and not proven.isdisjoint(RELATIONS[method](self._parties, params)):
            return
        raise RpcError(FORBIDDEN, f"{method} answers only a connection that has proven the key "
                       "of a party to the data (for a device: the device, its patient or an "
                       "authority): call auth_challenge, then authenticate",
                       {"role": role.value, "proven_keys": len(proven)})
