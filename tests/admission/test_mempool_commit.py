"""After a commit the mempool keeps exactly the pending transactions that still apply, and
skips the re-check only when it cannot change anything (the block took the oldest pending
transactions, in order, and no authority change is due)."""

from __future__ import annotations

import pytest

from iomtnode.admission.mempool import Mempool
from iomtnode.core import errors as e

from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import announce, grant, revoke_grant, sealed_reading
from .chainkit import GENESIS, T0, reading, seal, source_chain


@pytest.fixture
def chain(tmp_path):
    chain, _ = source_chain(tmp_path / "data", 0, 0)
    yield chain
    chain.store.close()


def test_a_block_of_the_oldest_pending_keeps_the_rest_as_they_were(chain, monkeypatch):
    pool = Mempool(chain, now_ms=lambda: GENESIS.time_ms + 10_000)
    txs = [reading("d1", seq) for seq in range(1, 6)]
    for tx in txs:
        pool.add_tx(tx)
    rechecks = []
    monkeypatch.setattr(pool, "_fresh_state", lambda real=pool._fresh_state: (
        rechecks.append(1), real())[1])
    block, _ = seal(chain, txs[:2])
    pool.blocks_committed([block])
    assert rechecks == [] and pool.pending(10) == txs[2:]
    assert pool._state.last_seq(pub("d1")) == 5 and pool._ctx.height == chain.height + 1
    pool.add_tx(reading("d1", 6))  # the state still knows the pending ones
    other = sealed_reading(key("d1"), 4, T0 + 99, CHAIN_ID)  # another with a pending seq
    with pytest.raises(e.StaleSequenceError):
        pool.add_tx(other)


def test_any_other_block_re_checks_what_is_pending(chain):
    pool = Mempool(chain, now_ms=lambda: GENESIS.time_ms + 10_000)
    txs = [reading("d2", seq) for seq in range(1, 5)]
    for tx in txs:
        pool.add_tx(tx)
    block, _ = seal(chain, [txs[3]])  # seq 4 first: the others are inside its window
    pool.blocks_committed([block])
    assert pool.pending(10) == txs[:3]
    assert pool._state.last_seq(pub("d2")) == 4
    block, _ = seal(chain, [txs[2], txs[0]])
    pool.blocks_committed([block])
    assert pool.pending(10) == [txs[1]]
    with pytest.raises(e.ReplayedSequenceError):  # the pending state knows 1, 3 and 4
        pool.add_tx(sealed_reading(key("d2"), 3, T0 + 99, CHAIN_ID))


def test_precheck_asks_the_store_only_for_readings_that_cannot_be_new(chain, monkeypatch):
    """A reading numbered above its device's last cannot be in a block: the store is not
    asked. One at or below it is looked up, so a committed copy is refused as in its block,
    before its signature is checked."""
    pool = Mempool(chain, now_ms=lambda: GENESIS.time_ms + 10_000)
    txs = [reading("d3", seq) for seq in range(1, 4)]
    for tx in txs:
        pool.add_tx(tx)
    block, _ = seal(chain, txs[:2])
    pool.blocks_committed([block])
    asked: list[bytes] = []
    real = chain.store.tx_location
    monkeypatch.setattr(chain.store, "tx_location", lambda tx_id: (asked.append(tx_id),
                                                                   real(tx_id))[1])
    pool.precheck(reading("d3", 4))
    assert asked == []
    with pytest.raises(e.DuplicateTxError, match=f"already in block {block.height}"):
        pool.precheck(txs[0])
    assert asked == [txs[0].id]
    with pytest.raises(e.DuplicateTxError, match="already pending"):
        pool.precheck(txs[2])


def test_precheck_skips_the_store_for_an_unused_number_inside_the_window(chain, monkeypatch):
    """Below the highest but unused in the pending state's window: it cannot be committed
    (the committed window would have it, and the pending one holds the committed one)."""
    pool = Mempool(chain, now_ms=lambda: GENESIS.time_ms + 10_000)
    early, late = reading("d1", 3), reading("d1", 7)
    pool.add_tx(late)
    block, _ = seal(chain, [late])
    pool.blocks_committed([block])
    asked: list[bytes] = []
    real = chain.store.tx_location
    monkeypatch.setattr(chain.store, "tx_location", lambda tx_id: (asked.append(tx_id),
                                                                   real(tx_id))[1])
    pool.precheck(early)
    assert asked == []
    pool.add_tx(early)
    block, _ = seal(chain, [early])
    pool.blocks_committed([block])
    with pytest.raises(e.DuplicateTxError, match=f"already in block {block.height}"):
        pool.precheck(early)
    assert asked == [early.id]


def test_a_block_takes_each_devices_readings_in_sequence_order(chain, monkeypatch):
    """Readings admitted out of order (inside the window) are proposed in order, each in a
    place its device's readings held; other transactions keep their places. In order, the
    selection is the pending order itself, and the commit skips the re-check."""
    pool = Mempool(chain, now_ms=lambda: GENESIS.time_ms + 10_000)
    arrived = [reading("d1", 5), reading("d2", 1), reading("d1", 2), reading("d2", 2),
               reading("d1", 4)]
    for tx in arrived:
        pool.add_tx(tx)
    proposed = pool.pending(10)
    assert [(tx.body.device, tx.body.seq) for tx in proposed] == [
        (pub("d1"), 2), (pub("d2"), 1), (pub("d1"), 4), (pub("d2"), 2), (pub("d1"), 5)]
    block, _ = seal(chain, proposed)
    pool.blocks_committed([block])
    assert len(pool) == 0
    in_order = [reading("d1", 6), reading("d2", 3), reading("d1", 7)]
    for tx in in_order:
        pool.add_tx(tx)
    assert pool.pending(10) == in_order
    rechecks = []
    monkeypatch.setattr(pool, "_fresh_state", lambda real=pool._fresh_state: (
        rechecks.append(1), real())[1])
    block, _ = seal(chain, pool.pending(10))
    pool.blocks_committed([block])
    assert rechecks == [] and len(pool) == 0


