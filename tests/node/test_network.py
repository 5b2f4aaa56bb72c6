"""Real nodes (LevelDB) in one process on an in-memory network, under a virtual clock: gossip,
relay, sync, and link faults through the admin API."""

from __future__ import annotations

import pytest
import trio

from iomtnode.client import ApiError
from iomtnode.core.crypto import SigningKey

from ..core import sealkit as kit
from .harness import Net, start_net

pytestmark = pytest.mark.timeout(90)


async def test_nodes_listen_and_dial_on_the_memory_network(tmp_path, nursery, autojump_clock):
    net = await start_net(Net(tmp_path, 2), nursery)
    api = {f"{host}:{port}" for host, port in net.api}
    assert net.network.listening() == {net.p2p(0), net.p2p(1), *api}
    async with net.client(0) as client:
        assert (await client.call("status"))["p2p_address"] == net.p2p(0)


async def test_followers_relay_readings_and_follow_the_chain(tmp_path, nursery, autojump_clock):
    net = await start_net(Net(tmp_path, 3), nursery)
    device, authority = SigningKey.generate(), net.keys[0]
    async with net.client(2) as client:  # a follower takes the submissions
        await net.enroll(client, authority, device)
        relayed = net.node(2).p2p.host.counters()["Txs"].messages_out  # admission and epoch
        now = net.now_ms()
        txs = [kit.sealed_reading(device, seq, now, "iomt-net").raw.hex()
               for seq in range(1, 51)]
        result = await client.call("submit_readings", txs=txs)
        assert result["accepted"] == 50
    last = bytes.fromhex(result["results"][-1]["id"])
    await net.wait(lambda: all(n.chain.store.tx_location(last) for n in net.live()),
                   "every node has every reading")
    assert net.same_chain()
    # the follower that took the readings relayed them; blocks came back compact
    counters = net.node(2).p2p.host.counters()
    # 50 readings left in one batch per peer, not one message per reading
    assert counters["Txs"].messages_out - relayed == 2
    # what each reactor declared useful protects its senders from eviction: the follower's
    # pushes at the authority, the authority's blocks and votes at the follower
    authority, follower = net.node(0).p2p, net.node(2).p2p
    assert "txs" in authority.get(net.keys[2].public).useful_at
    assert {"blocks", "votes"} <= set(follower.get(net.keys[0].public).useful_at)


async def test_a_node_started_later_syncs_the_whole_chain(tmp_path, nursery, autojump_clock):
    net = Net(tmp_path, 2)
    await net.start(nursery, 0)
    await net.node(0).feed.wait_for_height(8, 20)
    await net.start(nursery, 1, (net.p2p(0),))
    target = net.node(0).chain.height
    await net.wait(lambda: net.node(1).chain.height >= target, "synced")
    assert net.same_chain(target)


async def test_only_a_node_joining_a_running_network_starts_its_workers_at_once_in_real_time(
        tmp_path, nursery):
    """In real time: the workers are real processes (a virtual clock's node has none)."""
    net = Net(tmp_path, 2, virtual=False)
    await net.start(nursery, 0)  # the genesis authority: its network starts with it
    await net.node(0).feed.wait_for_height(2, 20)
    # empty and not an authority: joining; no bootnode, so no catch-up starts them either
    await net.start(nursery, 1)
    joiner = net.node(1).mempool.verifier
    await net.wait(lambda: joiner.warmed, "the joiner's workers started")
    assert net.node(1).chain.height == 0
    assert not net.node(0).mempool.verifier.warmed  # nothing to sync, none started


async def test_refused_peers_are_cut_and_heal(tmp_path, nursery, autojump_clock):
    net = await start_net(Net(tmp_path, 3), nursery)
    follower = net.node(2)
    async with net.client(2) as client:
        ids = [net.keys[0].public.hex(), net.keys[1].public.hex()]
        await client.call("admin_refuse_peers", token=follower.admin_token, node_ids=ids)
        await net.wait(lambda: not follower.p2p.host.peers(), "cut off")
        cut_at = follower.chain.height
        await net.node(0).feed.wait_for_height(cut_at + 3, 20)
        assert follower.chain.height <= cut_at + 1
        await client.call("admin_refuse_peers", token=follower.admin_token, node_ids=[])
    await net.wait(lambda: follower.chain.height >= net.node(0).chain.height - 1, "healed")


async def test_a_moved_node_is_redialed_within_five_seconds(tmp_path, nursery, autojump_clock):
    net = await start_net(Net(tmp_path, 3), nursery)
    mover = net.node(2)
    async with net.client(2) as client:
        result = await client.call("admin_set_listen", token=mover.admin_token,
                                   address="127.0.0.2:0")
    assert result["p2p_address"].startswith("127.0.0.2:")
    started = trio.current_time()
    await net.wait(lambda: all(len(n.p2p.host.peers()) == 2 for n in net.live()), "re-mesh",
                   timeout=5)
    assert trio.current_time() - started < 5
    for node in net.live()[:2]:
        assert node.p2p.book.records[mover.key.public].addresses == (result["p2p_address"],)


async def test_a_failed_move_changes_nothing(tmp_path, nursery, autojump_clock):
    net = await start_net(Net(tmp_path, 2), nursery)
    node = net.node(1)
    before = node.p2p.address
    async with net.client(1) as client:
        with pytest.raises(ApiError) as info:  # node0's p2p port is taken
            await client.call("admin_set_listen", token=node.admin_token, address=net.p2p(0))
        assert info.value.code == -32602 and "cannot listen" in info.value.message
        status = await client.call("status")
    assert status["p2p_address"] == before and len(status["peers"]) == 1
    host, port = before.rsplit(":", 1)
    stream = await net.network.connect("10.0.9.9", host, int(port))  # still listening
    await stream.aclose()


async def test_honest_nodes_never_penalise_each_other_under_load(tmp_path, nursery,
                                                                 autojump_clock):
    """Readings enter at every follower at once while blocks relay through all of them."""
    net = await start_net(Net(tmp_path, 4), nursery)
    authority = net.keys[0]
    devices = [SigningKey.generate() for _ in range(3)]
    async with net.client(0) as client:
        for device in devices:
            await net.enroll(client, authority, device)

    async def stream(i: int, device: SigningKey) -> None:
        async with net.client(i) as client:
            for seq in range(1, 401):
                tx = kit.sealed_reading(device, seq, net.now_ms(), "iomt-net")
                await client.call("submit_reading", tx=tx.raw.hex())

    async with trio.open_nursery() as load:
        for i, device in enumerate(devices, start=1):
            load.start_soon(stream, i, device)
    await net.wait(lambda: all(n.chain.device(d.public)[1] == 400 for n in net.live()
                               for d in devices), "every reading everywhere", timeout=60)
    for node in net.live():
        assert not node.p2p.host.scoreboard.penalties, node.p2p.host.scoreboard.penalties
        assert len(node.p2p.host.peers()) == 3
    assert net.same_chain()
