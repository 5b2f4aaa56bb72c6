"""The client's BlockFollower against a real node: every block once, in order, across a
connection the node closes, a subscription the feed drops, and notifications the client lost."""

from __future__ import annotations

import itertools
import json
from contextlib import asynccontextmanager

import pytest
import trio
from structlog.testing import capture_logs

from iomtnode import client as client_module
from iomtnode.client import ApiError, BlockFollower, FollowGaveUp

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


def refusing_node(monkeypatch, attempts: list[float]) -> None:
    """Every connection attempt fails at once, as to a node that is down."""

    @asynccontextmanager
    async def refused(url, *, ca=None):
        attempts.append(trio.current_time())
        raise ConnectionRefusedError(111, "Connection refused")
        yield

    monkeypatch.setattr(client_module, "open_client", refused)


async def test_a_node_down_at_the_start_is_retried_with_backoff_until_retry_for(
        monkeypatch, autojump_clock):
    attempts: list[float] = []
    refusing_node(monkeypatch, attempts)
    follower = BlockFollower("ws://127.0.0.1:9/api/v1", 0, retry_for_s=20.0)
    with capture_logs() as logs, pytest.raises(FollowGaveUp, match=r"for 20\.0 s"):
        await follower.run()
    assert attempts == [0.0, 1.0, 3.0, 7.0, 15.0, 20.0]  # 1, 2, 4, 8 s, then the bound
    failed = [e for e in logs if e["event"] == "block_subscription_failed"]
    assert [e["retry_in_s"] for e in failed] == [1.0, 2.0, 4.0, 8.0, 5.0]
    assert all(e["log_level"] == "warning" and "refused" in e["reason"] for e in failed)
    with pytest.raises(trio.EndOfChannel):  # its reader sees the end
        await follower.blocks.receive()


async def test_a_follower_that_never_gives_up_logs_json_that_says_so(monkeypatch,
                                                                     autojump_clock):
    """Without retry_for_s, gives_up_in_s is null: it was Infinity, which is no JSON (a log
    line jq and log collectors refused)."""
    refusing_node(monkeypatch, [])
    follower = BlockFollower("ws://127.0.0.1:9/api/v1", 0)
    with capture_logs() as logs, trio.move_on_after(10):
        await follower.run()
    failed = [e for e in logs if e["event"] == "block_subscription_failed"]
    assert failed and all(e["gives_up_in_s"] is None for e in failed)
    json.dumps(failed, allow_nan=False)


async def test_the_backoff_is_capped(monkeypatch, autojump_clock):
    attempts: list[float] = []
    refusing_node(monkeypatch, attempts)
    with pytest.raises(FollowGaveUp):
        await BlockFollower("ws://127.0.0.1:9/api/v1", 0, retry_for_s=200.0).run()
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert max(gaps) == client_module.FOLLOW_RETRY_MAX_S


async def test_a_node_gone_later_is_retried_and_the_bound_counts_from_then(
        running_node, nursery, monkeypatch):
    monkeypatch.setattr(client_module, "FOLLOW_RETRY_S", 0.05)
    follower = BlockFollower(running_node.url, 0, retry_for_s=0.5)
    done = trio.Event()
    raised: list[BaseException] = []

    async def follow() -> None:
        try:
            await follower.run()
        except FollowGaveUp as exc:
            raised.append(exc)
        done.set()

    nursery.start_soon(follow)
    await take(follower, 2)
    await trio.sleep(0.6)  # subscribed for longer than retry_for_s: the bound is not from start
    attempts: list[float] = []
    refusing_node(monkeypatch, attempts)
    for conns in list(running_node.services.api._open.values()):  # the node goes away
        for conn in list(conns.values()):
            conn.close(1011, "test: cut")
    with trio.fail_after(10):
        await done.wait()
    assert raised and len(attempts) >= 2  # retried, then gave up ...
    assert attempts[-1] - attempts[0] <= 0.6  # ... 0.5 s after the subscription was lost
