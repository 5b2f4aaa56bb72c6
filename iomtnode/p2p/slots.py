"""Connection slots: how many connections, from where, and which inbound peer makes room.

Pure: no I/O, no clock (the host passes ``now`` and the peers' figures). The host asks
:class:`Slots` at three moments:

1. **A socket is accepted** (nothing read yet): :meth:`Slots.open_inbound`. Connections in
   their handshake (from the accept to the registered peer, at most ``handshake_timeout_s``)
   are limited per IP, per netgroup and in all, so sockets that never finish their handshake
   from a few addresses cannot keep honest peers out: they fill their own address's share.
   When the handshakes in all are at their limit, a newcomer from a netgroup with fewer of
   them than the most crowded one takes the place of that netgroup's oldest handshake.
2. **The HTTP upgrade arrived**: :meth:`Slots.connection_refusal`. Inbound connections
   (handshaking or registered) are limited per IP and per netgroup.
3. **A handshake completed**: inbound connections at most ``max_peers - outbound_slots``
   (the outbound slots are reserved: inbound can never take them). When inbound is full a
   newcomer does not get refused: :func:`select_victim` picks an inbound peer to evict, as
   Bitcoin Core's ``SelectNodeToEvict`` does, and the newcomer takes its slot; only when
   every inbound peer is protected is the newcomer refused.

A netgroup is an IPv4 /24 or an IPv6 /48, and all host names are one (:func:`netgroup`):
addresses an attacker can get many of cheaply sit in few netgroups. An IPv6 site is given a
/48 (65,536 /64s; tunnel brokers hand them out free): with a netgroup per /64, 64 silent
sockets from one /48 held every handshake place and an honest peer from anywhere got 503.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ..core.crypto import blake2b256

OUTBOUND_SLOTS = 10  # connections kept for peers this node dials; inbound never takes them
MAX_INBOUND_PER_IP = 8  # inbound connections (handshaking or registered) from one IP
MAX_INBOUND_PER_NETGROUP = 16  # ... and from one /24 (IPv6 /48)
MAX_PENDING = 64  # inbound connections in their handshake at once, in all
MAX_PENDING_PER_IP = 4  # ... from one IP
MAX_PENDING_PER_NETGROUP = 8  # ... from one /24 (IPv6 /48)
IPV4_NETGROUP_BITS = 24
IPV6_NETGROUP_BITS = 48  # a site's allocation (RFC 6177), as an IPv4 /24 is one site's
IPV6_ADDRESS_BITS = 64  # one subscriber's network: whoever has one address of it has them all
NAMES_NETGROUP = "host names"  # the one netgroup of every address that is not an IP

# Eviction: inbound peers protected from eviction, by what they are good for (Bitcoin Core's
# numbers, net.cpp SelectNodeToEvict).
PROTECT_BY_NETGROUP = 4  # distinct netgroups, picked by a keyed hash the attacker cannot aim at
PROTECT_BY_RTT = 8  # the lowest round-trip times
PROTECT_BY_USEFUL = 4  # per kind of useful message (blocks, transactions, votes): most recent
PROTECT_LONGEST_FRACTION = 0.5  # of those left, this fraction connected longest
# What a peer delivered that counts as useful; which message kinds deliver what is declared by
# the reactors that own them, when they register (``Router.register(..., useful=...)``)
USEFUL_KINDS = ("blocks", "txs", "votes")


def netgroup(ip: str) -> str:
    """The /24 of an IPv4 address, the /48 of an IPv6 one (IPv4-mapped IPv6 as IPv4);
    every host name is in one group, :data:`NAMES_NETGROUP` (names cost nothing to make,
    and any number of them can point at one address: a group each would let one party
    fill any table bucketed by netgroup)."""
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return NAMES_NETGROUP
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = IPV4_NETGROUP_BITS if address.version == 4 else IPV6_NETGROUP_BITS
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


def address_key(ip: str) -> str:
    """What counts as one address: an IPv4 address, or an IPv6 address's /64 (one
    subscriber's network: a party that has one has them all; IPv4-mapped IPv6 as IPv4),
    bracketed or not; other names whole. Bans by address (:mod:`.score`), the API's and the
    metrics endpoint's per-address limits count by it."""
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_ADDRESS_BITS), strict=False))
    return ip


