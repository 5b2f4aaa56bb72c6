"""The simulator's counts are true even when its block stream is cut: it resumes the
subscription from the block after the last it saw, so it sees every commit (with its latency),
and what it did not see committed it asks the node about (get_tx_status)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from iomtnode.sim import load
from iomtnode.sim.load import LoadStats, reconcile, run_load

pytestmark = pytest.mark.timeout(60)


async def test_counts_stay_true_when_the_node_ends_the_subscription(running_node,
                                                                    monkeypatch) -> None:
    # a follower slower to resubscribe than the drain's patience (QUIET_S): the drain asks
    # the node meanwhile, and must leave what the follower will still see to the follower
    monkeypatch.setattr("iomtnode.client.FOLLOW_RETRY_S", 2.5 * load.QUIET_S)
    feed = running_node.services.feed
    real = feed.publish

    def publish(committed: Any) -> None:  # every subscriber is "too slow" from block 3 on
        if committed[-1].block.height >= 3:
            for channel in list(feed._subscribers):
                feed._subscribers.discard(channel)
                channel.close()
        real(committed)

    feed.publish = publish
    stats = await run_load(running_node.url, running_node.authority, running_node.chain_id,
                           devices=2, rate=50, duration_s=1.0, seed=3)
    assert stats.accepted >= 40 and stats.rejected == 0
    assert stats.resubscribed >= 1
    assert stats.committed == stats.accepted
    assert (stats.dropped, stats.pending, stats.unknown) == (0, 0, 0)
    # every commit seen in its block (resumed from where the stream was cut): a latency each
    assert len(stats.latencies_ms) == stats.committed


class FakeClient:
    def __init__(self, states: dict[str, dict[str, Any]]) -> None:
        self.states = states
        self.asked: list[list[str]] = []

    async def call(self, method: str, **params: Any) -> Any:
        assert method == "get_tx_status"
        self.asked.append(params["ids"])
        return [{"id": i, **self.states[i]} for i in params["ids"]]


async def test_reconcile_counts_each_state_once(monkeypatch) -> None:
    monkeypatch.setattr("iomtnode.sim.load.STATUS_BATCH", 2)
    client = FakeClient({
        "a": {"state": "committed", "height": 4},
        "b": {"state": "dropped", "code": 1022, "reason": "sequence number 5 was already used"},
        "c": {"state": "pending"},
        "d": {"state": "unknown"},
        "e": {"state": "dropped", "code": 1022, "reason": "sequence number 6 was already used"},
    })
    sent_at = dict.fromkeys("abcde", 0.0)
    stats = LoadStats()
    await reconcile(client, sent_at, stats)  # type: ignore[arg-type]
    assert client.asked == [["a", "b"], ["c", "d"], ["e"]]
    assert (stats.committed, stats.dropped, stats.unknown, stats.pending) == (1, 2, 1, 0)
    assert stats.drop_reasons == {"1022 sequence number N was already used": 2}
    assert sent_at == {"c": 0.0}  # still pending: asked again later
    await reconcile(client, sent_at, stats, final=True)  # type: ignore[arg-type]
    assert stats.pending == 1 and sent_at == {"c": 0.0}
    sent_at["g"] = 0.0  # committed in a block the follower has not passed yet: left to it
    client.states["g"] = {"state": "committed", "height": 9}
    await reconcile(client, sent_at, stats, following_from=9)  # type: ignore[arg-type]
    assert "g" in sent_at and stats.committed == 1
    await reconcile(client, sent_at, stats, following_from=10)  # type: ignore[arg-type]
    assert "g" not in sent_at and stats.committed == 2
    del client.states["g"]
    sent_at["f"] = 0.0  # sent, its answer not in yet: not asked about
    await reconcile(client, sent_at, stats, inflight={"f"})  # type: ignore[arg-type]
    assert "f" in sent_at and client.asked[-1] == ["c"]
    summary = stats.summary()
    assert (summary["dropped"], summary["pending"], summary["unknown"]) == (2, 1, 1)


async def test_readings_the_node_cannot_be_asked_about_are_counted_unchecked(
        running_node, monkeypatch) -> None:
    """The node is gone when the run ends: the summary says how many were not checked
    instead of failing (or calling them lost)."""
    from iomtnode.consensus.blocks import BlockMaker

    async def never(*args: Any, **kwargs: Any) -> None:
        await trio.sleep_forever()

    def stop_sealing(stats: LoadStats) -> None:  # from the first frame on, nothing commits
        monkeypatch.setattr(BlockMaker, "build_next", never)

    monkeypatch.setattr(load, "DRAIN_TIMEOUT_S", 0)
    real_open, opened = load.open_client, []

    def open_client(url: str, *, ca: Any = None) -> Any:
        opened.append(url)
        if len(opened) > 1:
            raise OSError("connection refused")
        return real_open(url, ca=ca)

    monkeypatch.setattr(load, "open_client", open_client)
    stats = await run_load(running_node.url, running_node.authority, running_node.chain_id,
                           devices=2, rate=50, duration_s=0.5, seed=4,
                           on_progress=stop_sealing)
    assert len(opened) == 2
    assert stats.unchecked > 0
    assert stats.committed + stats.unchecked == stats.accepted
    assert stats.summary()["unchecked"] == stats.unchecked
