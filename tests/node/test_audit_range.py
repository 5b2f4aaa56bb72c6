"""What one get_audit_log answer holds: the log's read limit bounds it, records and leaves
alike, so a log of large records is read in several answers rather than one the node builds
in memory and no client can take."""

from __future__ import annotations

from iomtnode.audit.log import MAX_AUDIT_READ_BYTES, AuditLog
from iomtnode.audit.record import MAX_AUDIT_TX_IDS, MAX_RECORD_BYTES, AuditCall
from iomtnode.core.crypto import SigningKey
from iomtnode.node.audit import AuditService

STREAM = b"\x11" * 32
OTHER = b"\x12" * 32
RECORDS = 200  # of ~34 KB each (a thousand ids): ~6.8 MB, over the read limit


def call(stream: bytes) -> AuditCall:
    ids = tuple(i.to_bytes(32, "big") for i in range(MAX_AUDIT_TX_IDS))
    return AuditCall(1, b"\x01" * 32, (), stream, b"", "get_patient_records", 0, ids)


async def test_an_answer_stops_at_the_read_limit_and_the_next_one_goes_on(tmp_path):
    with AuditLog(tmp_path / "audit") as log:
        log.append([call(STREAM if i % 2 else OTHER) for i in range(RECORDS)])
        service = AuditService(log, SigningKey.generate(), None, submit_own=None,  # type: ignore[arg-type]
                               tx_status=None, now_ms=lambda: 1, inline=True)  # type: ignore[arg-type]
        at, leaves, records = 0, [], {}
        while at < RECORDS:
            got, mine = await service.log_range(at, RECORDS - at, frozenset({STREAM}))
            assert got and sum(len(r) for r in mine.values()) <= MAX_AUDIT_READ_BYTES
            assert len(got) < RECORDS  # one answer never holds the whole 6.8 MB
            assert set(mine) <= set(range(at, at + len(got)))
            leaves += got
            records |= mine
            at += len(got)
        assert leaves == log.leaves(0, RECORDS)
        assert sorted(records) == list(range(1, RECORDS, 2))
        assert MAX_RECORD_BYTES < MAX_AUDIT_READ_BYTES