@dataclass(frozen=True, slots=True)
class Limits:
    """How many connections, and from where (see the module doc for when each applies)."""

    max_peers: int = 50
    outbound_slots: int = OUTBOUND_SLOTS
    max_inbound_per_ip: int = MAX_INBOUND_PER_IP
    max_inbound_per_netgroup: int = MAX_INBOUND_PER_NETGROUP
    max_pending: int = MAX_PENDING
    max_pending_per_ip: int = MAX_PENDING_PER_IP
    max_pending_per_netgroup: int = MAX_PENDING_PER_NETGROUP

    @property
    def max_inbound(self) -> int:
        """Inbound connections at most: what the reserved outbound slots leave."""
        return max(0, self.max_peers - self.outbound_slots)


@dataclass(slots=True)
class Candidate:
    """An inbound peer as eviction sees it; times are the host's monotonic seconds."""

    node_id: bytes
    netgroup: str
    connected_at: float
    rtt_s: float | None  # latest ping round trip (None: not measured yet)
    useful_at: dict[str, float] = field(default_factory=dict)  # USEFUL_KINDS -> last time


def select_victim(candidates: Sequence[Candidate], secret: bytes) -> bytes | None:
    """The node id of the inbound peer to evict for a newcomer, or None (all protected).

    Protected, in this order, each from the candidates still left: the peers of
    :data:`PROTECT_BY_NETGROUP` netgroups picked by a hash keyed with ``secret`` (diversity an
    attacker cannot aim at), the :data:`PROTECT_BY_RTT` lowest round trips, for each kind of
    useful message the :data:`PROTECT_BY_USEFUL` that delivered one most recently, then the
    longest-connected half. Of the rest, the netgroup with the most connections (ties: the one
    whose newest connection is youngest) loses its youngest connection.
    """
    left = list(candidates)

    def protect(key: Callable[[Candidate], Any], count: int,
                eligible: Callable[[Candidate], bool] = lambda c: True) -> None:
        ranked = sorted((c for c in left if eligible(c)), key=key)
        for c in ranked[:count]:
            left.remove(c)

    groups = sorted({c.netgroup for c in left}, key=lambda g: blake2b256(secret + g.encode()))
    for group in groups[:PROTECT_BY_NETGROUP]:
        # one peer per protected netgroup: the longest connected of that group
        oldest = min((c for c in left if c.netgroup == group), key=lambda c: c.connected_at)
        left.remove(oldest)
    protect(lambda c: c.rtt_s, PROTECT_BY_RTT, lambda c: c.rtt_s is not None)
    for kind in USEFUL_KINDS:
        protect(lambda c, k=kind: -c.useful_at[k], PROTECT_BY_USEFUL,
                lambda c, k=kind: k in c.useful_at)
    protect(lambda c: c.connected_at, int(len(left) * PROTECT_LONGEST_FRACTION))
    if not left:
        return None
    by_group: dict[str, list[Candidate]] = {}
    for c in left:
        by_group.setdefault(c.netgroup, []).append(c)
    crowded = max(by_group.values(),
                  key=lambda cs: (len(cs), max(c.connected_at for c in cs)))
    return max(crowded, key=lambda c: c.connected_at).node_id


class Connected(Protocol):
    """What eviction reads of a registered peer (a :class:`~.peer.Peer`)."""

    @property
    def node_id(self) -> bytes: ...
    @property
    def outbound(self) -> bool: ...
    @property
    def remote(self) -> str: ...  # "ip:port"
    @property
    def connected_at(self) -> float: ...
    @property
    def rtt_s(self) -> float | None: ...
    @property
    def useful_at(self) -> dict[str, float]: ...


_P = TypeVar("_P", bound=Connected)


class Cancellable(Protocol):
    """A pending handshake, as the host hands it over: it can be called off."""

    def cancel(self) -> None: ...


