"""The client's BlockFollower against a real node: every block once, in order, across a
connection the node closes, a subscription the feed drops, and notifications the client lost."""

from __future__ import annotations

import pytest
import trio

from iomtnode import client as client_module
from iomtnode.client import ApiError, BlockFollower

pytestmark = pytest.mark.timeout(60)


async def take(follower: BlockFollower, count: int) -> list[dict]:
    with trio.fail_after(20):
        return [await follower.blocks.receive() for _ in range(count)]


async def test_the_follower_resumes_after_each_cut_without_a_gap(running_node, nursery,
                                                                 monkeypatch):
    monkeypatch.setattr(client_module, "FOLLOW_RETRY_S", 0.05)
    rn = running_node
    feed, api = rn.services.feed, rn.services.api
    follower = BlockFollower(rn.url, 0)
    await nursery.start(follower.run)
    seen = await take(follower, 2)
    for conns in list(api._open.values()):  # the node closes the connection
        for conn in list(conns.values()):
            conn.close(1011, "test: cut")
    seen += await take(follower, 2)
    for channel in list(feed._subscribers):  # the feed drops the subscriber
        feed._subscribers.discard(channel)
        channel.close()
    seen += await take(follower, 2)
    assert follower.resubscribed == 2
    heights = [b["height"] for b in seen]
    assert heights == list(range(6))
    chain = rn.services.chain
    assert [b["hash"] for b in seen] == [chain.block_at(h).hash.hex() for h in heights]


async def test_a_height_the_node_does_not_hold_is_refused_at_the_start(running_node):
    follower = BlockFollower(running_node.url, 10**6)
    with pytest.raises(ApiError) as info:
        await follower.run()
    assert info.value.code == client_module.HEIGHT_NOT_HELD
