"""Admission's figures (``Admission.stats``), the one record ``status`` shows of it."""

from __future__ import annotations

import pytest
import trio

from iomtnode.admission.inbox import FromClient, FromPeer
from iomtnode.admission.mempool import Mempool
from iomtnode.admission.service import AdmissionStats, reason_name
from iomtnode.core import errors as e
from iomtnode.core.tx import SignedTx

from .chainkit import T0, admission_of, forged, reading, source_chain
from .servicekit import Node


async def test_stats_count_pending_dropped_verified_and_queued(tmp_path):
    chain, _ = source_chain(tmp_path / "data", blocks=0, per_block=0)
    try:
        admission = admission_of(Mempool(chain, now_ms=lambda: T0))
        assert admission.stats() == AdmissionStats(
            pending_txs=0, dropped_txs=0, signatures_verified=0, inbox_queued=0,
            peer_backlog=0, mempool_max_txs=admission.mempool.max_txs,
            received_txs={"client": 0, "peer": 0}, rejected_txs={}, dropped_by_reason={})
        for seq in (1, 2):
            admission.mempool.add(reading("d1", seq).raw)
        await admission.inbox.put(FromPeer(None, [reading("d1", 3).raw]))
        admission.inbox.put_own(FromClient([reading("d1", 4).raw], False, print))
        stats = admission.stats()
        assert (stats.pending_txs, stats.dropped_txs, stats.signatures_verified,
                stats.inbox_queued, stats.peer_backlog) == (2, 0, 2, 2, 1)
        # queued, not yet taken by the admission task: not received yet
        assert stats.received_txs == {"client": 0, "peer": 0}
    finally:
        chain.store.close()


@pytest.mark.parametrize(("kind", "name"), [
    (e.StaleSequenceError, "stale_sequence"),
    (e.BadSignatureRuleError, "bad_signature"),
    (e.MalformedTxRuleError, "malformed_tx"),
    (e.MempoolFullError, "mempool_full"),
    (e.RuleError, "rule"),
])
def test_a_refusal_is_named_by_its_rule(kind, name):
    assert reason_name(kind) == name


async def test_received_counts_each_source_and_refusals_count_by_reason(tmp_path, nursery):
    chain, _ = source_chain(tmp_path / "data", blocks=0, per_block=0)
    try:
        node = Node(chain)
        good, replay, stranger, forgery = (reading("d1", 1), reading("d1", 1),
                                           reading("zz", 1), forged(reading("d2", 1)))
        await nursery.start(node.admission.run)
        with trio.fail_after(5):
            results = await node.admission.submit_many([good.raw, replay.raw, b"\x00"])
            await node.push(node.peers[0], [stranger, forgery])
            await node.inbox.put(FromPeer(node.peers[1], [b"\xc1"]))  # not msgpack
            await node.inbox.wait_admitted(node.inbox.mark())
            while sum(node.admission.stats().received_txs.values()) < 6:
                await node.inbox.wait_progress()
        assert [type(r) for r in results] == [SignedTx, e.DuplicateTxError,
                                               e.MalformedTxRuleError]
        stats = node.admission.stats()
        assert stats.received_txs == {"client": 3, "peer": 3}
        assert stats.rejected_txs == {"duplicate_tx": 1, "malformed_tx": 2,
                                      "unknown_device": 1, "bad_signature": 1}
    finally:
        chain.store.close()


def test_drops_count_by_reason(tmp_path):
    chain, _ = source_chain(tmp_path / "data", blocks=0, per_block=0)
    try:
        admission = admission_of(Mempool(chain, now_ms=lambda: T0))
        txs = [admission.mempool.add(reading("d1", seq).raw) for seq in (1, 2, 3)]
        admission.mempool.drop([(txs[2], e.StaleSequenceError("too old")),
                                (txs[1], e.FutureTimestampError("ahead"))])
        admission.mempool.drop([(txs[0], e.StaleSequenceError("too old"))])
        assert admission.stats().dropped_by_reason == {"stale_sequence": 2,
                                                       "future_timestamp": 1}
    finally:
        chain.store.close()
