"""The FHIR export: a Bundle that R4B accepts, with our codes, units and references checked,
reproducible byte for byte."""

from __future__ import annotations

import base64
import copy
import json
import random
import struct

import pytest
from fhir.resources.R4B.bundle import Bundle

from iomtnode.patient import fhircodes as fc
from iomtnode.patient import plaintext as pt
from iomtnode.patient.fhir import (
    AuditEntry,
    ConsentEntry,
    FhirError,
    ReadingEntry,
    bundle,
    full_url,
    validate,
)

T = 1_760_000_000_000  # 2025-10-09T08:53:20Z
DAY_MS = 86_400_000
STREAM = bytes([0x11]) * 32
WRIST, PATCH = bytes([0xD1]) * 32, bytes([0xD2]) * 32  # two devices
CLINICIAN, STRANGER = bytes([0xC1]) * 32, bytes([0xCC]) * 32
NODE = bytes([0x0A]) * 32
ECG_SAMPLES = struct.pack("<6h", 1, -2, 3, -4, 5, -32768)  # 2 leads, 3 samples each


def reading(n: int, device: bytes, plain: pt.Plaintext) -> ReadingEntry:
    return ReadingEntry(tx_id=bytes([n]) * 32, device=device, seq=n, ts_ms=T + 1000 * n + 7,
                        epoch=1, height=10 + n, block_hash=bytes([0xB0 + n]) * 32,
                        body=b"signed body %d" % n, signature=bytes([0x50 + n]) * 64,
                        plain=plain)


READINGS = [
    reading(1, WRIST, pt.Plaintext(pt.HEART_RATE, T + 1, (78,))),
    reading(2, WRIST, pt.Plaintext(pt.SPO2, T + 2, (97,))),
    reading(3, WRIST, pt.Plaintext(pt.BODY_TEMPERATURE, T + 3, (3712,))),
    reading(4, WRIST, pt.Plaintext(pt.BLOOD_PRESSURE, T + 4, (118, 76))),
    reading(5, PATCH, pt.Plaintext(pt.ECG, T + 5, (250, 2, 2500), ECG_SAMPLES,
                                   device_class=pt.ECG_PATCH)),
    reading(6, PATCH, pt.Plaintext(pt.HEART_RATE, T + 6, (80,), device_class=pt.ECG_PATCH)),
]
CONSENTS = [
    ConsentEntry(STREAM, CLINICIAN, T, T + DAY_MS, True, bytes([0xE1]) * 32, 0),
    ConsentEntry(STREAM, bytes([0xC2]) * 32, T - DAY_MS, T + DAY_MS, False, bytes([0xE2]) * 32, 1),
]
AUDITS = [
    AuditEntry(NODE, 0, T + 100, CLINICIAN, STREAM, bytes([0xE1]) * 32, "get_patient_records", 0,
               tuple(r.tx_id for r in READINGS)),
    AuditEntry(NODE, 1, T + 200, STRANGER, STREAM, b"", "get_patient_records", -32025, ()),
]


def export(readings=READINGS, consents=CONSENTS, audits=AUDITS, now_ms=T + DAY_MS) -> dict:
    return bundle(STREAM, readings, consents, audits, now_ms=now_ms)


def resources(b: dict, kind: str) -> list[dict]:
    return [e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == kind]


def observation(b: dict, n: int) -> dict:
    url = full_url("observation", bytes([n]) * 32)
    return next(e["resource"] for e in b["entry"] if e["fullUrl"] == url)


def problems(b: dict) -> tuple[str, ...]:
    with pytest.raises(FhirError) as info:
        validate(b)
    return info.value.problems


def test_a_bundle_of_every_kind_validates_under_r4b():
    b = export()
    validate(b)
    assert b["resourceType"] == "Bundle" and b["type"] == "collection"
    counts = {k: len(resources(b, k)) for k in
              ("Device", "Observation", "Provenance", "Consent", "AuditEvent")}
    assert counts == {"Device": 2, "Observation": 6, "Provenance": 6, "Consent": 2,
                      "AuditEvent": 2}
    assert all(e["fullUrl"].startswith("urn:uuid:") for e in b["entry"])


