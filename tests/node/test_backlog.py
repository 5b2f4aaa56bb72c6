"""A backlog of readings taken by a cut-off node is committed after the heal, even though the
device's later readings were committed meanwhile (the anti-replay window), and the node that
accepted them can say so (get_tx_status).

Four authorities in one process (real nodes on an in-memory network, virtual time): node 0 is
cut off from the others, which keep a quorum and commit the device's later readings; node 0
accepts earlier ones; after the heal node 0 syncs and proposes its backlog in its turn."""

from __future__ import annotations

import pytest

from iomtnode.core.crypto import SigningKey

from ..core import sealkit as kit
from .harness import start_net
from .test_bft import CHAIN, authorities

pytestmark = pytest.mark.timeout(120)


async def test_a_cut_off_nodes_backlog_is_committed_after_later_readings(tmp_path, nursery,
                                                                         autojump_clock):
    net = await start_net(authorities(tmp_path), nursery)
    device, authority = SigningKey.generate(), net.keys[0]
    now = net.now_ms()
    readings = [kit.sealed_reading(device, seq, now + seq, CHAIN) for seq in range(1, 31)]
    backlog, later = readings[:20], readings[20:]
    async with net.client(1) as client:
        await net.enroll(client, authority, device)
    cut, rest = net.node(0), net.live()[1:]
    cut.p2p.host.set_refused({n.node_id for n in rest})
    for node in rest:
        node.p2p.host.set_refused({cut.node_id})
    await net.wait(lambda: not cut.p2p.host.peers(), "node 0 cut off")

    async with net.client(0) as client:
        result = await client.call("submit_readings", txs=[tx.raw.hex() for tx in backlog])
        assert result["accepted"] == 20
    async with net.client(1) as client:
        result = await client.call("submit_readings", txs=[tx.raw.hex() for tx in later])
        assert result["accepted"] == 10
    await net.wait(lambda: all(n.chain.store.tx_location(tx.id) for n in rest for tx in later),
                   "the later readings final without node 0")
    assert not any(n.chain.store.tx_location(tx.id) for n in rest for tx in backlog)

    cut.p2p.host.set_refused(set())
    for node in rest:
        node.p2p.host.set_refused(set())
    await net.wait(lambda: all(n.chain.store.tx_location(tx.id) for n in net.live()
                               for tx in readings), "every reading final everywhere", 60)
    async with net.client(0) as client:
        statuses = await client.call("get_tx_status", ids=[tx.id.hex() for tx in backlog])
        status = await client.call("status")
    assert {s["state"] for s in statuses} == {"committed"}
    assert status["dropped_txs"] == 0
    assert net.same_chain()
    chain = net.node(2).chain
    for tx in backlog:  # after the later readings, in sequence order
        height, _ = chain.store.tx_location(tx.id)
        assert height > max(chain.store.tx_location(t.id)[0] for t in later)
