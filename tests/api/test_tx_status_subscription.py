"""subscribe_tx_status: each id told once when committed or dropped (those already decided at
once), the subscription's end when all are told, the limit on ids, and a real mempool's drops
reaching the subscription through its drop listener."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from iomtnode.admission.mempool import Mempool
from iomtnode.api.jsonrpc import INVALID_PARAMS, RpcError
from iomtnode.api.subscriptions import (
    ALL_TOLD,
    MAX_TX_STATUS_IDS,
    MAX_WATCHED_IDS_PER_ADDRESS,
    TOO_MANY_TX_IDS,
    WATCH_FULL,
    SubscriptionsApi,
)
from iomtnode.api.txwatch import TxWatch
from iomtnode.chain.feed import BlockFeed
from iomtnode.core import errors as e
from iomtnode.store.txlog import Drop

from ..admission.chainkit import GENESIS, reading, seal, source_chain
from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import grant, revoke_grant
from .subkit import Blocks, Reader, open_connection


class Statuses:
    """What get_tx_status says, as a test sets it."""

    def __init__(self) -> None:
        self.known: dict[bytes, dict[str, Any]] = {}

    def tx_status(self, tx_id: bytes) -> dict[str, Any]:
        return self.known.get(tx_id, {"id": tx_id.hex(), "state": "unknown"})

    def set(self, tx_id: bytes, state: str, **more: Any) -> dict[str, Any]:
        self.known[tx_id] = {"id": tx_id.hex(), "state": state, **more}
        return self.known[tx_id]


async def test_each_id_is_told_once_when_decided_then_the_subscription_ends(
        autojump_clock, nursery):
    blocks, statuses = Blocks(5), Statuses()
    watch = TxWatch(statuses.tx_status)
    blocks.feed.listen(watch.committed)
    api = SubscriptionsApi(blocks.feed, blocks, statuses, watch)
    reader = Reader()
    conn = await open_connection(nursery, reader)
    done, gone, later, dropped, unknown = (reading("d1", seq) for seq in range(1, 6))
    told_done = statuses.set(done.id, "committed", height=3)
    told_gone = statuses.set(gone.id, "dropped", height=4, code=1022, reason="stale")
    statuses.set(later.id, "pending")
    statuses.set(dropped.id, "pending")
    ids = [tx.id.hex() for tx in (done, gone, later, dropped, unknown)]
    assert await api.subscribe_tx_status(conn, [*ids, done.id.hex()]) == "tx_status"  # once each
    await reader.wait_until(lambda: len(reader.received) == 2)
    assert reader.notes("tx_status") == [told_done, told_gone]  # decided already: at once
    assert watch.watched == 5

    blocks.commit((later,))
    told_dropped = statuses.set(dropped.id, "dropped", height=6, code=1024, reason="revoked")
    watch.dropped([Drop(dropped.id, 1024, "revoked", 6)])
    await reader.wait_until(lambda: len(reader.received) == 4)
    assert reader.notes("tx_status")[2:] == [
        {"id": later.id.hex(), "state": "committed", "height": 6}, told_dropped]

    await trio.sleep(5)  # the unknown one is not decided: the subscription waits
    assert not reader.notes("subscription_ended") and conn.subscriptions == 1
    blocks.commit((unknown,))
    await reader.wait_until(lambda: bool(reader.notes("subscription_ended")))
    assert reader.notes("tx_status")[4:] == [
        {"id": unknown.id.hex(), "state": "committed", "height": 7}]
    assert reader.received[-1]["params"] == {"subscription": "tx_status", "reason": ALL_TOLD,
                                             "told": 5}
    await trio.sleep(1)
    assert watch.watched == 0 and conn.subscriptions == 0  # the index forgets its ids


async def test_a_closed_connection_stops_watching(autojump_clock, nursery):
    blocks, statuses = Blocks(1), Statuses()
    watch = TxWatch(statuses.tx_status)
    api = SubscriptionsApi(blocks.feed, blocks, statuses, watch)
    conn = await open_connection(nursery, Reader())
    await api.subscribe_tx_status(conn, [reading("d1", 1).id.hex()])
    await trio.sleep(1)
    assert watch.watched == 1
    conn.close()
    await trio.sleep(1)
    assert watch.watched == 0


@pytest.mark.parametrize(("ids", "code"), [
    (["00" * 32] * (MAX_TX_STATUS_IDS + 1), TOO_MANY_TX_IDS),
    ([], INVALID_PARAMS),
    ("00" * 32, INVALID_PARAMS),
    (["00" * 31], INVALID_PARAMS),
    (["zz" * 32], INVALID_PARAMS),
])
async def test_too_many_or_malformed_ids_are_refused(nursery, ids, code):
    blocks, statuses = Blocks(1), Statuses()
    watch = TxWatch(statuses.tx_status)
    conn = await open_connection(nursery, Reader())
    with pytest.raises(RpcError) as info:
        await SubscriptionsApi(blocks.feed, blocks, statuses, watch).subscribe_tx_status(
            conn, ids)
    assert info.value.code == code
    if code == TOO_MANY_TX_IDS:
        assert info.value.data == {"limit": MAX_TX_STATUS_IDS}
    assert conn.subscriptions == 0 and watch.watched == 0


async def test_a_mempool_drop_reaches_the_subscription(tmp_path, autojump_clock, nursery):
    """A pending reading sealed to the epoch a revocation ends is dropped when the revocation
    commits: the mempool's drop listener tells the watch, with the recorded reason."""
    chain, _ = source_chain(tmp_path / "data", 0, 0)
    try:
        seal(chain, [grant(key("P"), pub("G"), CHAIN_ID)])
        pool = Mempool(chain, now_ms=lambda: GENESIS.time_ms + 10_000)
        watch = TxWatch(pool.tx_status)
        pool.listen_drops(watch.dropped)
        old = reading("d1", 1)
        pool.add_tx(old)
        reader = Reader()
        conn = await open_connection(nursery, reader)
        api = SubscriptionsApi(BlockFeed(chain.height), chain, pool, watch)
        await api.subscribe_tx_status(conn, [old.id.hex()])
        await trio.sleep(1)
        assert reader.received == [] and watch.watched == 1  # pending: nothing to tell yet
        block, _ = seal(chain, [revoke_grant(key("P"), pub("G"), CHAIN_ID)])
        pool.blocks_committed([block])
        await reader.wait_until(lambda: bool(reader.notes("subscription_ended")))
        [status] = reader.notes("tx_status")
        assert status == pool.tx_status(old.id)  # what get_tx_status says
        assert status["state"] == "dropped" and status["code"] == e.StaleEpochError.code
    finally:
        chain.store.close()