async def test_a_transaction_a_block_refuses_is_dropped_and_recorded(chain):
    """Building a block refuses a pending reading (here its timestamp is too far ahead of
    the block's time): it leaves the mempool, and its drop is recorded with the reason."""
    from iomtnode.chain.feed import BlockFeed
    from iomtnode.chain.writer import ChainWriter
    from iomtnode.consensus.blocks import BlockMaker

    now = GENESIS.time_ms + 10_000
    pool = Mempool(chain, now_ms=lambda: now)
    ahead = sealed_reading(key("d1"), 2, now + GENESIS.max_future_drift_ms, CHAIN_ID)
    fine = reading("d1", 3)
    pool.add_tx(ahead)
    pool.add_tx(fine)
    maker = BlockMaker(ChainWriter(chain, BlockFeed(chain.height), pool.verifier), pool)
    built = await maker.build_next(chain.height + 1, pub("A"), now - 1000, 10)
    assert built is not None and list(built.block.txs) == [fine]
    assert pool.pending(10) == [fine]
    status = pool.tx_status(ahead.id)
    assert status["state"] == "dropped" and status["code"] == e.FutureTimestampError.code
    assert "ahead of the chain's clock" in status["reason"]
    assert pool.dropped_total == 1
    pool.add_tx(reading("d1", 1))  # the pending state no longer holds the dropped one's effects
    again = sealed_reading(key("d1"), 2, now, CHAIN_ID)
    pool.add_tx(again)


async def test_a_drop_is_a_warning_only_for_what_a_client_was_told_was_accepted(chain):
    """A transaction this node acknowledged to a client (kept until committed) is a warning
    when dropped; one a peer relayed is logged at info: its proposer may still commit it."""
    import structlog.testing

    from iomtnode.chain.feed import BlockFeed
    from iomtnode.chain.writer import ChainWriter
    from iomtnode.consensus.blocks import BlockMaker

    now = GENESIS.time_ms + 10_000
    pool = Mempool(chain, now_ms=lambda: now)
    mine, relayed = (sealed_reading(key(d), 1, now + GENESIS.max_future_drift_ms, CHAIN_ID)
                     for d in ("d1", "d2"))
    pool.add_tx(mine)
    pool.keep([mine])  # what the API does before it answers the client
    pool.add_tx(relayed)
    maker = BlockMaker(ChainWriter(chain, BlockFeed(chain.height), pool.verifier), pool)
    with structlog.testing.capture_logs() as logs:
        await maker.build_next(chain.height + 1, pub("A"), now - 1000, 10)
    levels = {e["tx"]: (e["log_level"], e["client"]) for e in logs if e["event"] == "tx_dropped"}
    assert levels == {mine.id.hex(): ("warning", True), relayed.id.hex(): ("info", False)}


def test_a_pending_reading_of_the_epoch_a_revocation_ended_is_dropped_with_1024(chain):
    """No grace window: a reading sealed to the epoch the revoked grantee holds, pending when
    the revocation commits in another node's block, is dropped and its status says why."""
    seal(chain, [grant(key("P"), pub("G"), CHAIN_ID)])
    pool = Mempool(chain, now_ms=lambda: GENESIS.time_ms + 10_000)
    old, other = reading("d1", 1), reading("d2", 1)
    pool.add_tx(old)
    pool.add_tx(other)
    block, _ = seal(chain, [revoke_grant(key("P"), pub("G"), CHAIN_ID)])
    pool.blocks_committed([block])
    assert pool.pending(10) == []
    for tx in (old, other):
        status = pool.tx_status(tx.id)
        assert status["state"] == "dropped" and status["code"] == e.StaleEpochError.code == 1024
        assert "re-seal" in status["reason"]
    resealed = sealed_reading(key("d1"), 1, T0 + 1, CHAIN_ID, epoch=2)  # the same seq
    pool.add_tx(resealed)
    assert pool.pending(10) == [resealed]


def test_a_devices_readings_are_not_reordered_across_its_streams_new_epoch(chain):
    """Readings admitted out of sequence order on both sides of an epoch announcement (a
    gateway's backlog sealed before, a fresh reading after) are each valid only on their side:
    the block keeps them there, so none that the mempool accepted is refused by the block."""
    pool = Mempool(chain, now_ms=lambda: GENESIS.time_ms + 10_000)
    late = reading("d1", 5)  # epoch 1
    fresh = sealed_reading(key("d1"), 3, T0 + 3, CHAIN_ID, epoch=2)
    arrived = [late, announce(key("P"), CHAIN_ID, 2), fresh]
    for tx in arrived:
        pool.add_tx(tx)
    proposed = pool.pending(10)
    built = chain.build(proposed, pub("A"), T0 + 1000 * (chain.height + 1))
    assert built.rejected == []
    assert list(built.block.txs) == arrived
