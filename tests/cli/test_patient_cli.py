"""The patient's side through the command line against a real node (LevelDB, its API on a
loopback socket): a patient announces epochs, a device sends sealed readings, a clinician is
granted, fetches and decrypts on its own machine (and exports a valid FHIR Bundle), a stranger
is refused, a revocation moves every later reading out of the clinician's reach, an erasure
leaves the readings' records without content, and the audit trail checks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import trio

from iomtnode.client import open_client
from iomtnode.home import read_key
from iomtnode.patient import fhir
from iomtnode.patient import reader as rd
from iomtnode.patient.device import DeviceSession
from iomtnode.patient.keyfile import load_grantee, load_patient
from iomtnode.patient.keys import derive_stream
from iomtnode.patient.plaintext import ECG, ECG_PATCH, HEART_RATE, Plaintext

from .clikit import admitted_device, cli, lines, logs_beside_the_commands, ok

pytestmark = pytest.mark.timeout(180)
__all__ = ["logs_beside_the_commands"]  # an autouse fixture, imported to be used here


async def patient_with_device(node, tmp_path) -> tuple[str, str]:
    """A patient key, its vitals stream on the node's chain (hex), a device admitted to it and
    the stream's first epoch; returns (stream, device key file)."""
    await ok("patient", "keygen", "--out", tmp_path / "patient.key")
    doc = json.loads(await ok("patient", "stream", "--key", tmp_path / "patient.key",
                              "--scope", "vitals", "--api", node.url, "--json"))
    await admitted_device(node, bytes.fromhex(doc["stream"]), tmp_path / "device.key")
    out = json.loads(await ok("patient", "epoch", *patient(tmp_path, node), "--json"))
    assert out["state"] == "committed"
    return doc["stream"], str(tmp_path / "device.key")


def patient(tmp_path, node) -> list[str]:
    return ["--key", str(tmp_path / "patient.key"), "--scope", "vitals", "--api", node.url]


async def send(node, stream: str, device: str, kind: str, *values: int) -> dict:
    args = [a for v in values for a in ("--value", str(v))]
    return json.loads(await ok("device", "send", "--key", device, "--stream", stream,
                               "--kind", kind, *args, "--api", node.url, "--json"))


