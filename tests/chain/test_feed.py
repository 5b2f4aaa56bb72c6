"""The commit feed's subscribers: one that falls behind is dropped with a warning that says
so; one whose reader left (a client that closed its subscription) goes without a word."""

from __future__ import annotations

from types import SimpleNamespace

from structlog.testing import capture_logs

from iomtnode.chain.feed import SUBSCRIBER_QUEUE_BLOCKS, BlockFeed, Committed


def commit(height: int) -> list[Committed]:
    block = SimpleNamespace(height=height)  # the feed reads a block's height only
    return [Committed(block, None, None)]  # type: ignore[arg-type]


def test_a_subscriber_that_falls_behind_is_dropped_with_a_warning_saying_so():
    feed = BlockFeed(0)
    receive = feed.subscribe()
    with capture_logs() as logs:
        for height in range(1, SUBSCRIBER_QUEUE_BLOCKS + 2):
            feed.publish(commit(height))
    dropped = [e for e in logs if e["event"] == "block_subscriber_dropped"]
    assert dropped == [{"event": "block_subscriber_dropped", "log_level": "warning",
                        "reason": f"fell behind: {SUBSCRIBER_QUEUE_BLOCKS} blocks not read",
                        "height": SUBSCRIBER_QUEUE_BLOCKS + 1}]
    assert len([receive.receive_nowait() for _ in range(SUBSCRIBER_QUEUE_BLOCKS)]) == 256


def test_a_subscriber_whose_reader_left_goes_without_a_warning():
    """A client closing its subscription is no fault (it was logged as a warning, 'too slow
    or gone', at every disconnect)."""
    feed = BlockFeed(0)
    feed.subscribe().close()
    with capture_logs() as logs:
        feed.publish(commit(1))
        feed.publish(commit(2))
    assert [e for e in logs if e["log_level"] == "warning"] == []
    assert [e["event"] for e in logs] == ["block_subscriber_left"]
