"""``advertise_address``: a node behind NAT or in a pod tells its peers the name they dial;
its record carries that name, not the listener's or a probed IP, and no probe replaces it.
A name in a record (or a bootnode) is resolved again on every dial."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import trio

from iomtnode.config import Config
from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.p2p.discovery import wall_clock_ms
from iomtnode.p2p.router import Router
from iomtnode.store import BlockStore

pytestmark = pytest.mark.timeout(30)

CHAIN = "iomt-test"
GENESIS = blake2b256(b"genesis")
HEAD = bytes(32)
NAME = "node-b.ward.test"


def key(n: int) -> SigningKey:
    return SigningKey(bytes([n]) * 32)


class ChangingResolver(trio.abc.HostnameResolver):
    """Resolves :data:`NAME` to ``answers[0]``, then ``answers[1]``, ... (the last one for
    good), and records every lookup: a DNS name that moves between two dials."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        await trio.lowlevel.checkpoint()
        name = host.decode() if isinstance(host, bytes) else host
        if name != NAME:
            raise socket.gaierror(socket.EAI_NONAME, f"unknown host {name}")
        ip = self.answers[min(len(self.lookups), len(self.answers) - 1)]
        self.lookups.append(ip)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port)))]

    async def getnameinfo(self, sockaddr, flags):
        raise NotImplementedError


@pytest.fixture
async def stores(tmp_path) -> AsyncIterator[tuple[BlockStore, BlockStore]]:
    with BlockStore.open(tmp_path / "a") as sa, BlockStore.open(tmp_path / "b") as sb:
        yield sa, sb


async def test_an_advertised_name_is_the_record_and_no_probe_replaces_it(
        stores, nursery, monkeypatch):
    """A wildcard listener would advertise, and follow, the local IP toward its peers; with
    ``advertise_address`` its record names the operator's address, however that IP moves."""
    probed = iter(["10.9.0.1", "10.9.0.2", "10.9.0.3"] + ["10.9.0.4"] * 100)
    monkeypatch.setattr(Router, "_probe_local_ip", lambda self: next(probed))
    router = Router(Config(p2p_listen="0.0.0.0:0", advertise_address=f"{NAME}:7546"),
                    key(2), stores[1], CHAIN, GENESIS, lambda: (0, HEAD))
    assert await nursery.start(router.run) == f"{NAME}:7546"
    assert router.own.record is not None
    first = router.own.record
    assert first.addresses == (f"{NAME}:7546",)
    await trio.sleep(2.5)  # the address watcher looks every second
    assert router.own.record is first and router.address == f"{NAME}:7546"


async def test_without_advertise_address_a_wildcard_listener_follows_its_ip(
        stores, nursery, monkeypatch):
    """The counterpart: the record follows the probed IP (so the test above can fail)."""
    probed = iter(["10.9.0.1"] + ["10.9.0.2"] * 100)
    monkeypatch.setattr(Router, "_probe_local_ip", lambda self: next(probed))
    router = Router(Config(p2p_listen="0.0.0.0:0"), key(2), stores[1], CHAIN, GENESIS,
                    lambda: (0, HEAD))
    await nursery.start(router.run)
    with trio.fail_after(5):
        while not router.address.startswith("10.9.0.2:"):  # noqa: ASYNC110 (watcher's tick)
            await trio.sleep(0.1)
    assert router.own.record is not None and router.own.record.addresses[0].startswith(
        "10.9.0.2:")


async def test_a_name_in_a_record_is_resolved_again_on_every_dial(stores, nursery):
    """B advertises a name. A holds B's record; the name first points where nothing listens,
    then at B: A's next dial of the same record reaches B, so no answer was kept."""
    resolver = ChangingResolver(["127.0.0.3", "127.0.0.1"])  # B listens on 127.0.0.1 only
    trio.socket.set_custom_hostname_resolver(resolver)
    sa, sb = stores
    b = Router(Config(p2p_listen="127.0.0.1:0"), key(2), sb, CHAIN, GENESIS, lambda: (0, HEAD))
    await nursery.start(b.host.run)
    port = b.host.listen_port
    b_record = b.own.publish(f"{NAME}:{port}")  # what B's advertise_address would publish
    a = Router(Config(p2p_listen="127.0.0.1:0"), key(1), sa, CHAIN, GENESIS, lambda: (0, HEAD))
    assert a.book.update(b_record, wall_clock_ms(), "")
    await nursery.start(a.run)
    with trio.fail_after(20):
        while a.get(b.host.node_id) is None:  # noqa: ASYNC110 (dials with backoff)
            await trio.sleep(0.05)
    assert resolver.lookups[:2] == ["127.0.0.3", "127.0.0.1"]
    peer = a.get(b.host.node_id)
    assert peer is not None and peer.remote == f"{NAME}:{port}"


async def test_a_bootnode_name_is_resolved_again_on_every_dial(stores, nursery):
    resolver = ChangingResolver(["127.0.0.3", "127.0.0.1"])
    trio.socket.set_custom_hostname_resolver(resolver)
    sa, sb = stores
    b = Router(Config(p2p_listen="127.0.0.1:0"), key(2), sb, CHAIN, GENESIS, lambda: (0, HEAD))
    await nursery.start(b.run)
    a = Router(Config(p2p_listen="127.0.0.1:0", bootnodes=(f"{NAME}:{b.host.listen_port}",)),
               key(1), sa, CHAIN, GENESIS, lambda: (0, HEAD))
    await nursery.start(a.run)
    with trio.fail_after(20):
        while a.get(b.host.node_id) is None:  # noqa: ASYNC110 (dials with backoff)
            await trio.sleep(0.05)
    assert resolver.lookups[:2] == ["127.0.0.3", "127.0.0.1"]


async def test_moving_the_listener_keeps_the_advertised_address(stores, nursery):
    """``admin_set_listen`` moves the socket; peers still dial the operator's address (the
    NAT or the proxy in front maps it), in a new record."""
    router = Router(Config(p2p_listen="127.0.0.1:0", advertise_address=f"{NAME}:7546"),
                    key(2), stores[1], CHAIN, GENESIS, lambda: (0, HEAD))
    await nursery.start(router.run)
    before = router.own.record
    assert await router.move("127.0.0.1:0") == f"{NAME}:7546"
    assert router.own.record is not None and router.own.record is not before
    assert router.own.record.addresses == (f"{NAME}:7546",)


async def test_an_ipv6_listener_advertises_its_address_in_brackets(stores, nursery):
    """A record's address is HOST:PORT as a dial reads it: an IPv6 host in brackets
    ("::1:7546" could be the host ::1:7546 with no port, or ::1 on 7546)."""
    with socket.socket(socket.AF_INET6) as probe:  # skip where the host has no IPv6
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
    router = Router(Config(p2p_listen="[::1]:0"), key(2), stores[1], CHAIN, GENESIS,
                    lambda: (0, HEAD))
    address = await nursery.start(router.run)
    assert address == f"[::1]:{router.host.listen_port}"
    assert router.own.record is not None and router.own.record.addresses == (address,)
