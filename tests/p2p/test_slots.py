"""Connection slots: netgroups, limits per IP and netgroup for connections and handshakes,
reserved outbound slots, and the eviction that makes room for an inbound newcomer (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from iomtnode.p2p import slots
from iomtnode.p2p.slots import Candidate, Limits, Slots, netgroup, select_victim

KEY = b"k" * 16


@pytest.mark.parametrize(("ip", "group"), [
    ("10.1.2.3", "10.1.2.0/24"),
    ("10.1.2.250", "10.1.2.0/24"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1::/48"),
    ("[2001:db8:1:ffff::9]", "2001:db8:1::/48"),  # a site's 65,536 /64s: one netgroup
    ("::ffff:10.1.2.3", "10.1.2.0/24"),
    ("gateway.example", "host names"),  # names are free to make: all of them one group
    ("gw2.example", "host names"),
])
def test_netgroups_are_slash_24_and_slash_48(ip, group):
    assert netgroup(ip) == group


def cand(i: int, group: str, connected_at: float, rtt: float | None = None,
         **useful: float) -> Candidate:
    return Candidate(bytes([i]) * 32, group, connected_at, rtt, dict(useful))


def test_nobody_is_evicted_when_all_are_protected():
    few = [cand(i, f"10.0.{i}.0/24", float(i)) for i in range(4)]  # 4 netgroups: all protected
    assert select_victim(few, KEY) is None
    assert select_victim([], KEY) is None


def test_the_youngest_of_the_most_crowded_netgroup_is_evicted():
    honest = [cand(i, f"10.{i}.0.0/24", float(i)) for i in range(6)]
    attack = [cand(100 + i, "66.6.6.0/24", 1000.0 + i) for i in range(20)]
    victim = select_victim(honest + attack, KEY)
    assert victim == attack[-1].node_id  # the attacker's newest connection
    assert victim not in {c.node_id for c in honest}


@pytest.mark.parametrize("protected", ["rtt", "blocks", "txs", "votes", "longest"])
def test_each_protection_keeps_a_peer_that_would_otherwise_go(protected):
    # one crowded netgroup; its youngest member would go, unless a protection covers it
    crowd = [cand(i, "66.6.6.0/24", 100.0 + i) for i in range(30)]
    star = crowd[-1]
    assert select_victim(crowd, KEY) == star.node_id
    if protected == "rtt":
        star.rtt_s = 0.001
    elif protected == "longest":
        star.connected_at = 0.0
        crowd[-2].connected_at = 200.0  # the next youngest, to tell them apart
    else:
        star.useful_at[protected] = 5.0
    victim = select_victim(crowd, KEY)
    assert victim is not None and victim != star.node_id


def test_a_diverse_netgroup_is_protected_and_attackers_cannot_aim_at_which():
    lone = cand(1, "10.9.9.0/24", 500.0)  # the youngest of all, alone in its netgroup
    crowd = [cand(10 + i, "66.6.6.0/24", 100.0 + i) for i in range(30)]
    assert select_victim([lone, *crowd], KEY) != lone.node_id


@dataclass
class FakePeer:
    node_id: bytes
    outbound: bool
    remote: str
    connected_at: float = 0.0
    rtt_s: float | None = None
    useful_at: dict[str, float] = field(default_factory=dict)


def test_inbound_cannot_take_the_reserved_outbound_slots():
    table = Slots(Limits(max_peers=6, outbound_slots=2), KEY)
    inbound = [FakePeer(bytes([i]) * 32, False, f"10.0.{i}.1:1", float(i)) for i in range(4)]
    assert table.inbound_refusal(inbound[:3]) is None
    assert table.victim(inbound[:3]) is None  # not full: nobody goes
    # 4 inbound in 4 netgroups: full, and every one protected by its netgroup
    assert "inbound slots full (4 of 4" in str(table.inbound_refusal(inbound))
    # outbound peers count against max_peers, but never make inbound room by going
    mixed = inbound[:3] + [FakePeer(b"o" * 32, True, "10.9.0.1:1")] * 3
    assert table.inbound_refusal(mixed) is not None


def test_a_full_inbound_evicts_from_the_crowded_netgroup():
    table = Slots(Limits(max_peers=12, outbound_slots=2), KEY)
    peers = [FakePeer(bytes([i]) * 32, False, f"10.0.{i}.1:1", float(i)) for i in range(4)]
    peers += [FakePeer(bytes([50 + i]) * 32, False, f"66.6.6.{i}:1", 100.0 + i)
              for i in range(6)]
    assert table.inbound_refusal(peers) is None
    victim = table.victim(peers)
    assert victim is not None and victim.remote.startswith("66.6.6.")


class Handshake:
    """A pending handshake as the host hands it to Slots: it can be cancelled."""

    def __init__(self, ip: str) -> None:
        self.ip, self.cancelled = ip, False

    def cancel(self) -> None:
        self.cancelled = True


def opened(table: Slots, ip: str) -> tuple[str | None, str | None, Handshake]:
    handshake = Handshake(ip)
    refusal, evicted = table.open_inbound(ip, handshake)
    return refusal, evicted, handshake


def test_pending_handshakes_are_limited_per_ip_and_netgroup():
    table = Slots(Limits(max_pending_per_ip=2, max_pending_per_netgroup=3), KEY)
    first = opened(table, "10.0.0.1")[2]
    opened(table, "10.0.0.1")
    assert "from 10.0.0.1" in str(opened(table, "10.0.0.1")[0])
    assert opened(table, "10.0.0.2")[0] is None
    assert "from 10.0.0.0/24" in str(opened(table, "10.0.0.3")[0])
    assert opened(table, "10.0.1.1")[0] is None  # another netgroup gets in
    assert table.pending("10.0.0.1") == 2 and table.pending_in("10.0.0.0/24") == 3
    table.handshake_over(first)  # registered: no longer pending, still connected
    assert table.pending("10.0.0.1") == 1 and table.pending_total == 3
    assert opened(table, "10.0.0.1")[0] is None


def test_a_full_handshake_queue_makes_room_from_the_most_crowded_netgroup():
    table = Slots(Limits(max_pending_per_ip=4, max_pending_per_netgroup=4, max_pending=6), KEY)
    flood = [opened(table, f"66.6.6.{i}")[2] for i in range(4)]
    flood += [opened(table, f"66.6.7.{i}")[2] for i in range(2)]
    assert table.pending_total == 6
    refusal, evicted, honest = opened(table, "10.0.0.1")  # a netgroup with none pending
    assert refusal is None and evicted == "66.6.6.0"  # the oldest of the most crowded goes
    assert flood[0].cancelled and not any(h.cancelled for h in flood[1:])
    assert table.pending_total == 6 and table.pending_in("66.6.6.0/24") == 3
    table.handshake_over(flood[0])  # its task ends later: counted once only
    assert table.pending_total == 6
    # the crowded netgroup cannot take back its place from a less crowded one
    assert "more than 6 handshakes" in str(opened(table, "66.6.6.9")[0])
    # newcomers from fresh netgroups take places until every netgroup holds one ...
    assert [opened(table, f"10.0.{i}.1")[1] is not None for i in range(1, 5)] == [
        True, True, True, False]
    assert table.pending_in("66.6.6.0/24") == table.pending_in("66.6.7.0/24") == 1
    assert not honest.cancelled  # ... and nobody takes the place of a lone newcomer


def test_an_ipv6_site_is_one_netgroup_and_cannot_hold_every_handshake_place():
    # a site is given a /48 (a tunnel broker hands one out free): with a netgroup per /64,
    # 64 silent sockets from 64 of its /64s held every place and an honest peer from
    # anywhere was refused (reproduced against a real node)
    table = Slots(Limits(), KEY)
    flood = [opened(table, f"2001:db8:1:{i:x}::1")[0] for i in range(slots.MAX_PENDING)]
    assert flood.count(None) == slots.MAX_PENDING_PER_NETGROUP
    assert "from 2001:db8:1::/48" in str(flood[-1])
    assert opened(table, "2001:db8:2::1")[0] is None  # another site gets in


def test_an_ipv6_hosts_addresses_of_one_64_share_its_per_address_limits():
    """One party holds every address of a /64: counted apart, it took its /48's whole share
    of handshakes and connections (the per-address limit bounded nothing)."""
    table = Slots(Limits(max_pending_per_ip=2, max_pending_per_netgroup=8), KEY)
    assert [opened(table, f"2001:db8:1:2::{i + 1}")[0] is None for i in range(3)] == [
        True, True, False]
    assert "from 2001:db8:1:2::/64" in str(opened(table, "2001:db8:1:2::9")[0])
    assert table.pending("2001:db8:1:2::77") == 2
    assert opened(table, "2001:db8:1:3::1")[0] is None  # the next /64 has its own share
    table = Slots(Limits(max_pending_per_ip=4, max_inbound_per_ip=2,
                         max_inbound_per_netgroup=8), KEY)
    for i in range(3):
        opened(table, f"2001:db8:1:2::{i + 1}")
    assert "more than 2 connections from 2001:db8:1:2::/64" in str(
        table.connection_refusal("2001:db8:1:2::5"))
    assert table.connection_refusal("2001:db8:1:3::5") is None


def test_the_accept_rate_of_an_ipv6_host_is_counted_by_its_64():
    from iomtnode.p2p.acceptrate import AcceptRate
    from iomtnode.p2p.ratelimit import Rate

    rate = AcceptRate(per_ip=Rate(per_s=0.001, burst=2), per_netgroup=Rate(per_s=1, burst=100))
    assert [rate.refusal(f"2001:db8::{i + 1}", 0.0) for i in range(2)] == [None, None]
    assert "from 2001:db8::/64" in str(rate.refusal("2001:db8::99", 0.0))
    assert rate.refusal("2001:db8:0:1::1", 0.0) is None


def test_an_ipv6_address_is_its_64():
    assert slots.address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert slots.address_key("[::ffff:10.1.2.3]") == "10.1.2.3"
    assert slots.address_key("10.1.2.3") == "10.1.2.3"


def test_connections_are_limited_per_ip_and_netgroup():
    table = Slots(Limits(max_inbound_per_ip=2, max_inbound_per_netgroup=3), KEY)
    for _ in range(2):
        table.handshake_over(opened(table, "10.0.0.1")[2])
    assert table.connection_refusal("10.0.0.1") is None  # the second is within the limit
    third = opened(table, "10.0.0.1")[2]  # a third opens: over the limit
    assert "more than 2 connections from 10.0.0.1" in str(table.connection_refusal("10.0.0.1"))
    table.close_inbound("10.0.0.1")
    table.handshake_over(third)
    opened(table, "10.0.0.2")
    opened(table, "10.0.0.3")
    assert "from 10.0.0.0/24" in str(table.connection_refusal("10.0.0.3"))
    assert slots.MAX_PENDING_PER_IP < slots.MAX_INBOUND_PER_IP < slots.MAX_INBOUND_PER_NETGROUP