async def test_grant_fetch_fhir_refusal_revocation(running_node, tmp_path):
    node = running_node
    stream, device = await patient_with_device(node, tmp_path)
    assert (await send(node, stream, device, "heart_rate", 72))["epoch"] == 1
    await send(node, stream, device, "blood_pressure", 121, 79)

    card = (await ok("patient", "keygen", "--grantee", "--out", tmp_path / "clinician.key"))
    await ok("patient", "keygen", "--grantee", "--out", tmp_path / "stranger.key")
    granted = json.loads(await ok("patient", "grant", *patient(tmp_path, node), "--card",
                                  card.strip(), "--expires", "1d", "--json"))
    assert granted["state"] == "committed" and granted["mode"] == "forward"

    clinician = ["records", "fetch", "--as", tmp_path / "clinician.key", "--stream", stream,
                 "--api", node.url]
    readings = lines(await ok(*clinician))
    assert [(r["kind"], r["values"], r["epoch"]) for r in readings] == [
        ("heart_rate", [72], 1), ("blood_pressure", [121, 79], 1)]
    await ok(*clinician, "--fhir", tmp_path / "bundle.json")
    bundle = json.loads((tmp_path / "bundle.json").read_text())
    fhir.validate(bundle)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds.count("Observation") == 2
    [consent] = [e["resource"] for e in bundle["entry"]
                 if e["resource"]["resourceType"] == "Consent"]  # named by its grant's id
    assert consent["identifier"][0]["value"] == granted["id"]

    stranger = await cli("records", "fetch", "--as", tmp_path / "stranger.key", "--stream",
                         stream, "--api", node.url)
    assert stranger.exit_code == 1 and "code -32025" in stranger.stderr

    # what the clinician holds before its grant is revoked: its wraps, hence its keys
    keys = load_grantee(tmp_path / "clinician.key")
    async with open_client(node.url) as client:
        await client.authenticate(keys.signing)
        page = await client.call("get_patient_records", stream=stream)
    ring, problems = rd.keyring_for(None, keys, bytes.fromhex(stream), page["wraps"])
    assert problems == [] and page["wraps"]

    revoked = json.loads(await ok("patient", "revoke", *patient(tmp_path, node), "--grantee",
                                  keys.grantee.hex(), "--json"))
    assert revoked["state"] == "committed"
    # again: the ledger holds no grant to it now, as for a grantee never granted (it exited
    # 2, the code of a wrong option, and named 16 digits of the grantee)
    again = await cli("patient", "revoke", *patient(tmp_path, node), "--grantee",
                      keys.grantee.hex())
    assert again.exit_code == 1, again.output
    assert again.stderr.startswith(f"error: grantee {keys.grantee.hex()} holds no grant on the "
                                   f"vitals stream {stream[:16]}: revoked already, or never "
                                   "granted")
    after = await send(node, stream, device, "heart_rate", 131)
    assert after["epoch"] == 2  # the device learnt the new epoch from the node, checked

    refused = await cli(*clinician)
    assert refused.exit_code == 1 and "no consent for this stream" in refused.stderr
    mine = lines(await ok("records", "fetch", "--as", tmp_path / "patient.key", "--scope",
                          "vitals", "--api", node.url))
    assert [r["values"] for r in mine] == [[72], [121, 79], [131]]
    async with open_client(node.url) as client:  # the patient's view, opened with the
        await client.authenticate(_stream_key(tmp_path, node))  # clinician's every key
        entries = (await client.call("get_patient_records", stream=stream))["readings"]
    results = [rd.open_served(rd.served(e, node.chain_id), ring, node.chain_id,
                              bytes.fromhex(stream)) for e in entries]
    assert [type(r) for r in results] == [rd.Opened, rd.Opened, rd.Unreadable]
    assert "no key for epoch 2" in results[2].reason


def _stream_key(tmp_path, node):
    return derive_stream(load_patient(tmp_path / "patient.key"), node.chain_id, "vitals")


async def test_a_device_reseals_when_a_revocation_commits_before_its_reading(running_node,
                                                                             tmp_path):
    node = running_node
    stream, _ = await patient_with_device(node, tmp_path)
    device = read_key(tmp_path / "device.key")
    card = await ok("patient", "keygen", "--grantee", "--out", tmp_path / "c.key")
    await ok("patient", "grant", *patient(tmp_path, node), "--card", card.strip(),
             "--expires", "1h")
    async with open_client(node.url) as client:
        session = await DeviceSession.open(client, device, bytes.fromhex(stream),
                                           node.chain_id)
        sealed = session.seal(Plaintext(HEART_RATE, 1, (64,)))
        assert sealed.tx.body.epoch == 1
        await ok("patient", "revoke", *patient(tmp_path, node), "--grantee",
                 load_grantee(tmp_path / "c.key").grantee.hex())
        assert await session.submit([sealed]) == []  # refused 1024, re-sealed, accepted
        with trio.fail_after(20):
            [outcome] = await session.settle(20)
    assert outcome.state == "committed" and outcome.seq == sealed.seq
    assert session.epoch.number == 2
    [reading] = lines(await ok("records", "fetch", "--as", tmp_path / "patient.key", "--scope",
                               "vitals", "--api", node.url))
    assert (reading["seq"], reading["epoch"], reading["values"]) == (sealed.seq, 2, [64])


async def test_a_grant_on_a_stream_without_an_epoch_is_refused_as_the_ledger_would(
        running_node, tmp_path):
    node = running_node
    await ok("patient", "keygen", "--out", tmp_path / "patient.key")
    doc = json.loads(await ok("patient", "stream", "--key", tmp_path / "patient.key",
                              "--scope", "vitals", "--api", node.url, "--json"))
    await admitted_device(node, bytes.fromhex(doc["stream"]), tmp_path / "device.key")
    card = await ok("patient", "keygen", "--grantee", "--out", tmp_path / "clinician.key")
    refused = await cli("patient", "grant", *patient(tmp_path, node), "--card", card.strip(),
                        "--expires", "1d")
    assert refused.exit_code == 1, refused.output  # not 2: no option was wrong
    assert "the stream has no epoch yet: announce one first" in refused.stderr