def test_json_round_trip_through_the_r4b_model():
    b = export()
    text = json.dumps(b, sort_keys=True)
    model = Bundle.model_validate_json(text)
    assert json.loads(model.model_dump_json()) == b


def test_the_same_input_in_any_order_gives_the_same_bytes():
    shuffled = random.Random(7)
    a = json.dumps(export(), sort_keys=True)
    for _ in range(5):
        rs, cs, au = (shuffled.sample(x, len(x)) for x in (READINGS, CONSENTS, AUDITS))
        assert json.dumps(export(rs, cs, au), sort_keys=True) == a


def test_vital_values_codes_and_units():
    b = export()
    hr, spo2, temp, bp = (observation(b, n) for n in (1, 2, 3, 4))
    assert hr["valueQuantity"] == {"value": 78, "unit": "beats/minute",
                                   "system": fc.UCUM, "code": "/min"}
    assert [c["code"] for c in hr["code"]["coding"]] == ["8867-4", "149514"]  # MDC_PULS_RATE
    assert [c["code"] for c in observation(b, 6)["code"]["coding"]] == ["8867-4", "147842"]
    assert [c["code"] for c in spo2["code"]["coding"]] == ["59408-5", "2708-6", "150456"]
    assert spo2["valueQuantity"]["code"] == "%"
    assert temp["valueQuantity"]["value"] == 37.12 and temp["valueQuantity"]["code"] == "Cel"
    assert [(c["code"]["coding"][0]["code"], c["valueQuantity"]["value"],
             c["valueQuantity"]["code"]) for c in bp["component"]] == [
        ("8480-6", 118, "mm[Hg]"), ("8462-4", 76, "mm[Hg]")]
    assert "valueQuantity" not in bp
    assert hr["subject"] == {"identifier": {"system": "urn:iomt:stream", "value": STREAM.hex()},
                             "type": "Patient"}
    assert hr["identifier"] == [{"system": "urn:iomt:tx", "value": READINGS[0].tx_id.hex()}]
    assert hr["effectiveDateTime"] == "2025-10-09T08:53:20.001000Z"
    assert {c["coding"][0]["code"] for o in (hr, spo2, temp, bp) for c in o["category"]} == {
        "vital-signs"}


@pytest.mark.parametrize(("hundredths", "celsius"), [(3712, 37.12), (3700, 37), (3599, 35.99)])
def test_temperature_from_hundredths(hundredths, celsius):
    r = reading(3, WRIST, pt.Plaintext(pt.BODY_TEMPERATURE, T, (hundredths,)))
    b = export(readings=[r])
    assert observation(b, 3)["valueQuantity"]["value"] == celsius
    validate(b)


def test_ecg_is_sampled_data_in_microvolts():
    ecg = observation(export(), 5)
    assert ecg["code"]["coding"] == [fc.MDC_ECG_ELEC_POTL.coding()]
    assert ecg["valueSampledData"] == {
        "origin": {"value": 0, "unit": "microvolt", "system": fc.UCUM, "code": "uV"},
        "period": 4, "factor": 2.5, "dimensions": 2, "data": "1 -2 3 -4 5 -32768"}


@pytest.mark.parametrize("values,samples", [((0, 1, 1000), b"\x00\x00"),
                                            ((250, 0, 1000), b"\x00\x00"),
                                            ((250, 2, 1000), b"\x00\x00"),
                                            ((250, 1, 1000), b"\x00\x00\x00")])
def test_an_ecg_that_fhir_cannot_carry_is_refused(values, samples):
    r = reading(5, PATCH, pt.Plaintext(pt.ECG, T, values, samples))
    with pytest.raises(FhirError, match="ECG"):
        export(readings=[r])


