"""``records fetch --fhir``: what the reader decrypted, with the stream's grants and (for the
patient) the serving node's audit records of the stream, as a FHIR R4B Bundle, validated
before it is written (:mod:`iomtnode.patient.fhir`)."""

from __future__ import annotations

from typing import Any

import typer

from ..client import ApiClient
from ..core.txkinds import MAX_AUDIT_ANCHOR_RECORDS
from ..patient import fhir
from ..patient import reader as rd
from .audit import anchors_of, log_of
from .common import fail
from .streams import now_ms


async def _blocks(client: ApiClient, heights: set[int]) -> dict[int, tuple[bytes, int]]:
    """(hash, time_ms) of each block at ``heights``."""
    found = {}
    for height in sorted(heights):
        block = await client.call("get_block", height=height)
        found[height] = (bytes.fromhex(block["hash"]), block["time_ms"])
    return found


async def consents(client: ApiClient, stream: bytes, at_ms: int) -> list[fhir.ConsentEntry]:
    """A Consent per grant the ledger holds for ``stream`` (inactive once expired); a grant
    whose transaction this node cannot name (its wrap never reached it) is left out."""
    view = await client.call("get_stream", stream=stream.hex())
    grants = [g for g in view["grants"] if g["tx_id"]]
    if len(grants) < len(view["grants"]):
        typer.echo(f"warning: {len(view['grants']) - len(grants)} grants have no Consent: the "
                   "node does not hold their transactions' wraps", err=True)
    blocks = await _blocks(client, {g["height"] for g in grants})
    return [fhir.ConsentEntry(stream, bytes.fromhex(g["grantee"]), blocks[g["height"]][1],
                              g["expires_ms"], g["expires_ms"] > at_ms,
                              bytes.fromhex(g["tx_id"]), g["mode"])
            for g in grants]


def anchored_end(anchors: list[dict[str, Any]]) -> int:
    """Where ``anchors`` end, counting only those shaped as the ledger holds them: contiguous
    from record 0, each of 1 to :data:`MAX_AUDIT_ANCHOR_RECORDS` records. (The export has no
    genesis to check their receipts, as ``iomtnode audit`` does; an anchor no ledger could
    hold must not cost it a page of log per 4,096 records it claims.)"""
    end = 0
    for a in anchors:
        count = a["count"]
        if a["first"] != end or type(count) is not int or not (
                1 <= count <= MAX_AUDIT_ANCHOR_RECORDS):
            break
        end += count
    return end


async def audit_entries(client: ApiClient, stream: bytes) -> tuple[list[fhir.AuditEntry], int]:
    """The serving node's anchored audit records of ``stream`` (which it gives to the stream's
    key), and how many of them name no caller key (a refused anonymous call)."""
    node = bytes.fromhex((await client.call("status"))["node_id"])
    anchors = await anchors_of(client, node)
    _, records, problems = await log_of(client, node, anchored_end(anchors))
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
    entries: list[fhir.AuditEntry] = []
    anonymous = 0
    for rec in records.values():
        if rec.stream != stream:
            continue
        if not rec.callers:
            anonymous += 1
            continue
        entries.append(fhir.AuditEntry(rec.node, rec.index, rec.time_ms, rec.callers[0],
                                       rec.stream, rec.grant_tx, rec.method, rec.code,
                                       rec.tx_ids))
    return entries, anonymous


async def export_bundle(client: ApiClient, stream: bytes,
                        results: list[rd.Opened | rd.Unreadable], *, audits: bool
                        ) -> dict[str, Any]:
    """The validated Bundle of the opened readings, the stream's grants and (``audits``: the
    caller is the stream's key) the serving node's audit records of the stream."""
    opened = [r for r in results if isinstance(r, rd.Opened)]
    blocks = await _blocks(client, {r.served.height for r in opened})
    readings = [fhir.ReadingEntry(
        r.served.tx.id, r.served.reading.device, r.served.reading.seq, r.served.reading.ts_ms,
        r.served.reading.epoch, r.served.height, blocks[r.served.height][0],
        r.served.tx.body_bytes, r.served.tx.signature, r.plain) for r in opened]
    at = now_ms()
    audit_list: list[fhir.AuditEntry] = []
    if audits:
        audit_list, anonymous = await audit_entries(client, stream)
        if anonymous:
            typer.echo(f"warning: {anonymous} refused calls proved no key: they have no "
                       "AuditEvent (see `iomtnode audit`)", err=True)
    try:
        bundle = fhir.bundle(stream, readings, await consents(client, stream, at), audit_list,
                             now_ms=at)
        fhir.validate(bundle)
    except fhir.FhirError as exc:
        fail(f"the FHIR export is not valid, nothing written: {exc}", 1)
    return bundle