async def test_erasing_the_scope_leaves_records_without_content(running_node, tmp_path):
    node = running_node
    stream, device = await patient_with_device(node, tmp_path)
    await send(node, stream, device, "spo2", 97)
    await send(node, stream, device, "body_temperature", 3712)
    erased = json.loads(await ok("patient", "erase", *patient(tmp_path, node), "--json"))
    assert erased["state"] == "committed"
    fetch = await cli("records", "fetch", "--as", tmp_path / "patient.key", "--scope", "vitals",
                      "--api", node.url)
    assert fetch.exit_code == 1
    assert [r["unreadable"] for r in lines(fetch.stdout)] == [f"erased by {erased['id']}"] * 2
    again = await cli("patient", "epoch", *patient(tmp_path, node))
    assert again.exit_code == 1 and "erased" in again.stderr


async def test_a_strip_travels_through_the_blob_store(running_node, tmp_path):
    node = running_node
    stream, _ = await patient_with_device(node, tmp_path)
    strip = Plaintext(ECG, 2, (250, 1, 1000), bytes(range(250)) * 40, ECG_PATCH)  # 20 s
    async with open_client(node.url) as client:
        session = await DeviceSession.open(client, read_key(tmp_path / "device.key"),
                                           bytes.fromhex(stream), node.chain_id)
        sealed = session.seal(strip)
        assert sealed.tx.body.size_class == 1 and sealed.tx.sidecar == b""
        assert await session.submit([sealed]) == []
        [outcome] = await session.settle(20)
    assert outcome.state == "committed"
    [reading] = lines(await ok("records", "fetch", "--as", tmp_path / "patient.key", "--scope",
                               "vitals", "--api", node.url))
    assert (reading["kind"], reading["size_class"]) == ("ecg", 1)
    assert bytes.fromhex(reading["samples"]) == strip.samples


async def test_the_patient_shows_a_device_of_their_stream_with_their_own_key(running_node,
                                                                            tmp_path):
    node = running_node
    stream, device_file = await patient_with_device(node, tmp_path)
    device = read_key(Path(device_file)).public.hex()
    shown = json.loads(await ok("device", "show", device, *patient(tmp_path, node), "--json"))
    assert (shown["id"], shown["stream"], shown["status"]) == (device, stream, "active")
    without_scope = await cli("device", "show", device, "--key", tmp_path / "patient.key",
                              "--api", node.url)
    assert without_scope.exit_code == 2
    assert "a patient's key file: add --scope" in without_scope.stderr
    other = await cli("device", "show", device, "--key", tmp_path / "patient.key", "--scope",
                      "ecg", "--api", node.url)  # another scope's stream is no party to it
    assert other.exit_code == 1 and "-32023" in other.stderr


async def test_decrypted_readings_are_written_for_their_owner_only(running_node, tmp_path):
    node = running_node
    await patient_with_device(node, tmp_path)
    out, bundle = tmp_path / "mine.jsonl", tmp_path / "mine.json"
    bundle.write_text("{}")
    bundle.chmod(0o644)  # a file already there keeps no wider mode
    old = os.umask(0)
    try:
        await ok("records", "fetch", "--as", tmp_path / "patient.key", "--scope", "vitals",
                 "--api", node.url, "--out", out)
        await ok("records", "fetch", "--as", tmp_path / "patient.key", "--scope", "vitals",
                 "--api", node.url, "--fhir", bundle)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert json.loads(bundle.read_text())["resourceType"] == "Bundle"


async def test_a_patient_reading_a_scope_with_no_device_is_told_so(running_node, tmp_path):
    node = running_node
    await patient_with_device(node, tmp_path)
    refused = await cli("records", "fetch", "--as", tmp_path / "patient.key", "--scope", "ecg",
                        "--api", node.url)
    assert refused.exit_code == 1
    assert "the ledger knows no ecg stream of this patient key on iomt-test" in refused.stderr
    assert "no device was admitted to it" in refused.stderr