def test_devices_provenance_and_signature():
    b = export()
    devices = {d["identifier"][0]["value"]: d for d in resources(b, "Device")}
    assert devices[WRIST.hex()]["type"] == {"text": "Wearable vital signs monitor"}
    assert devices[PATCH.hex()]["type"] == {"text": "ECG patch"}
    first = resources(b, "Provenance")[0]
    r = READINGS[0]
    assert first["target"] == [{"reference": full_url("observation", r.tx_id)}]
    assert first["agent"][0]["who"] == {"reference": full_url("device", WRIST)}
    sig = first["signature"][0]
    assert sig["type"][0]["code"] == "1.2.840.10065.1.12.1.1"
    assert sig["sigFormat"] == "application/iomt-ed25519"
    assert base64.b64decode(sig["data"]) == r.signature
    assert first["recorded"] == sig["when"] == "2025-10-09T08:53:21.007000Z"  # ts_ms
    body, block = first["extension"]
    assert base64.b64decode(body["valueBase64Binary"]) == r.body
    assert block["extension"] == [{"url": "height", "valueUnsignedInt": 11},
                                  {"url": "hash", "valueString": r.block_hash.hex()}]


def test_consents_active_and_revoked():
    revoked, active = resources(export(), "Consent")  # in grant order
    assert (active["status"], revoked["status"]) == ("active", "inactive")
    assert active["provision"]["period"]["end"] == "2025-10-10T08:53:20Z"
    assert active["provision"]["actor"][0]["reference"] == {
        "identifier": {"system": "urn:iomt:key", "value": CLINICIAN.hex()}}
    assert active["patient"]["identifier"]["value"] == STREAM.hex()
    assert active["category"][0]["coding"][0]["code"] == "59284-0"
    assert active["scope"]["coding"][0]["code"] == "patient-privacy"
    assert "policyRule" in active  # R4 invariant ppc-1: a policy or a rule
    assert [c["extension"][0]["valueCode"] for c in (revoked, active)] == ["history", "forward"]


def test_audit_events_served_and_refused():
    served, refused = resources(export(), "AuditEvent")
    assert (served["outcome"], refused["outcome"]) == ("0", "4")
    assert served["type"]["code"] == "rest" and served["subtype"][0]["code"] == "read"
    assert served["action"] == "R"
    assert served["agent"][0]["who"]["identifier"]["value"] == CLINICIAN.hex()
    assert served["agent"][0]["requestor"] is True
    assert served["agent"][0]["policy"] == ["urn:iomt:tx:" + "e1" * 32]
    assert "policy" not in refused["agent"][0]
    assert served["source"]["observer"]["identifier"]["value"] == NODE.hex()
    assert [e["what"]["identifier"]["value"] for e in served["entity"][1:]] == [
        r.tx_id.hex() for r in READINGS]
    assert refused["entity"] == [served["entity"][0]]  # only the stream


# Each of our checks fails when what it checks is broken (R4B alone accepts every one).
def _break_unit(b: dict) -> None:
    observation(b, 1)["valueQuantity"]["code"] = "/s"


def _break_loinc(b: dict) -> None:
    observation(b, 3)["code"]["coding"][0]["code"] = "8331-1"  # oral temperature


def _break_extra_loinc(b: dict) -> None:
    observation(b, 1)["code"]["coding"].append({"system": fc.LOINC, "code": "8889-8"})


def _break_mdc(b: dict) -> None:
    observation(b, 2)["code"]["coding"][2]["code"] = "150364"


def _break_component_unit(b: dict) -> None:
    observation(b, 4)["component"][1]["valueQuantity"]["code"] = "kPa"


def _break_component_code(b: dict) -> None:
    observation(b, 4)["component"][0]["code"]["coding"][0]["code"] = "8462-4"


def _break_category(b: dict) -> None:
    observation(b, 1)["category"][0]["coding"][0]["code"] = "laboratory"


def _break_ecg_origin(b: dict) -> None:
    observation(b, 5)["valueSampledData"]["origin"]["code"] = "mV"


def _break_reference(b: dict) -> None:
    resources(b, "Provenance")[0]["target"][0]["reference"] = "urn:uuid:" + "0" * 32


