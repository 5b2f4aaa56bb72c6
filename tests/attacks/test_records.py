"""Finding 4, peer records choose what the network dials: junk records, a record carrying an
honest node's address, and records stamped ahead, each sent by an attacker's node over the
wire (in process, on the memory network, under a virtual clock). Each is refused or made
harmless; the node still dials out, its honest peers stay connected, the network finalizes.
"""

from __future__ import annotations

import pytest
import structlog
import trio

from iomtnode.core.crypto import SigningKey
from iomtnode.p2p.addrman import MAX_RECORD_FUTURE_MS
from iomtnode.p2p.dialer import NEW_DIAL_BURST, NEW_DIAL_INTERVAL_S
from iomtnode.p2p.messages import PeerRecords
from iomtnode.p2p.records import PeerRecord, sign_record

from ..node.harness import Net, holds_for, start_net, wait_for
from .throwaway import throwaway_host

pytestmark = pytest.mark.timeout(120)

ATTACKER_IP = "10.66.0.1"
WINDOW_S = 10.0  # seconds after a restart whose dials are counted
PEERS_BACK_S = 3.0  # a restarted node has its peers of before again within this


def junk(net: Net, address: str, *, ahead_ms: int = 0) -> PeerRecord:
    """A valid record of a fresh key (signed by it) naming ``address``."""
    return sign_record(SigningKey.generate(), (address,), 1, net.now_ms() + ahead_ms,
                       net.chain_id)


async def send_records(nursery, net: Net, records: list[PeerRecord]) -> None:
    """Connect an attacker's node to node 0 and hand it ``records``."""
    attacker = await throwaway_host(nursery, net, ATTACKER_IP)
    peer = await attacker.dial(net.p2p(0))
    for i in range(0, len(records), 64):
        peer.send(PeerRecords([r.raw for r in records[i:i + 64]]))


def dials(logs: list[dict], node: bytes, addresses: set[str]) -> list[dict]:
    return [e for e in logs if e["event"] == "peer_dial_failed"
            and e.get("node") == node.hex()[:16] and e["address"] in addresses]


async def test_junk_records_after_a_restart_make_a_trickle_of_dials(tmp_path, nursery,
                                                                     autojump_clock):
    net = await start_net(Net(tmp_path, 3, authorities=2), nursery)
    book = net.node(0).p2p.book
    records = [junk(net, f"10.77.{i}.1:7546") for i in range(64)]
    await send_records(nursery, net, records)
    addresses = {r.addresses[0] for r in records}
    await wait_for(lambda: len(book.records) > 2, "junk records stored")
    stored = len(set(book.records) & {r.node_id for r in records})
    await net.stop(0)
    h0 = max(net.heights()[1:])
    with structlog.testing.capture_logs() as logs:
        restarted = await net.start(nursery, 0)
        started = trio.current_time()
        # the restarted node was the others' bootnode: they dialed it, so its book holds them
        # as never answered, but as its peers of before, its first dials among the junk (drawn
        # at random among it, they came back after up to 30 s, their backoff's cap)
        await net.wait(lambda: len(restarted.p2p.host.peers()) >= 2, "honest peers back",
                       timeout=PEERS_BACK_S)
        await trio.sleep_until(started + WINDOW_S)  # the window whose dials are counted
    tried = dials(logs, net.keys[0].public, addresses)
    assert stored > 0 and tried  # the attack put records in the book, and they are dialed ...
    # ... one at a time, not in a burst (88 dials in 10 s before)
    assert len(tried) <= NEW_DIAL_BURST + WINDOW_S / NEW_DIAL_INTERVAL_S
    await net.wait(lambda: restarted.chain.height > h0 + 3, "finalizing after restart")
    assert net.same_chain()


async def test_a_record_with_an_honest_nodes_address_never_replaces_its_connection(
        tmp_path, nursery, autojump_clock):
    net = await start_net(Net(tmp_path, 3, authorities=2), nursery)
    node, honest = net.node(0), net.node(1)
    link = node.p2p.host.get(honest.key.public)
    assert link is not None
    # K signs a record naming honest node X's address (it cannot sign X's own record)
    impostor = junk(net, net.p2p(1))
    with structlog.testing.capture_logs() as logs:
        h0 = node.chain.height
        await send_records(nursery, net, [impostor])
        await holds_for(lambda: node.p2p.host.get(honest.key.public) is link, 10.0,
                        "the live connection to the honest node was replaced")
        await net.wait(lambda: node.chain.height > h0 + 3, "finalizing")
    assert not dials(logs, net.keys[0].public, {net.p2p(1)})  # X's address is not dialed
    assert not [e for e in logs if e["event"] == "peer_disconnected"
                and e.get("peer") == honest.key.public.hex()[:16]]


async def test_a_dial_answered_by_another_node_drops_the_record(tmp_path, nursery,
                                                                autojump_clock):
    net = Net(tmp_path, 3, authorities=2)
    await net.start(nursery, 0)
    await net.start(nursery, 1, (net.p2p(0),))
    await net.wait_mesh()
    bystander = await net.start(nursery, 2)  # listens, knows nobody, nobody knows it
    node = net.node(0)
    impostor = junk(net, net.p2p(2))
    with structlog.testing.capture_logs() as logs:
        await send_records(nursery, net, [impostor])
        await wait_for(lambda: any(e["event"] == "peer_record_dropped" for e in logs),
                       "the impostor's record dropped after its dial")
    assert impostor.node_id not in node.p2p.book.records
    dropped = next(e for e in logs if e["event"] == "peer_record_dropped")
    assert "answered by another node" in dropped["reason"]
    # the dial was refused in the handshake: the bystander was not taken as the impostor
    assert node.p2p.host.get(impostor.node_id) is None
    assert bystander.key.public not in node.p2p.book.records or not node.p2p.book.is_tried(
        bystander.key.public)
    # and the record is gone, so its address is not dialed again for it
    await holds_for(lambda: impostor.node_id not in node.p2p.book.records, 5.0,
                    "the impostor's record came back")


async def test_records_stamped_ahead_are_refused_and_evict_nobody(tmp_path, nursery,
                                                                 autojump_clock):
    net = await start_net(Net(tmp_path, 3, authorities=2), nursery)
    book = net.node(0).p2p.book
    honest = set(book.records)
    assert {net.keys[1].public, net.keys[2].public} <= honest
    ahead = [junk(net, f"10.78.{i}.1:7546", ahead_ms=MAX_RECORD_FUTURE_MS + 60_000)
             for i in range(64)]
    h0 = net.node(0).chain.height
    await send_records(nursery, net, ahead)
    await net.wait(lambda: net.node(0).chain.height > h0 + 2, "finalizing")
    assert not set(book.records) & {r.node_id for r in ahead}
    assert honest <= set(book.records)
