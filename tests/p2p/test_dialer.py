"""The dialer's own address: a bootnode (or record) that answers as this very node is dialed
once, not again and again with backoff (an operator's list of every node's address, its
own included, made a node dial itself every few seconds for ever)."""

from __future__ import annotations

import random

import pytest
import trio
from structlog.testing import capture_logs

from iomtnode.p2p.dialer import Dialer
from iomtnode.p2p.discovery import AddressBook
from iomtnode.p2p.handshake import TO_ITSELF
from iomtnode.p2p.hostconfig import DialError
from iomtnode.store import BlockStore

pytestmark = pytest.mark.timeout(30)
OWN = "127.0.0.1:7546"
OTHER = "127.0.0.2:7546"


class Host:
    """Answers every dial of OWN as this node and refuses every other (nobody listens)."""

    def __init__(self) -> None:
        self.dials: list[str] = []

    def peers(self) -> list:
        return []

    def is_refused(self, node_id: bytes) -> bool:
        return False

    async def dial(self, address: str, node_id: bytes | None = None):
        await trio.lowlevel.checkpoint()
        self.dials.append(address)
        if address == OWN:
            raise DialError(f"handshake failed: {TO_ITSELF}")
        raise DialError(f"cannot connect to {address}: refused")


async def test_an_address_that_answers_as_this_node_is_not_dialed_again(tmp_path,
                                                                         autojump_clock):
    host = Host()
    with BlockStore.open(tmp_path / "db") as store, capture_logs() as logs:
        book = AddressBook(store, "iomt-test", lambda: 0)
        dialer = Dialer(host, book, (OWN, OTHER), b"\x01" * 32, random.Random(1), 8)
        async with trio.open_nursery() as nursery:
            await nursery.start(dialer.run)
            await trio.sleep(600)  # virtual: ten minutes of dialing
            assert host.dials.count(OWN) == 1
            assert host.dials.count(OTHER) > 5  # an unreachable one is retried with backoff
            dialer.reset_all()  # this node moved: its old address may be another node's
            await trio.sleep(1)
            assert host.dials.count(OWN) == 2
            nursery.cancel_scope.cancel()
    assert [e["address"] for e in logs if e["event"] == "dial_own_address"] == [OWN, OWN]


async def test_a_bootnode_and_a_record_of_one_address_make_one_dial(tmp_path, autojump_clock):
    """The address book's record of a bootnode names the bootnode's address: both were
    dialed at once, and the two connections replaced each other at both ends (a heal in a
    chaos run: duplicate connections, then a sync request lost on the one dropped)."""
    from iomtnode.core.crypto import SigningKey
    from iomtnode.p2p.records import sign_record

    host = Host()
    other = SigningKey(bytes([7]) * 32)
    with BlockStore.open(tmp_path / "db") as store:
        book = AddressBook(store, "iomt-test", lambda: 0)
        book.update(sign_record(other, (OTHER,), 1, 1, "iomt-test"), 0, "127.0.0.0/24")
        book.answered(other.public, OTHER)  # tried: dialed whenever not connected
        dialer = Dialer(host, book, (OTHER,), b"\x01" * 32, random.Random(1), 8)
        async with trio.open_nursery() as nursery:
            await nursery.start(dialer.run)
            await trio.sleep(0.1)
            assert host.dials == [OTHER]
            nursery.cancel_scope.cancel()


async def test_a_restarted_node_dials_its_peers_of_before_first_at_the_same_pace(
        tmp_path, autojump_clock):
    """Its peers had dialed it (it was their bootnode): their records were never-answered
    ones, drawn at random among 64 junk records at one dial a second, and came back after up
    to 30 s. Now they are the first dials of the restart; the pace stays as it was."""
    from iomtnode.core.crypto import SigningKey
    from iomtnode.p2p.dialer import NEW_DIAL_BURST, NEW_DIAL_INTERVAL_S
    from iomtnode.p2p.records import sign_record

    host = Host()
    peers = [sign_record(SigningKey(bytes([i]) * 32), (f"127.0.{i}.1:7546",), 1, 1,
                         "iomt-test") for i in (2, 3)]
    junk = [sign_record(SigningKey(bytes([9, i]) * 16), (f"10.77.{i}.1:7546",), 1, 1,
                        "iomt-test") for i in range(64)]
    with BlockStore.open(tmp_path / "db") as store:
        before = AddressBook(store, "iomt-test", lambda: 0)
        for i, r in enumerate(junk):
            before.update(r, 0, f"66.{i % 16}.0.0/24")  # from 16 netgroups: many buckets
        for r in peers:
            before.update(r, 0, r.addresses[0].rsplit(".", 1)[0] + ".0/24")
            before.was_peer(r.node_id)  # it connected to us
        before.flush()
        book = AddressBook(store, "iomt-test", lambda: 0)  # the restart
        dialer = Dialer(host, book, (), b"\x01" * 32, random.Random(1), 8)
        async with trio.open_nursery() as nursery:
            await nursery.start(dialer.run)
            await trio.sleep(0.1)
            first = host.dials[:NEW_DIAL_BURST]  # one tick's dials (started in any order)
            assert len(first) == NEW_DIAL_BURST and {r.addresses[0] for r in peers} <= set(first)
            await trio.sleep(10 - 0.1)
            assert len(host.dials) <= NEW_DIAL_BURST + 10 / NEW_DIAL_INTERVAL_S + 1
            nursery.cancel_scope.cancel()
