"""How often one address may open a connection to this node, checked when the socket is
accepted: before anything is read from it, so before its TLS handshake.

A TLS handshake costs the node about 1.5 ms of its main thread (key exchange, a certificate
signature, the connection's setup), and the client nothing to speak of: it can send the same
recorded ClientHello every time and close without reading the answer. The handshake limits
of :mod:`.slots` bound how many run at once from one address, not how often one starts, so
one address that reconnects in a loop kept a node's main thread busy. Here each IP and each
netgroup (an IPv4 /24, an IPv6 /48: :func:`.slots.netgroup`) has a token bucket of
connections; a socket that finds either empty gets HTTP 503 unread (the host's
``refuse_unread``: one write, no TLS). Honest peers connect a few times per restart or
network change. A burst is twice the connections an address may hold (the inbound limits
per IP and per netgroup), and at least the default's, so it grows with them: a localnet,
whose nodes all share 127.0.0.1, raises those limits to its size, and every node of it may
restart at once.

A socket refused here, or for any other reason before anything is read from it (a banned
address, too many handshakes in progress), costs the node a write and, without a bound, a
line of log: one address connecting and closing in a loop made a node write 340 kB of log a
second. :meth:`AcceptRate.log_refused` logs the first refusal of an IP, then at most one
every :data:`REFUSAL_LOG_INTERVAL_S`, which says how many were not logged since.

Pure but for that log line: the host passes ``now`` (seconds, monotonic). Memory: at most
:data:`MAX_TRACKED` buckets, and as many IPs whose refusals were logged; the least recently
used is forgotten first (a bucket then starts full again, an IP's next refusal is logged).
"""

from __future__ import annotations

from collections import OrderedDict

from structlog.typing import FilteringBoundLogger

from ..log import OncePer
from .ratelimit import Rate, TokenBucket
from .slots import Limits, address_key, netgroup

BURST_PER_CONNECTION = 2  # a burst: this many times the inbound connections allowed
ACCEPTS_PER_IP = Rate(per_s=4.0, burst=BURST_PER_CONNECTION * Limits().max_inbound_per_ip)
# ^ inbound connections/s from one IP (burst 16 connections with the default limits)
ACCEPTS_PER_NETGROUP = Rate(per_s=16.0,
                            burst=BURST_PER_CONNECTION * Limits().max_inbound_per_netgroup)
# ^ ... from one /24 (IPv6 /48) (burst 32)
MAX_TRACKED = 4096  # IPs and netgroups whose recent connections are remembered
REFUSAL_LOG_INTERVAL_S = 10.0  # one logged refusal of an IP per this; the others are counted


class AcceptRate:
    """The buckets of the addresses that connected recently (module doc)."""

    def __init__(self, per_ip: Rate = ACCEPTS_PER_IP,
                 per_netgroup: Rate = ACCEPTS_PER_NETGROUP) -> None:
        self.per_ip = per_ip
        self.per_netgroup = per_netgroup
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._logged = OncePer(REFUSAL_LOG_INTERVAL_S, MAX_TRACKED)  # by IP
        self.refused = 0  # connections refused for their rate, since the start

    @classmethod
    def for_limits(cls, limits: Limits) -> AcceptRate:
        """The default rates, with bursts of :data:`BURST_PER_CONNECTION` times the inbound
        connections ``limits`` allow per IP and per netgroup, never below the defaults'."""
        ip, group = ACCEPTS_PER_IP, ACCEPTS_PER_NETGROUP
        return cls(Rate(ip.per_s, max(ip.burst, BURST_PER_CONNECTION * limits.max_inbound_per_ip)),
                   Rate(group.per_s, max(group.burst, BURST_PER_CONNECTION
                                         * limits.max_inbound_per_netgroup)))

    def refusal(self, ip: str, now: float) -> str | None:
        """Take a connection from ``ip`` out of its IP's and netgroup's buckets, or say why
        it is refused (neither bucket is charged then)."""
        group = netgroup(ip)
        key = address_key(ip)  # an IPv6 address's /64 is one address
        charged = ((self._bucket(key, self.per_ip, now), self.per_ip, key),
                   (self._bucket("g:" + group, self.per_netgroup, now), self.per_netgroup, group))
        for bucket, rate, name in charged:
            if bucket.refill(now) < 1:
                self.refused += 1
                return (f"more than {rate.per_s:g} connections a second from {name} "
                        f"(after a burst of {rate.burst:g})")
        for bucket, _, _ in charged:
            bucket.try_take(now)
        return None

    def unlogged(self, ip: str, now: float) -> int | None:
        """A socket from ``ip`` was refused: None if its refusal is not to be logged now (it is
        counted), else the refusals of ``ip`` not logged since the last one logged (0 for
        its first in :data:`REFUSAL_LOG_INTERVAL_S`)."""
        return self._logged.unlogged(ip, now)

    def log_refused(self, log: FilteringBoundLogger, remote: str, ip: str, reason: str,
                    now: float) -> None:
        """Log ``peer_handshake_rejected`` (status 503) for the socket from ``remote`` (of
        ``ip``) refused unread for ``reason``, if :meth:`unlogged` says so."""
        if (unlogged := self.unlogged(ip, now)) is not None:
            log.info("peer_handshake_rejected", remote=remote, status=503, reason=reason,
                     unlogged=unlogged)

    def _bucket(self, key: str, rate: Rate, now: float) -> TokenBucket:
        """``key``'s bucket, made full if new, and now the most recently used."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate.per_s, rate.burst, now)
            while len(self._buckets) > MAX_TRACKED:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        return bucket