async def test_the_node_watches_a_bounded_number_of_ids_for_all_its_clients(
        autojump_clock, nursery, monkeypatch):
    monkeypatch.setattr("iomtnode.api.subscriptions.MAX_WATCHED_IDS", 3)
    blocks, statuses = Blocks(1), Statuses()
    watch = TxWatch(statuses.tx_status)
    api = SubscriptionsApi(blocks.feed, blocks, statuses, watch)
    one = await open_connection(nursery, Reader())
    other = await open_connection(nursery, Reader())
    await api.subscribe_tx_status(one, [reading("d1", seq).id.hex() for seq in (1, 2)])
    await trio.sleep(1)
    with pytest.raises(RpcError) as info:
        await api.subscribe_tx_status(other, [reading("d1", seq).id.hex() for seq in (3, 4)])
    assert info.value.code == WATCH_FULL and info.value.data == {"limit": 3}
    await api.subscribe_tx_status(other, [reading("d1", 3).id.hex()])  # within the limit
    one.close()
    await trio.sleep(1)
    assert watch.watched == 1


async def test_one_address_holds_a_share_of_the_watched_ids(autojump_clock, nursery,
                                                            monkeypatch):
    """Ids that are never decided, subscribed from many connections of one address, fill
    that address's share, not the node's watch: clients elsewhere still subscribe."""
    monkeypatch.setattr("iomtnode.api.subscriptions.MAX_WATCHED_IDS_PER_ADDRESS", 3)
    blocks, statuses = Blocks(1), Statuses()
    watch = TxWatch(statuses.tx_status)
    api = SubscriptionsApi(blocks.feed, blocks, statuses, watch)
    ids = [reading("d1", seq).id.hex() for seq in range(1, 4)]
    one = await open_connection(nursery, Reader(), remote="[2001:db8::1]:4000")
    same = await open_connection(nursery, Reader(), remote="[2001:db8::2]:4001")  # same /64
    other = await open_connection(nursery, Reader(), remote="192.0.2.7:4000")
    await api.subscribe_tx_status(one, ids[:2])
    await trio.sleep(1)
    with pytest.raises(RpcError) as info:
        await api.subscribe_tx_status(same, ids[:2])  # the same ids count again: each costs
    assert info.value.code == WATCH_FULL
    assert info.value.data == {"limit": 3, "per": "address"}
    assert "2001:db8::/64" in info.value.message
    await api.subscribe_tx_status(other, ids[:2])  # another address: its own share
    await api.subscribe_tx_status(same, ids[2:])
    await trio.sleep(1)
    assert watch.watched == 5 and watch.watched_by(one.address) == 3
    one.close()
    await trio.sleep(1)
    assert watch.watched == 3 and watch.watched_by(one.address) == 1
    assert MAX_WATCHED_IDS_PER_ADDRESS * 10 <= 100_000


