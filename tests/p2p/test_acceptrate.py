"""Connections per second from one IP and one netgroup, refused before their TLS handshake:
a client that replays a recorded ClientHello in a loop costs the node a write, not a
handshake."""

from __future__ import annotations

import pytest
import trio
from trio.testing import memory_stream_pair

from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.p2p.acceptrate import ACCEPTS_PER_IP, ACCEPTS_PER_NETGROUP, AcceptRate
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
