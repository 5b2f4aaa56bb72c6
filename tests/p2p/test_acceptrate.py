"""Connections per second from one IP and one netgroup, refused before their TLS handshake:
a client that replays a recorded ClientHello in a loop costs the node a write, not a
handshake."""

from __future__ import annotations

import pytest
import trio
from structlog.testing import capture_logs
from trio.testing import memory_stream_pair

from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.p2p.acceptrate import (
    ACCEPTS_PER_IP,
    ACCEPTS_PER_NETGROUP,
    MAX_TRACKED,
    REFUSAL_LOG_INTERVAL_S,
    AcceptRate,
)
from iomtnode.p2p.ratelimit import Rate
from iomtnode.p2p.slots import Limits

from .test_transport import start_host

pytestmark = pytest.mark.timeout(60)


def test_the_buckets_refuse_past_the_burst_and_refill():
    rate = AcceptRate(Rate(per_s=2.0, burst=3), Rate(per_s=1.0, burst=5))
    assert [rate.refusal("10.0.0.1", 0.0) for _ in range(3)] == [None] * 3
    assert rate.refusal("10.0.0.1", 0.0) == (
        "more than 2 connections a second from 10.0.0.1 (after a burst of 3)")
    assert rate.refusal("10.0.0.1", 0.5) is None  # one token back
    assert rate.refusal("10.0.0.2", 0.5) is None  # the /24's fifth
    assert rate.refusal("10.0.0.3", 0.5) == (
        "more than 1 connections a second from 10.0.0.0/24 (after a burst of 5)")
    assert rate.refusal("10.0.1.3", 0.5) is None  # another /24
    assert rate.refused == 2


async def test_a_reconnecting_address_is_refused_before_tls(nursery, autojump_clock):
    host = await start_host(nursery, SigningKey(blake2b256(b"node")))
    answers = []
    for _ in range(ACCEPTS_PER_IP.burst + 1):  # a TLS ClientHello's first bytes, then close
        sa, sb = memory_stream_pair()
        await sa.send_all(b"\x16\x03\x01\x00\x05hello")
        await host.accept_stream(sb, "10.0.0.9:5000")
        answers.append(await sa.receive_some())
    assert all(not a.startswith(b"HTTP/1.1 503") for a in answers[:-1])  # a TLS alert
    assert answers[-1].startswith(b"HTTP/1.1 503")
    assert b"connections a second from 10.0.0.9" in answers[-1]
    await trio.sleep(1 / ACCEPTS_PER_IP.per_s)  # a token back
    sa, sb = memory_stream_pair()
    await sa.send_all(b"\x16\x03\x01\x00\x05hello")
    await host.accept_stream(sb, "10.0.0.9:5000")
    assert not (await sa.receive_some()).startswith(b"HTTP/1.1 503")
    assert host.accepts.refused == 1
    assert ACCEPTS_PER_NETGROUP.burst > ACCEPTS_PER_IP.burst  # one IP never empties its /24


def test_the_bursts_grow_with_the_connections_an_address_may_hold():
    assert (ACCEPTS_PER_IP.burst, ACCEPTS_PER_NETGROUP.burst) == (16, 32)
    localnet = AcceptRate.for_limits(Limits(max_inbound_per_ip=63, max_inbound_per_netgroup=63))
    assert [localnet.refusal("127.0.0.1", 0.0) for _ in range(126)] == [None] * 126
    assert localnet.refusal("127.0.0.1", 0.0) is not None
    tight = AcceptRate.for_limits(Limits(max_inbound_per_ip=1, max_inbound_per_netgroup=1))
    assert (tight.per_ip, tight.per_netgroup) == (ACCEPTS_PER_IP, ACCEPTS_PER_NETGROUP)


async def test_refusals_of_an_address_reconnecting_in_a_loop_are_logged_once_an_interval(
        nursery, autojump_clock):
    # each refused socket wrote a log line: one address connecting and closing in a loop made
    # a node write 340 kB of log a second (1,672 refusals a second), with nothing to read
    host = await start_host(nursery, SigningKey(blake2b256(b"node")))

    async def refused(remote: str, count: int) -> None:
        for _ in range(count):
            sa, sb = memory_stream_pair()
            await host.accept_stream(sb, remote)
            assert (await sa.receive_some()).startswith(b"HTTP/1.1 503")

    now = trio.current_time()
    for i, ip in enumerate(("10.0.0.9", "10.0.0.10")):  # banned: refused unread, every time
        host.scoreboard.penalize(bytes([i]) * 32, 1000, "test", now, address=ip)
    with capture_logs() as logs:
        await refused("10.0.0.9:5000", 500)
        await refused("10.0.0.10:5000", 3)  # another address of the /24: its own first line
        await trio.sleep(REFUSAL_LOG_INTERVAL_S)
        await refused("10.0.0.9:5000", 2)
    lines = [(e["remote"], e["unlogged"]) for e in logs
             if e["event"] == "peer_handshake_rejected"]
    assert lines == [("10.0.0.9:5000", 0), ("10.0.0.10:5000", 0), ("10.0.0.9:5000", 499)]


def test_the_refusal_log_remembers_a_bounded_number_of_addresses():
    rate = AcceptRate()
    ips = [f"10.{i // 256}.{i % 256}.1" for i in range(MAX_TRACKED)]
    assert [rate.unlogged(ip, 0.0) for ip in ips] == [0] * MAX_TRACKED
    assert rate.unlogged(ips[0], 1.0) is None  # remembered: not logged again yet
    assert rate.unlogged("11.0.0.1", 1.0) == 0  # one more: the least recently refused ...
    assert rate.unlogged(ips[1], 1.0) == 0  # ... is forgotten, its next refusal logged
    assert rate.unlogged(ips[0], 1.0) is None  # the others are kept
    assert rate.unlogged(ips[0], REFUSAL_LOG_INTERVAL_S) == 2  # the two not logged