class Slots:
    """Counts of inbound connections per IP and netgroup, handshaking and registered; the
    refusals of the module doc. The host calls ``open_*``/``close_*`` in pairs.
    ``evict_key`` keys the hash that picks the netgroups eviction protects (keep it secret)."""

    def __init__(self, limits: Limits, evict_key: bytes) -> None:
        self.limits = limits
        self._evict_key = evict_key
        self._pending: Counter[str] = Counter()  # by IP and by netgroup ("g:" prefix)
        self._inbound: Counter[str] = Counter()  # open inbound sockets, same keys
        self._handshakes: dict[Cancellable, str] = {}  # pending, oldest first -> IP
        self.pending_total = 0

    def open_inbound(self, ip: str, handshake: Cancellable) -> tuple[str | None, str | None]:
        """A socket from ``ip`` was accepted: count it open and handshaking, or say why it is
        refused (``(reason, None)``). ``(None, evicted_ip)`` when it took the place of the
        oldest handshake of the most crowded netgroup, which is cancelled."""
        lim, group = self.limits, netgroup(ip)
        if self._pending[address_key(ip)] >= lim.max_pending_per_ip:
            return (f"more than {lim.max_pending_per_ip} handshakes in progress from "
                    f"{address_key(ip)}"), None
        if self._pending["g:" + group] >= lim.max_pending_per_netgroup:
            return (f"more than {lim.max_pending_per_netgroup} handshakes in progress "
                    f"from {group}"), None
        evicted = None
        if self.pending_total >= lim.max_pending:
            crowded = max(self._handshakes.values(), default=ip,
                          key=lambda i: self._pending["g:" + netgroup(i)])
            if self._pending["g:" + netgroup(crowded)] <= self._pending["g:" + group] + 1:
                return f"more than {lim.max_pending} handshakes in progress", None
            oldest = next(h for h, i in self._handshakes.items()
                          if netgroup(i) == netgroup(crowded))
            evicted = self._handshakes[oldest]
            self.handshake_over(oldest)
            oldest.cancel()
        for key in _keys(ip):
            self._inbound[key] += 1
            self._pending[key] += 1
        self.pending_total += 1
        self._handshakes[handshake] = ip
        return None, evicted

    def connection_refusal(self, ip: str) -> str | None:
        """Why an upgrade from ``ip`` (counted open) is refused (HTTP 503), or None."""
        lim, group = self.limits, netgroup(ip)
        if self._inbound[address_key(ip)] > lim.max_inbound_per_ip:
            return f"more than {lim.max_inbound_per_ip} connections from {address_key(ip)}"
        if self._inbound["g:" + group] > lim.max_inbound_per_netgroup:
            return f"more than {lim.max_inbound_per_netgroup} connections from {group}"
        return None

    def victim(self, peers: Sequence[_P]) -> _P | None:
        """The inbound peer of ``peers`` (the registered ones) a newcomer evicts, if inbound
        is full; None if it is not full or every inbound peer is protected."""
        inbound = {p.node_id: p for p in peers if not p.outbound}
        if len(inbound) < self.limits.max_inbound and len(peers) < self.limits.max_peers:
            return None
        chosen = select_victim([Candidate(p.node_id, netgroup(_ip(p.remote)), p.connected_at,
                                          p.rtt_s, p.useful_at) for p in inbound.values()],
                               self._evict_key)
        return None if chosen is None else inbound[chosen]

    def inbound_refusal(self, peers: Sequence[Connected]) -> str | None:
        """Why no inbound newcomer can get in beside ``peers`` now (inbound full and every
        inbound peer protected), or None."""
        inbound = sum(not p.outbound for p in peers)
        lim = self.limits
        if (inbound >= lim.max_inbound or len(peers) >= lim.max_peers) and (
                self.victim(peers) is None):
            return (f"inbound slots full ({inbound} of {lim.max_inbound}, max_peers "
                    f"{lim.max_peers}) and no peer to evict")
        return None

    def handshake_over(self, handshake: Cancellable) -> None:
        """The handshake is over: registered, failed, or cancelled for a newcomer (then this
        was done already and does nothing)."""
        ip = self._handshakes.pop(handshake, None)
        if ip is not None:
            _decrement(self._pending, _keys(ip))
            self.pending_total -= 1

    def close_inbound(self, ip: str) -> None:
        """The socket from ``ip`` is closed."""
        _decrement(self._inbound, _keys(ip))

    def pending(self, ip: str) -> int:
        """Inbound handshakes in progress from ``ip`` (an IPv6 one: from its /64)."""
        return self._pending[address_key(ip)]

    def pending_in(self, group: str) -> int:
        """Inbound handshakes in progress from the netgroup ``group`` (see :func:`netgroup`)."""
        return self._pending["g:" + group]


def _ip(remote: str) -> str:
    """The IP of ``"ip:port"`` or ``"[v6]:port"``."""
    return remote.rsplit(":", 1)[0].strip("[]") if ":" in remote else remote


def _keys(ip: str) -> tuple[str, str]:
    """The counters a socket from ``ip`` counts in: its address (an IPv6 /64: one party has
    them all, :func:`address_key`) and its netgroup."""
    return address_key(ip), "g:" + netgroup(ip)


def _decrement(counter: Counter[str], keys: Iterable[str]) -> None:
    for key in keys:
        counter[key] -= 1
        if counter[key] <= 0:
            del counter[key]
