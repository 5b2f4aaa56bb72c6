"""An authority's node anchors its audit log on the ledger: at least a minute after a record is
written, or at once when a thousand wait; from where the ledger says the anchored log ends;
and an anchor that fails is made again, its reason logged.

A real single-authority node under the virtual clock (its records made through the audit
service, as the API makes them), then the anchoring task alone against a small ledger that
refuses or loses what the test says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio

from iomtnode.api.jsonrpc import RpcError
from iomtnode.api.records import AUDIT_UNAVAILABLE
from iomtnode.audit.log import AuditLog
from iomtnode.audit.record import AUDIT_ANCHOR_RECORDS, AUDIT_ANCHOR_S, range_root
from iomtnode.core.crypto import SigningKey
from iomtnode.core.errors import AuditAnchorError
from iomtnode.core.tx import AuditAnchor, decode_tx
from iomtnode.node.audit import ANCHOR_RETRY_S, AuditService

from .harness import Net, holds_for, wait_for

pytestmark = pytest.mark.timeout(120)

STREAM = b"\x11" * 32


async def record(audit: AuditService, count: int, stream: bytes = STREAM) -> None:
    """``count`` records of refused reads of ``stream``, written concurrently."""
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(lambda: audit.record(
                callers=frozenset(), stream=stream, grant_tx=b"", method="get_patient_records",
                code=-32025, tx_ids=()))


async def test_records_are_anchored_within_a_minute_by_their_root(tmp_path, nursery,
                                                                   autojump_clock):
    net = Net(tmp_path, 1)
    node = await net.start(nursery, 0)
    chain, audit, me = node.chain, node.services.audit, node.key.public
    await record(audit, 3)
    assert audit.next_index == 3
    await holds_for(lambda: chain.audit_anchor_next(me) == 0, AUDIT_ANCHOR_S - 5,
                    "anchored before its minute was up")
    await wait_for(lambda: chain.audit_anchor_next(me) == 3, "the three records anchored", 15)
    [anchor] = chain.audit_anchors(me, 0, 10)
    leaves = (await audit.log_range(0, 3, frozenset()))[0]
    assert (anchor.first, anchor.count, anchor.root) == (0, 3, range_root(leaves))
    tx = decode_tx(bytes.fromhex(chain.receipt(anchor.tx_id)["tx"]))
    assert tx.body == AuditAnchor(me, me, 0, 3, anchor.root)
    await record(audit, 2)  # the next anchor continues where the first ended
    await wait_for(lambda: chain.audit_anchor_next(me) == 5, "the next two anchored",
                   AUDIT_ANCHOR_S + 15)
    assert [(a.first, a.count) for a in chain.audit_anchors(me, 0, 10)] == [(0, 3), (3, 2)]


async def test_a_thousand_waiting_records_are_anchored_at_once(tmp_path, nursery,
                                                              autojump_clock):
    net = Net(tmp_path, 1)
    node = await net.start(nursery, 0)
    await record(node.services.audit, AUDIT_ANCHOR_RECORDS)
    await wait_for(lambda: node.chain.audit_anchor_next(node.key.public) == AUDIT_ANCHOR_RECORDS,
                   "a thousand records anchored", AUDIT_ANCHOR_S / 4)


async def test_a_node_that_is_no_authority_anchors_nothing(tmp_path, nursery, autojump_clock):
    net = Net(tmp_path, 1, authorities=0, absent=(SigningKey.generate(),))
    node = await net.start(nursery, 0)
    with structlog.testing.capture_logs() as logs:
        await record(node.services.audit, 3)
        await holds_for(lambda: len(node.mempool) == 0, 2 * AUDIT_ANCHOR_S,
                        "a node that is no authority queued an anchor")
    assert not [e for e in logs if e["event"].startswith("audit_anchor_")]  # never tried


# the anchoring task alone -------------------------------------------------------------


@dataclass
class Ledger:
    """The chain as the anchoring task reads it, and admission as it submits: ``refuse``
    anchors are refused (as another anchor of record 0 has just committed), ``lose`` are
    accepted and never committed, others commit."""

    key: SigningKey
    refuse: int = 0
    lose: int = 0
    anchored: int = 0
    submitted: list[AuditAnchor] = field(default_factory=list)
    chain_id: str = "iomt-test"

    def authorities(self) -> tuple[bytes, ...]:
        return (self.key.public,)

    def audit_anchor_next(self, node: bytes) -> int:
        return self.anchored

    def submit_own(self, raw: bytes, reply: Any) -> None:
        tx = decode_tx(raw)
        self.submitted.append(tx.body)
        if self.refuse:
            self.refuse -= 1
            self.anchored = 1
            reply(AuditAnchorError("the next audit record to anchor is 1, not 0"))
        elif self.lose:
            self.lose -= 1
            reply(tx)
        elif tx.body.first == self.anchored:
            reply(tx)
            self.anchored += tx.body.count

    def tx_status(self, tx_id: bytes) -> dict[str, Any]:
        return {"id": tx_id.hex(), "state": "dropped", "code": 1034, "reason": "lost it"}


async def start_service(tmp: Path, nursery: trio.Nursery, ledger: Ledger) -> AuditService:
    audit_log = AuditLog(tmp / "audit")
    service = AuditService(audit_log, ledger.key, ledger, submit_own=ledger.submit_own,
                           tx_status=ledger.tx_status, now_ms=lambda: 1, inline=True)
    await nursery.start(service.run)
    return service


async def test_a_refused_anchor_is_logged_and_made_again_from_where_the_ledger_is(
        tmp_path, nursery, autojump_clock):
    ledger = Ledger(SigningKey.generate(), refuse=1)
    service = await start_service(tmp_path, nursery, ledger)
    await record(service, 4)
    with structlog.testing.capture_logs() as logs:
        await wait_for(lambda: ledger.anchored == 4, "anchored after a refusal",
                       AUDIT_ANCHOR_S + 5)
    failed = [e for e in logs if e["event"] == "audit_anchor_failed"]
    assert failed and "the next audit record to anchor is 1" in failed[0]["reason"]
    assert any(e["event"] == "audit_anchor_retried" for e in logs)
    assert [(a.first, a.count) for a in ledger.submitted] == [(0, 4), (1, 3)]
    leaves, _ = await service.log_range(1, 3, frozenset())
    assert ledger.submitted[1].root == range_root(leaves)


async def test_an_anchor_lost_on_the_way_is_made_again_with_the_mempools_reason(
        tmp_path, nursery, autojump_clock):
    ledger = Ledger(SigningKey.generate(), lose=1)
    service = await start_service(tmp_path, nursery, ledger)
    await record(service, 2)
    with structlog.testing.capture_logs() as logs:
        await wait_for(lambda: ledger.anchored == 2, "anchored after a loss",
                       AUDIT_ANCHOR_S + ANCHOR_RETRY_S + 5)
    retried = [e for e in logs if e["event"] == "audit_anchor_retried"]
    assert retried and retried[0]["reason"] == "dropped (1034): lost it"
    assert len(ledger.submitted) == 2


async def test_a_log_damaged_while_the_node_runs_stops_the_reads_not_the_node(
        tmp_path, nursery, autojump_clock):
    net = Net(tmp_path, 1)
    node = await net.start(nursery, 0)
    chain, audit, me = node.chain, node.services.audit, node.key.public
    await record(audit, 3)
    [segment] = net.homes[0].audit_path.glob("*.log")
    damaged = bytearray(segment.read_bytes())
    damaged[-5] ^= 0xFF  # the last record, not anchored yet, no longer matches its checksum
    segment.write_bytes(damaged)
    with structlog.testing.capture_logs() as logs:
        await wait_for(lambda: any(e["event"] == "audit_log_damaged" for e in logs),
                       "the damage found when anchoring", AUDIT_ANCHOR_S + 5)
        height = chain.height
        await wait_for(lambda: chain.height > height + 2, "the node still finalizing", 30)
        for call in (lambda: audit.log_range(0, 3, frozenset()), lambda: audit.record(
                callers=frozenset(), stream=STREAM, grant_tx=b"", method="get_patient_records",
                code=-32025, tx_ids=())):
            with pytest.raises(RpcError) as refused:
                await call()
            assert refused.value.code == AUDIT_UNAVAILABLE
            assert "the audit log is damaged" in refused.value.data["reason"]
    assert chain.audit_anchor_next(me) == 0  # nothing anchored over the damage
    assert len([e for e in logs if e["event"] == "audit_log_damaged"]) == 1
