"""Mempool reconciliation between real nodes (LevelDB) on an in-memory network, under a
virtual clock: a backlog taken while a peer was cut off reaches it when the link heals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from iomtnode.admission.reconcile import RECONCILE_INTERVAL_S
from iomtnode.core.crypto import SigningKey
from iomtnode.core.tx import SignedTx

from ..core import sealkit as kit
from .harness import BASE, Net, holds_for, start_net

pytestmark = pytest.mark.timeout(90)

# the on-connect pass takes milliseconds; but when both nodes re-dial each other at once, the
# connection first kept may be replaced and the next dial waits its backoff; without
# reconciliation it never comes
RECONCILED_WITHIN_S = 30.0


def stalled(tmp: Path, n: int) -> Net:
    """Nodes of a chain with a second authority that never runs: no block gets a quorum,
    so what a node admits stays pending (a partition's backlog, as a node sees it)."""
    return Net(tmp, n, absent=(SigningKey.generate(),))


SETUP = 2  # a backlog's first transactions: the device's admission and its stream's epoch


def backlog(net: Net, readings: int) -> list[SignedTx]:
    """A device's admission to a new stream, the stream's epoch 1, then ``readings``."""
    authority, device, stream = net.keys[0], SigningKey.generate(), SigningKey.generate()
    txs = [kit.admit(authority, device.public, stream.public, "iomt-net"),
           kit.announce(stream, "iomt-net")]
    now = net.now_ms()
    return txs + [kit.sealed_reading(device, seq, now, "iomt-net")
                  for seq in range(1, readings + 1)]


async def test_a_backlog_taken_while_cut_off_reaches_the_peer_when_the_link_heals(
        tmp_path, nursery, autojump_clock):
    net = await start_net(stalled(tmp_path, 2), nursery)
    a, b = net.live()
    async with net.client(1) as admin:
        await admin.call("admin_refuse_peers", token=b.admin_token,
                         node_ids=[net.keys[0].public.hex()])
        await net.wait(lambda: not a.p2p.host.peers() and not b.p2p.host.peers(), "cut off")

        txs = backlog(net, 300)
        async with net.client(0) as client:
            for tx in txs[:SETUP]:
                await client.call("submit_tx", tx=tx.raw.hex())
            result = await client.call("submit_readings",
                                       txs=[tx.raw.hex() for tx in txs[SETUP:]])
        assert result["accepted"] == 300
        assert all(tx.id in a.mempool for tx in txs)
        assert not any(tx.id in b.mempool for tx in txs)  # b got none of them live

        await admin.call("admin_refuse_peers", token=b.admin_token, node_ids=[])
    await net.wait(lambda: a.p2p.host.peers() and b.p2p.host.peers(), "reconnected", timeout=30)
    await net.wait(lambda: all(tx.id in b.mempool for tx in txs), "b has the backlog",
                   timeout=RECONCILED_WITHIN_S)
    assert a.chain.height == b.chain.height == 0  # it came by reconciliation, not in a block
    assert not a.p2p.host.scoreboard.penalties and not b.p2p.host.scoreboard.penalties


async def test_a_split_sides_backlog_reaches_every_node_of_the_other_side(
        tmp_path, nursery, autojump_clock):
    """{0,1} | {2,3}: readings admitted at node 0 reach node 1 live; after the heal both
    offer them to nodes 2 and 3, which fetch each once and penalise no one."""
    net = await start_net(stalled(tmp_path, 4), nursery)
    side = [net.keys[0].public.hex(), net.keys[1].public.hex()]
    for i in (2, 3):
        async with net.client(i) as admin:
            await admin.call("admin_refuse_peers", token=net.node(i).admin_token, node_ids=side)
    await net.wait(lambda: all(len(n.p2p.host.peers()) == 1 for n in net.live()), "split")

    txs = backlog(net, 500)
    async with net.client(0) as client:
        for tx in txs[:SETUP]:
            await client.call("submit_tx", tx=tx.raw.hex())
        await client.call("submit_readings", txs=[tx.raw.hex() for tx in txs[SETUP:]])
    await net.wait(lambda: all(tx.id in net.node(1).mempool for tx in txs), "node 1 has them")
    # node 1 relays what it received once its relay delay is over, to the peers connected
    # then (none lacking them): past that, only reconciliation can bring them to 2 and 3
    await holds_for(lambda: not any(tx.id in n.mempool for n in net.live()[2:] for tx in txs),
                    net.node(1).gossip.relay_delay() + 0.5, "the other side got them")

    for i in (2, 3):
        async with net.client(i) as admin:
            await admin.call("admin_refuse_peers", token=net.node(i).admin_token, node_ids=[])
    await net.wait(lambda: all(len(n.p2p.host.peers()) == 3 for n in net.live()), "healed",
                   timeout=30)
    await net.wait(lambda: all(tx.id in n.mempool for n in net.live() for tx in txs),
                   "every node has the backlog", timeout=RECONCILED_WITHIN_S)
    for node in net.live():
        assert not node.p2p.host.scoreboard.penalties
        assert node.p2p.host.counters()["Txs"].messages_in <= 4  # not fetched over and over


async def test_a_transaction_that_missed_a_connected_peer_reaches_it_by_the_periodic_pass(
        tmp_path, nursery, autojump_clock):
    """A transaction put in node 0's mempool without being pushed (as if its push had been
    lost) reaches node 1 once it has been pending a whole interval."""
    net = await start_net(stalled(tmp_path, 2), nursery)
    a, b = net.live()
    authority, device = net.keys[0], SigningKey.generate()
    tx = kit.admit(authority, device.public, SigningKey.generate().public, "iomt-net")
    a.mempool.add(tx.raw)  # admitted here, never pushed
    await net.wait(lambda: tx.id in b.mempool, "node 1 has it",
                   timeout=2 * RECONCILE_INTERVAL_S + 5)  # at the second pass after it
    assert a.p2p.host.peers() and b.p2p.host.peers()  # the same connection all along


async def test_a_follower_transaction_its_uplink_refused_for_a_full_mempool_is_offered_again(
        tmp_path, nursery, autojump_clock):
    """A follower's client readings reach the authorities only through its peers. Those its
    one uplink refused for a reason time undoes (a full mempool here; a device or epoch the
    uplink has not committed yet, a clock a little behind) were marked known to it when
    pushed, so no pass offered them again while the link stayed up: pending for ever."""
    # node 0 the one authority, node 1 a follower; few empty blocks (a faster test)
    net = Net(tmp_path, 2, config=replace(BASE, empty_block_interval_s=5.0))
    await net.start(nursery, 0, node=net.make(0, config=replace(net.config, mempool_max_txs=5)))
    await net.start(nursery, 1, (net.p2p(0),))
    await net.wait_mesh()
    device = SigningKey.generate()
    async with net.client(0) as client:
        await net.enroll(client, net.keys[0], device)
    now = net.now_ms()
    readings = [kit.sealed_reading(device, seq, now, "iomt-net") for seq in range(1, 13)]
    async with net.client(1) as client:
        result = await client.call("submit_readings", txs=[tx.raw.hex() for tx in readings])
    assert result["accepted"] == 12  # the follower's pool has room; its uplink's holds 5
    await net.wait(lambda: all(net.node(1).chain.store.tx_location(tx.id) for tx in readings),
                   "every accepted reading committed", timeout=4 * RECONCILE_INTERVAL_S + 5)