def _break_duplicate(b: dict) -> None:
    b["entry"].append(copy.deepcopy(b["entry"][0]))


@pytest.mark.parametrize(("breaks", "reason"), [
    (_break_unit, "heart rate unit is http://unitsofmeasure.org|/s"),
    (_break_loinc, "code {'system': 'http://loinc.org', 'code': '8331-1'"),
    (_break_extra_loinc, "heart rate: LOINC codes ['8867-4', '8889-8']"),
    (_break_mdc, "SpO2: IEEE 11073 codes ['150364']"),
    (_break_component_unit, "blood pressure component 8462-4 unit is"),
    (_break_component_code, "blood pressure: component codes"),
    (_break_category, "heart rate: no category vital-signs"),
    (_break_ecg_origin, "ECG: origin is not in"),
    (_break_reference, "resolves to no entry"),
    (_break_duplicate, "appears 2 times"),
])
def test_each_check_fails_when_broken(breaks, reason):
    b = export()
    breaks(b)
    Bundle.model_validate(b)  # what R4B's models alone do not catch
    found = problems(b)
    assert len(found) == 1 and reason in found[0], found


def test_every_problem_is_listed_r4b_ones_too():
    b = copy.deepcopy(export())
    observation(b, 2)["effectiveDateTime"] = "yesterday"
    del resources(b, "Consent")[0]["status"]  # required
    _break_unit(b)
    _break_reference(b)
    found = problems(b)
    assert [p for p in found if p.startswith("R4B:")] == [
        "R4B: entry.4.resource.effectiveDateTime: Value error, DateTime value string does not "
        "match spec regex.",
        "R4B: entry.14.resource.status: Value for the field 'status' is required."]
    assert any("unit is" in p for p in found) and any("no entry" in p for p in found)


def _paths(node: object, path: tuple = ()) -> list[tuple]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
        node, list) else ()
    return [p for key, value in items for p in [(*path, key), *_paths(value, (*path, key))]]


@pytest.mark.parametrize("replacement", [None, 7, "x", {}])
def test_any_damaged_element_gives_problems_never_a_crash(replacement):
    original = export(readings=READINGS[2:5])
    for path in _paths(original):
        b = copy.deepcopy(original)
        holder = b
        for key in path[:-1]:
            holder = holder[key]
        if replacement is None:
            del holder[path[-1]]
        else:
            holder[path[-1]] = replacement
        try:
            validate(b)
        except FhirError as exc:
            assert exc.problems


def test_an_entry_the_export_never_makes_is_named():
    b = export()
    b["entry"].append({"fullUrl": "urn:uuid:" + "1" * 32, "resource": {"resourceType": "Patient"}})
    assert problems(b) == (
        "entry[18] is a 'Patient', not one of the exported ['AuditEvent', 'Consent', 'Device', "
        "'Observation', 'Provenance']",
        "R4B: not parsed: an entry is of no exported resource type")


# IEEE 11073-10101 term codes of the SCADA partition (2), as the Rosetta Terminology Mapping
# lists them: a code is 2 * 65536 + the term code, and its display is the term's name.
MDC_TERM_CODES = {"MDC_PULS_RATE": 18442, "MDC_ECG_HEART_RATE": 16770,
                  "MDC_PULS_OXIM_SAT_O2": 19384, "MDC_TEMP_BODY": 19292,
                  "MDC_PRESS_BLD_NONINV": 18948, "MDC_PRESS_BLD_NONINV_SYS": 18949,
                  "MDC_PRESS_BLD_NONINV_DIA": 18950, "MDC_ECG_ELEC_POTL": 256}


def test_each_mdc_code_is_the_term_its_display_names():
    codes = {name: c for name, c in vars(fc).items()
             if name.startswith("MDC_") and isinstance(c, fc.Code)}
    assert set(codes) == set(MDC_TERM_CODES)
    for name, c in codes.items():
        assert (c.system, c.code, c.display) == (
            fc.MDC, str(2 * 65536 + MDC_TERM_CODES[name]), name)
