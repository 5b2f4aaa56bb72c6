"""The patient's data end to end, as OS processes (a node, and every step a CLI command):

a patient announces an epoch for a device's stream; a clinician is granted, fetches and
decrypts, and writes a FHIR Bundle valid under R4B; a stranger is refused; the grant is
revoked, and the clinician gets nothing recorded afterwards; the patient's export holds the
stranger's refusal as an AuditEvent; `audit --verify` passes once the node anchored its log,
and fails, naming the range, after an anchored record is cut from the log on disk."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from iomtnode.audit.log import FRAME
from iomtnode.patient import fhir
from iomtnode.patient.keyfile import load_grantee
from tests.e2e.procs import NodeProcess, iomtnode, iomtnode_all

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ANCHOR_WAIT_S = 120.0  # a node anchors its audit log within a minute of a record
RETRY_S = 0.5


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def until_ok(*args: str, timeout_s: float = 30.0) -> str:
    """Run a command until it succeeds (e.g. waiting for an admission to commit)."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc = iomtnode(*args, check=False)
        if proc.returncode == 0:
            return proc.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"iomtnode {' '.join(args)}: {proc.stderr[-2000:]}")
        time.sleep(RETRY_S)


def anchored(check: list[str], records: int) -> dict:
    """The audit report once the node's anchors cover ``records`` records."""
    deadline = time.monotonic() + ANCHOR_WAIT_S
    while True:
        report = json.loads(iomtnode(*check).stdout)
        if report["nodes"][0]["anchored"] >= records:
            return report
        assert time.monotonic() < deadline, report
        time.sleep(2)


def cut_last_records(home: Path, count: int) -> None:
    """Remove the last ``count`` records of the node's audit log: cut its last segment before
    their frames (each ``u32 length | u32 crc | payload``)."""
    segment = sorted((home / "audit").glob("*.log"))[-1]
    data = segment.read_bytes()
    starts, at = [], 0
    while at < len(data):
        starts.append(at)
        at += FRAME.size + FRAME.unpack_from(data, at)[0]
    assert at == len(data) and len(starts) > count
    segment.write_bytes(data[:starts[-count]])


def test_grant_fetch_revoke_audit(tmp_path: Path):
    home = tmp_path / "node"
    patient, clinician, stranger = (str(tmp_path / n) for n in ("p.key", "c.key", "s.key"))
    _, _, made_device, made_card, _ = iomtnode_all(  # every key offline, at once
        ("init", "--home", str(home)), ("patient", "keygen", "--out", patient),
        ("device", "keygen", "--out", str(tmp_path / "d.key")),
        ("patient", "keygen", "--grantee", "--out", clinician),
        ("patient", "keygen", "--grantee", "--out", stranger))
    device, card = made_device.stdout.strip(), made_card.stdout.strip()
    with NodeProcess.start(home, tmp_path / "node.log") as node:
        api = ["--api", node.api]
        mine = ["--key", patient, "--scope", "vitals", *api]
        stream = json.loads(iomtnode("patient", "stream", *mine, "--json").stdout)["stream"]
        iomtnode("device", "admit", device, "--stream", stream, "--home", str(home), *api)
        until_ok("patient", "epoch", *mine)  # once the admission is committed
        send = ["device", "send", "--key", str(tmp_path / "d.key"), "--stream", stream, *api]
        iomtnode(*send, "--kind", "heart_rate", "--value", "72")
        iomtnode(*send, "--kind", "blood_pressure", "--value", "121", "--value", "79")

        iomtnode("patient", "grant", *mine, "--card", card, "--expires", "1d")
        fetch = ["records", "fetch", "--as", clinician, "--stream", stream, *api]
        fetched, as_fhir, refused = iomtnode_all(  # three reads, each audited, at once
            fetch, (*fetch, "--fhir", str(tmp_path / "clinician.json")),
            ("records", "fetch", "--as", stranger, "--stream", stream, *api), check=False)
        assert fetched.returncode == 0 and as_fhir.returncode == 0, (
            fetched.stderr[-3000:] + as_fhir.stderr[-3000:])
        readings = json_lines(fetched.stdout)
        assert [r["values"] for r in readings] == [[72], [121, 79]]
        fhir.validate(json.loads((tmp_path / "clinician.json").read_text()))
        assert refused.returncode == 1 and "code -32025" in refused.stderr

        iomtnode("patient", "revoke", *mine, "--grantee",
                 load_grantee(clinician).grantee.hex())
        assert "(epoch 2)" in iomtnode(*send, "--kind", "heart_rate", "--value", "131").stdout
        after = iomtnode(*fetch, check=False)
        assert after.returncode == 1 and "no consent for this stream" in after.stderr
        everything = json_lines(iomtnode("records", "fetch", "--as", patient, "--scope",
                                         "vitals", *api).stdout)
        assert [r["epoch"] for r in everything] == [1, 1, 2]

        check = ["audit", "--patient", patient, "--scope", "vitals", "--verify", "--genesis",
                 str(home / "genesis.json"), *api, "--json"]
        # 5 reads audited: the clinician's 3 (one refused), the stranger's, the patient's
        report = anchored(check, 5)
        assert report["ok"] and report["nodes"][0]["yours"] == [0, 1, 2, 3, 4]

        iomtnode("records", "fetch", "--as", patient, "--scope", "vitals", *api, "--fhir",
                 str(tmp_path / "patient.json"))
        bundle = json.loads((tmp_path / "patient.json").read_text())
        refusals = [e["resource"] for e in bundle["entry"]
                    if e["resource"]["resourceType"] == "AuditEvent"
                    and e["resource"]["outcome"] != "0"]
        who = {r["agent"][0]["who"]["identifier"]["value"] for r in refusals}
        assert load_grantee(stranger).grantee.hex() in who

    cut_last_records(home, 2)  # the export's own read, and the last anchored one (index 4)
    with NodeProcess.start(home, tmp_path / "node2.log") as node:
        failed = iomtnode("audit", "--patient", patient, "--scope", "vitals", "--verify",
                          "--genesis", str(home / "genesis.json"), "--api", node.api,
                          check=False)
    assert failed.returncode == 1 and "FAILED" in failed.stdout
    # the log now ends before record 4, which the anchors cover: the range holding it fails
    assert "(first missing: record 4), so the range cannot be checked" in failed.stdout
