"""In-process networks of real nodes (LevelDB, websockets on loopback): gossip, relay,
sync, and link faults through the admin API."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from iomtnode.client import ApiError, open_client
from iomtnode.config import Config
from iomtnode.core.crypto import SigningKey
from iomtnode.core.genesis import Genesis
from iomtnode.core.tx import AdmitDevice, Reading, sign_tx
from iomtnode.home import init_home
from iomtnode.node import Node

pytestmark = pytest.mark.timeout(90)

BASE = Config(api_listen="127.0.0.1:0", p2p_listen="127.0.0.1:0", block_interval_s=0.02,
              empty_block_interval_s=0.3)


class Net:
    def __init__(self, tmp: Path, n: int) -> None:
        self.keys = [SigningKey.generate() for _ in range(n)]
        self.genesis = Genesis("iomt-net", int(time.time() * 1000), (self.keys[0].public,), 1)
        self.homes = [init_home(tmp / f"node{i}", genesis=self.genesis, key=k, config=BASE)
                      for i, k in enumerate(self.keys)]
        self.nodes: list[Node] = []
        self.urls: list[str] = []
        self.scopes: list[trio.CancelScope] = []

    async def start(self, nursery: trio.Nursery, i: int, bootnodes: tuple[str, ...]) -> Node:
        node = Node(self.homes[i], replace(BASE, bootnodes=bootnodes))
        scope = trio.CancelScope()

        async def run(*, task_status=trio.TASK_STATUS_IGNORED):
            with scope:
                await node.run(task_status=task_status)

        info = await nursery.start(run)
        if i < len(self.nodes):
            self.nodes[i], self.urls[i], self.scopes[i] = node, "", scope
        else:
            self.nodes.append(node)
            self.urls.append("")
            self.scopes.append(scope)
        self.urls[i] = f"ws://127.0.0.1:{info.api_port}/api/v1"
        return node

    def p2p(self, i: int) -> str:
        return self.nodes[i].p2p.address

    async def wait(self, predicate, what: str, timeout: float = 20) -> None:
        """Re-check ``predicate`` (state spread over several nodes) until it holds."""
        try:
            with trio.fail_after(timeout):
                while not predicate():  # noqa: ASYNC110 - a condition over many nodes
                    await trio.sleep(0.02)
        except trio.TooSlowError:
            raise AssertionError(f"not within {timeout} s: {what}") from None

    def same_chain(self, upto: int) -> bool:
        hashes = {tuple(n.chain.block_at(h).hash for h in range(upto + 1)) for n in self.nodes
                  if n.chain is not None}
        return len(hashes) == 1


async def start_net(tmp_path, nursery, n: int) -> Net:
    net = Net(tmp_path, n)
    await net.start(nursery, 0, ())
    for i in range(1, n):
        await net.start(nursery, i, (net.p2p(0),))
    await net.wait(lambda: all(len(node.p2p.host.peers()) == n - 1 for node in net.nodes),
                   "full mesh")
    return net


async def test_followers_relay_readings_and_follow_the_chain(tmp_path, nursery):
    net = await start_net(tmp_path, nursery, 3)
    device, patient = SigningKey.generate(), SigningKey.generate()
    authority = net.keys[0]
    admit = sign_tx(AdmitDevice(authority.public, device.public, patient.public, "wearable",
                                "acme"), authority, "iomt-net")
    async with open_client(net.urls[2]) as client:  # a follower takes the submission
        await client.call("submit_tx", tx=admit.raw.hex())
        await net.wait(lambda: all(n.chain.device(device.public) for n in net.nodes), "admitted")
        now = int(time.time() * 1000)
        txs = [sign_tx(Reading(device.public, seq, now, "spo2", b"\x02" * 48, b""), device,
                       "iomt-net").raw.hex() for seq in range(1, 51)]
        result = await client.call("submit_readings", txs=txs)
        assert result["accepted"] == 50
    last = bytes.fromhex(result["results"][-1]["id"])
    await net.wait(lambda: all(n.chain.store.tx_location(last) for n in net.nodes),
                   "every node has every reading")
    height = min(n.chain.height for n in net.nodes)
    assert net.same_chain(height)
    # the follower that took the readings relayed them; blocks came back compact
    counters = net.nodes[2].p2p.host.counters()
    # 50 readings left in one batch per peer, not one message per reading
    assert 2 <= counters["Txs"].messages_out <= 4


async def test_a_node_started_later_syncs_the_whole_chain(tmp_path, nursery):
    net = Net(tmp_path, 2)
    await net.start(nursery, 0, ())
    await net.nodes[0].feed.wait_for_height(8, 20)
    await net.start(nursery, 1, (net.p2p(0),))
    target = net.nodes[0].chain.height
    await net.wait(lambda: net.nodes[1].chain.height >= target, "synced")
    assert net.same_chain(target)


async def test_only_a_node_joining_a_running_network_starts_its_workers_at_once(
        tmp_path, nursery):
    net = Net(tmp_path, 2)
    await net.start(nursery, 0, ())  # the genesis authority: its network starts with it
    await net.nodes[0].feed.wait_for_height(2, 20)
    # empty and not an authority: joining; no bootnode, so no catch-up starts them either
    await net.start(nursery, 1, ())
    joiner = net.nodes[1].mempool.verifier
    await net.wait(lambda: joiner.warmed, "the joiner's workers started")
    assert net.nodes[1].chain.height == 0
    assert not net.nodes[0].mempool.verifier.warmed  # nothing to sync, none started


async def test_refused_peers_are_cut_and_heal(tmp_path, nursery):
    net = await start_net(tmp_path, nursery, 3)
    follower = net.nodes[2]
    token = follower.admin_token
    async with open_client(net.urls[2]) as client:
        ids = [net.keys[0].public.hex(), net.keys[1].public.hex()]
        await client.call("admin_refuse_peers", token=token, node_ids=ids)
        await net.wait(lambda: not follower.p2p.host.peers(), "cut off")
        cut_at = follower.chain.height
        await net.nodes[0].feed.wait_for_height(cut_at + 3, 20)
        assert follower.chain.height <= cut_at + 1
        await client.call("admin_refuse_peers", token=token, node_ids=[])
    await net.wait(lambda: follower.chain.height >= net.nodes[0].chain.height - 1, "healed")


async def test_a_moved_node_is_redialed_within_five_seconds(tmp_path, nursery):
    net = await start_net(tmp_path, nursery, 3)
    mover = net.nodes[2]
    async with open_client(net.urls[2]) as client:
        result = await client.call("admin_set_listen", token=mover.admin_token,
                                   address="127.0.0.2:0")
    assert result["p2p_address"].startswith("127.0.0.2:")
    started = trio.current_time()
    await net.wait(lambda: all(len(n.p2p.host.peers()) == 2 for n in net.nodes), "re-mesh",
                   timeout=5)
    assert trio.current_time() - started < 5
    for node in net.nodes[:2]:
        assert node.p2p.book.records[mover.key.public].addresses == (result["p2p_address"],)


async def test_a_failed_move_changes_nothing(tmp_path, nursery):
    net = await start_net(tmp_path, nursery, 2)
    node = net.nodes[1]
    before = node.p2p.address
    async with open_client(net.urls[1]) as client:
        with pytest.raises(ApiError) as info:  # node0's p2p port is taken
            await client.call("admin_set_listen", token=node.admin_token,
                              address=net.p2p(0))
        assert info.value.code == -32602 and "cannot listen" in info.value.message
        status = await client.call("status")
    assert status["p2p_address"] == before and len(status["peers"]) == 1
    host, port = before.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))  # still listening
    await stream.aclose()


async def test_honest_nodes_never_penalise_each_other_under_load(tmp_path, nursery):
    """Readings enter at every follower at once while blocks relay through all of them."""
    net = await start_net(tmp_path, nursery, 4)
    authority = net.keys[0]
    devices = [SigningKey.generate() for _ in range(3)]
    async with open_client(net.urls[0]) as client:
        for device in devices:
            admit = sign_tx(AdmitDevice(authority.public, device.public, device.public,
                                        "wearable", "acme"), authority, "iomt-net")
            await client.call("submit_tx", tx=admit.raw.hex())
    await net.wait(lambda: all(n.chain.device(d.public) for n in net.nodes for d in devices),
                   "admitted")

    async def stream(i: int, device: SigningKey) -> None:
        async with open_client(net.urls[i]) as client:
            for seq in range(1, 401):
                tx = sign_tx(Reading(device.public, seq, int(time.time() * 1000), "spo2",
                                     b"\x03" * 48, b""), device, "iomt-net")
                await client.call("submit_reading", tx=tx.raw.hex())

    async with trio.open_nursery() as load:
        for i, device in enumerate(devices, start=1):
            load.start_soon(stream, i, device)
    await net.wait(lambda: all(n.chain.device(d.public)[1] == 400 for n in net.nodes
                               for d in devices), "every reading everywhere", timeout=60)
    for node in net.nodes:
        assert not node.p2p.host.scoreboard.penalties, node.p2p.host.scoreboard.penalties
        assert len(node.p2p.host.peers()) == 3
    assert net.same_chain(min(n.chain.height for n in net.nodes))
