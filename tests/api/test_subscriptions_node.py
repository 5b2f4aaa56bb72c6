"""Subscriptions through a real node's server: a resumed block subscription, a transaction's
status, and the last notification when the node shuts down."""

from __future__ import annotations

import pytest
import trio

from iomtnode.client import open_client
from iomtnode.core.crypto import SigningKey
from iomtnode.home import init_home
from iomtnode.node import Node

from ..conftest import FAST
from .test_methods import admit, reading

pytestmark = pytest.mark.timeout(60)


async def next_note(client, method: str) -> dict:
    with trio.fail_after(10):
        async for note in client.notifications:
            if note["method"] == method:
                return note["params"]
    raise AssertionError(f"the connection closed before a {method} notification")


async def test_a_resumed_subscription_replays_then_follows(running_node):
    rn = running_node
    async with open_client(rn.url) as client:
        assert await rn.services.feed.wait_for_height(3, timeout_s=10)
        assert await client.call("subscribe_blocks", since_height=1) == "blocks"
        head = (await client.call("status"))["height"]
        seen = [(await next_note(client, "block")) for _ in range(head + 1)]
        assert [b["height"] for b in seen] == list(range(1, head + 2))  # past the seam
        for block in seen:
            assert (await client.call("get_block", height=block["height"]))["hash"] == \
                block["hash"]


async def test_a_transactions_status_is_told_when_committed(running_node):
    rn = running_node
    device, stream = SigningKey.generate(), SigningKey.generate()
    async with open_client(rn.url) as client:
        await admit(client, rn, device, stream)
        tx_id = (await client.call("submit_reading", tx=reading(rn, device, 1)))["id"]
        assert await client.call("subscribe_tx_status", ids=[tx_id]) == "tx_status"
        status = await next_note(client, "tx_status")
        assert status == await client.call("get_tx_status", id=tx_id)
        assert status["state"] == "committed"
        ended = await next_note(client, "subscription_ended")
        assert ended["subscription"] == "tx_status" and ended["told"] == 1


async def test_a_node_shutting_down_tells_its_subscribers_where_to_resume(tmp_path):
    home = init_home(tmp_path / "node", chain_id="iomt-test", config=FAST)
    node = Node(home, home.load_config())
    running = trio.CancelScope()

    async def run_node(task_status=trio.TASK_STATUS_IGNORED) -> None:
        with running:
            await node.run(task_status=task_status)

    async with trio.open_nursery() as nursery:
        info = await nursery.start(run_node)
        async with open_client(f"ws://127.0.0.1:{info.api_port}/api/v1") as client:
            await client.call("subscribe_blocks", since_height=0)
            last = await next_note(client, "block")
            assert last["height"] == 0
            while last["height"] < 2:
                last = await next_note(client, "block")
            running.cancel()  # the node stops right after a block was read
            notes = [note async for note in client.notifications]
    blocks = [n["params"]["height"] for n in notes if n["method"] == "block"]
    assert notes[-1] == {"jsonrpc": "2.0", "method": "subscription_ended", "params": {
        "subscription": "blocks", "reason": "server shutting down",
        "last_height": max([last["height"], *blocks])}}
