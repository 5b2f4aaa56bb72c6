"""subscribe_blocks with since_height: the replay from the store, the seam with the live feed
(every block once, in order, with blocks committed while the replay runs), the heights
refused, and the last notification when the feed drops a subscriber that fell behind."""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio

from iomtnode.api.jsonrpc import INVALID_PARAMS, RpcError
from iomtnode.api.subscriptions import (
    FELL_BEHIND,
    REPLAY_STEP_BLOCKS,
    SINCE_HEIGHT_OUT_OF_RANGE,
    SubscriptionsApi,
)
from iomtnode.api.txwatch import TxWatch
from iomtnode.chain.feed import SUBSCRIBER_QUEUE_BLOCKS

from .subkit import LIMITS, Blocks, Reader, open_connection


class NoTxs:
    def tx_status(self, tx_id: bytes) -> dict:
        return {"id": tx_id.hex(), "state": "unknown"}


def api_of(blocks: Blocks) -> SubscriptionsApi:
    return SubscriptionsApi(blocks.feed, blocks, NoTxs(), TxWatch(NoTxs().tx_status))


async def commit_every(blocks: Blocks, every_s: float, count: int) -> None:
    for _ in range(count):
        await trio.sleep(every_s)
        blocks.commit()


async def wait_for(reader: Reader, height: int) -> None:
    await reader.wait_until(lambda: bool(reader.heights()) and reader.heights()[-1] >= height)


@pytest.mark.parametrize(("head", "since"), [
    (200, 5),  # far behind: replayed a step at a time, the live queue opened near the head
    (40, 35),  # within a step of the head: the live queue is opened by the call itself
    (40, 41),  # the next block: nothing to replay
    (40, 0),  # from the genesis block
])
async def test_a_replay_meets_the_live_feed_with_every_block_once_in_order(
        autojump_clock, nursery, head, since):
    blocks = Blocks(head)
    reader = Reader(every_s=0.004)  # slower than the blocks come during the replay
    conn = await open_connection(nursery, reader)
    assert await api_of(blocks).subscribe_blocks(conn, since_height=since) == "blocks"
    blocks.commit()  # at once, before the subscription's task has run
    nursery.start_soon(commit_every, blocks, 0.01, 59)  # commits while the replay runs
    await wait_for(reader, head + 60)
    heights = reader.heights()
    assert heights == list(range(since, head + 61))
    assert [p["hash"] for p in reader.notes("block")] == [
        blocks.block_at(h).hash.hex() for h in heights]
    assert not conn.closed  # paced by the reader: never too slow for its outbox


async def test_without_since_height_blocks_start_after_the_head(autojump_clock, nursery):
    blocks = Blocks(10)
    reader = Reader()
    conn = await open_connection(nursery, reader)
    await api_of(blocks).subscribe_blocks(conn)
    blocks.commit()  # at once, before the subscription's task has run
    nursery.start_soon(commit_every, blocks, 0.01, 3)
    await wait_for(reader, 14)
    assert reader.heights() == [11, 12, 13, 14]


async def test_a_replay_far_from_the_head_holds_no_live_queue(autojump_clock, nursery):
    """A long replay reads the store a step at a time at its reader's pace; it opens the
    live queue only within a step of the head (so a slow replay is not dropped by the feed)."""
    blocks = Blocks(20 * REPLAY_STEP_BLOCKS)
    reader = Reader()
    reader.pause()
    conn = await open_connection(nursery, reader)
    await api_of(blocks).subscribe_blocks(conn, since_height=1)
    await trio.sleep(5)
    assert not blocks.feed._subscribers
    assert len(reader.received) == 0 and conn.queued_bytes  # waiting for the reader
    reader.resume()
    await wait_for(reader, blocks.height)
    assert len(blocks.feed._subscribers) == 1
    assert reader.heights() == list(range(1, blocks.height + 1))


@pytest.mark.parametrize(("since", "code"), [
    (-1, SINCE_HEIGHT_OUT_OF_RANGE),  # below the first block the store holds
    (12, SINCE_HEIGHT_OUT_OF_RANGE),  # past head + 1: not committed yet
    (10**30, SINCE_HEIGHT_OUT_OF_RANGE),
    ("5", INVALID_PARAMS),
    (True, INVALID_PARAMS),
    (2.5, INVALID_PARAMS),
])
async def test_a_since_height_outside_the_stored_blocks_is_refused(nursery, since, code):
    blocks = Blocks(10)
    conn = await open_connection(nursery, Reader())
    with pytest.raises(RpcError) as info:
        await api_of(blocks).subscribe_blocks(conn, since_height=since)
    assert info.value.code == code
    if code == SINCE_HEIGHT_OUT_OF_RANGE:
        assert info.value.data == {"first_height": 0, "head": 10}
        assert "from 0 to its head 10, or 11 for the next block" in info.value.message
    assert conn.subscriptions == 0 and not blocks.feed._subscribers


async def test_a_subscriber_the_feed_drops_is_told_from_where_to_resume(autojump_clock, nursery):
    """A client that stops reading falls a queue's worth of blocks behind: the feed drops it,
    and once it reads again it gets every block up to the drop, then subscription_ended with
    the last height it was sent; resubscribing from last_height + 1 misses nothing."""
    blocks = Blocks(3)
    reader = Reader()
    conn = await open_connection(nursery, reader)
    api = api_of(blocks)
    await api.subscribe_blocks(conn, since_height=1)
    await wait_for(reader, 3)
    reader.pause()
    await commit_every(blocks, 0.01, SUBSCRIBER_QUEUE_BLOCKS + 50)
    assert not blocks.feed._subscribers  # dropped
    reader.resume()
    await reader.wait_until(lambda: bool(reader.notes("subscription_ended")))
    [ended] = reader.notes("subscription_ended")
    heights = reader.heights()
    assert ended == {"subscription": "blocks", "reason": FELL_BEHIND,
                     "last_height": heights[-1]}
    assert heights == list(range(1, heights[-1] + 1)) and heights[-1] < blocks.height
    assert reader.received[-1]["method"] == "subscription_ended"  # the last word
    await trio.sleep(1)
    assert conn.subscriptions == 0 and not conn.closed
    await api.subscribe_blocks(conn, since_height=ended["last_height"] + 1)
    await wait_for(reader, blocks.height)
    assert reader.heights() == list(range(1, blocks.height + 1))


async def test_each_replay_step_costs_its_reader_a_request(autojump_clock, nursery):
    """A client that proved no key runs at its request rate: a long replay of 100 blocks
    (7 steps of 16) at one request a second after a burst of one takes six seconds."""
    blocks = Blocks(100)
    reader = Reader()
    conn = await open_connection(nursery, reader, replace(LIMITS, requests_per_s=1.0,
                                                          request_burst=1))
    start = trio.current_time()
    await api_of(blocks).subscribe_blocks(conn, since_height=0)
    await wait_for(reader, 100)
    assert 6 <= trio.current_time() - start < 7


async def test_a_subscription_whose_task_never_starts_holds_no_feed_queue(nursery):
    """The connection closes after the method ran and before its reply was queued (a client
    gone while its batch waits): the subscription's task is never started, so the feed must
    hold no queue for it (one would take every block until 256 of them dropped it, and cost
    every commit a send meanwhile)."""
    blocks = Blocks(10)
    conn = await open_connection(nursery, Reader())
    await conn.received("{}")  # a request is under way: tasks wait for its answer
    for since in (None, 5, 0):
        await api_of(blocks).subscribe_blocks(conn, since_height=since)
    conn.close()  # ... which never comes
    await trio.sleep(0.1)
    assert not blocks.feed._subscribers
