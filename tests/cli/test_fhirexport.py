"""``records fetch --fhir`` without a node: what the reader opened, the ledger's grants and the
serving node's anchored audit records of the stream become a Bundle that validates under R4B
and our checks; records of other streams and anonymous refusals are not exported."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from iomtnode.audit.record import AuditRecord, leaf
from iomtnode.cli import fhirexport
from iomtnode.patient import reader as rd
from iomtnode.patient.plaintext import SPO2, Plaintext
from tests.patient.test_reader import CHAIN, CLINICIAN, ROOT, STREAM, TXS, entry

NODE = bytes([0x4E]) * 32
GRANT_TX = bytes([0xE1]) * 32
OTHER_STREAM = bytes([0x5A]) * 32


def record(index: int, stream: bytes, callers: tuple[bytes, ...], code: int) -> AuditRecord:
    return AuditRecord(index, 1_700_000_000_000 + index, NODE, callers, stream,
                       GRANT_TX if code == 0 else b"", "get_patient_records", code,
                       tuple(tx.id for tx in TXS) if code == 0 else (), bytes(16))


RECORDS = [record(0, STREAM, (CLINICIAN.grantee,), 0), record(1, OTHER_STREAM, (NODE,), 0),
           record(2, STREAM, (), -32025), record(3, STREAM, (bytes([0x33]) * 32,), -32025)]


class FakeClient:
    def __init__(self, grants: list[dict[str, Any]]) -> None:
        self.grants = grants

    async def call(self, method: str, **params: Any) -> Any:
        if method == "get_block":
            return {"hash": bytes([params["height"]]).hex() * 32, "time_ms": 1_700_000_000_000}
        if method == "get_stream":
            return {"grants": self.grants}
        if method == "status":
            return {"node_id": NODE.hex()}
        if method == "get_audit_anchors":
            return [{"first": 0, "count": len(RECORDS)}] if params["first"] == 0 else []
        if method == "get_audit_log":
            assert (params["first"], params["count"]) == (0, len(RECORDS))
            return {"leaves": [leaf(r).hex() for r in RECORDS],
                    "records": {str(r.index): r.encode().hex() for r in RECORDS
                                if r.stream == STREAM}}
        raise AssertionError(method)


GRANT = {"grantee": CLINICIAN.grantee.hex(), "box": CLINICIAN.box_public.hex(), "mode": 0,
         "expires_ms": 1_800_000_000_000, "first_epoch": 1, "height": 3,
         "tx_id": GRANT_TX.hex()}


def opened() -> list[rd.Opened | rd.Unreadable]:
    ring, _ = rd.keyring_for(ROOT, None, STREAM, [])
    results = [rd.open_served(rd.served(entry(tx), CHAIN), ring, CHAIN, STREAM) for tx in TXS]
    unreadable = rd.Unreadable(results[0].served, "no key for epoch 1")
    return [*results, unreadable]


def resources(bundle: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


async def test_the_patients_bundle_validates_with_consents_and_audit_events(capsys):
    bundle = await fhirexport.export_bundle(FakeClient([GRANT]), STREAM, opened(), audits=True)
    assert len(resources(bundle, "Observation")) == 3  # the unreadable one is not guessed
    assert len(resources(bundle, "Provenance")) == 3
    assert len(resources(bundle, "Device")) == 1
    [consent] = resources(bundle, "Consent")
    assert consent["status"] == "active"
    assert consent["identifier"][0]["value"] == GRANT_TX.hex()
    events = resources(bundle, "AuditEvent")
    assert [e["outcome"] for e in events] == ["0", "4"]  # other stream and anonymous: left out
    assert "1 refused calls proved no key" in capsys.readouterr().err


async def test_a_grantees_bundle_has_no_audit_events_and_skips_unnamed_grants(capsys):
    unnamed = GRANT | {"grantee": "77" * 32, "tx_id": ""}
    bundle = await fhirexport.export_bundle(FakeClient([GRANT, unnamed]), STREAM, opened(),
                                            audits=False)
    assert resources(bundle, "AuditEvent") == []
    assert len(resources(bundle, "Consent")) == 1
    assert "1 grants have no Consent" in capsys.readouterr().err


async def test_an_invalid_bundle_is_refused_whole(capsys):
    results = opened()
    results[0] = rd.Opened(results[0].served, Plaintext(SPO2, 2**62, (97,)))  # no FHIR time
    with pytest.raises(typer.Exit) as raised:
        await fhirexport.export_bundle(FakeClient([]), STREAM, results, audits=False)
    assert raised.value.exit_code == 1
    assert "the FHIR export is not valid, nothing written" in capsys.readouterr().err