async def test_a_batch_cannot_pass_the_share(autojump_clock, nursery, monkeypatch):
    """Requests of one batch are all checked before the first one's task watches: each task
    checks again as it starts watching, and one over the share ends at once, saying why."""
    monkeypatch.setattr("iomtnode.api.subscriptions.MAX_WATCHED_IDS_PER_ADDRESS", 3)
    blocks, statuses = Blocks(1), Statuses()
    watch = TxWatch(statuses.tx_status)
    api = SubscriptionsApi(blocks.feed, blocks, statuses, watch)
    reader = Reader()
    conn = await open_connection(nursery, reader)
    first = [reading("d1", seq).id.hex() for seq in (1, 2)]
    second = [reading("d1", seq).id.hex() for seq in (3, 4)]
    await api.subscribe_tx_status(conn, first)  # no checkpoint in between: as in a batch
    await api.subscribe_tx_status(conn, second)
    await reader.wait_until(lambda: bool(reader.notes("subscription_ended")))
    [ended] = reader.notes("subscription_ended")
    assert ended["untold"] in (first, second) and "at most 3" in ended["reason"]  # either
    assert watch.watched == 2 and conn.subscriptions == 1


async def test_a_status_cut_off_by_the_shutdown_is_named_untold(autojump_clock, nursery,
                                                                monkeypatch):
    """The node shuts down as a decided id's status is about to be queued: the last words
    name that id as untold (the client never got it), not as told."""
    blocks, statuses = Blocks(1), Statuses()
    watch = TxWatch(statuses.tx_status)
    api = SubscriptionsApi(blocks.feed, blocks, statuses, watch)
    reader = Reader()
    conn = await open_connection(nursery, reader)
    done = reading("d1", 1)
    statuses.set(done.id, "committed", height=1)
    real = conn.notify_paced

    async def cut_off(method: str, params: Any) -> bool:
        conn.close()  # the shutdown's cancellation reaches the task inside notify_paced
        return await real(method, params)

    monkeypatch.setattr(conn, "notify_paced", cut_off)
    await api.subscribe_tx_status(conn, [done.id.hex()])
    await trio.sleep(1)
    assert conn.queued_bytes == 0 and not reader.received
    await conn.send_last_words(reader, "node shutting down")  # type: ignore[arg-type]
    assert reader.notes("subscription_ended") == [
        {"subscription": "tx_status", "reason": "node shutting down",
         "untold": [done.id.hex()]}]
