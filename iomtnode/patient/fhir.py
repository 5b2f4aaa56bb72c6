"""What a reader decrypted, exported as a FHIR R4 Bundle of type ``collection``
(docs/privacy.md, section 6): an Observation and a Provenance per reading, a Device per device
key, a Consent per grant, an AuditEvent per audit record.

Pure: the same input gives the same Bundle (every ``fullUrl`` is a name-based UUID of a ledger
id, every list is sorted), so two exports of the same records are byte-identical when dumped
with sorted keys. :func:`validate` parses the Bundle with ``fhir.resources.R4B`` (the package's
default is R5) and adds the checks that parse does not make: codes, units, references.
"""

from __future__ import annotations

import base64
import struct
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from iomtnode.patient import fhircodes as fc
from iomtnode.patient import plaintext as pt
from iomtnode.patient.plaintext import Plaintext

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:iomt:fhir")  # of every fullUrl
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ECG_SAMPLE_BYTES = 2  # int16 little-endian


class FhirError(ValueError):
    """A Bundle that is not valid FHIR R4B or breaks one of our checks; ``problems`` lists
    every one found, each naming the entry and the element."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class ReadingEntry:
    """One reading as the reader fetched and decrypted it."""

    tx_id: bytes
    device: bytes
    seq: int
    ts_ms: int
    epoch: int
    height: int
    block_hash: bytes
    body: bytes  # the signed body, as the signature covers it
    signature: bytes  # the device's ed25519 signature over the body
    plain: Plaintext


@dataclass(frozen=True)
class ConsentEntry:
    """One grant of the stream, as the ledger holds it."""

    stream: bytes
    grantee: bytes
    granted_ms: int
    expires_ms: int
    active: bool  # False: revoked or expired
    tx_id: bytes
    mode: int  # 0 forward, 1 history


@dataclass(frozen=True)
class AuditEntry:
    """One audit record of a node's log about the stream."""

    node: bytes
    index: int
    time_ms: int
    caller: bytes
    stream: bytes
    grant_tx: bytes  # empty: the patient's own call
    method: str
    code: int  # 0 served, else the refusal's code
    tx_ids: tuple[bytes, ...]


def full_url(kind: str, *keys: bytes | int) -> str:
    """The entry's ``urn:uuid:``, a name-based UUID of what it exports."""
    name = "/".join([kind, *(k.hex() if isinstance(k, bytes) else str(k) for k in keys)])
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, name)}"


def instant(ms: int) -> str:
    """``ms`` since the Unix epoch as a FHIR instant in UTC, written as ``fhir.resources``
    writes it back (no fraction on a whole second, else microseconds), so a round trip through
    the models gives the same JSON."""
    try:
        moment = _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise FhirError([f"time {ms} ms is out of FHIR's range"]) from None
    return moment.isoformat().replace("+00:00", "Z")


def _ident(system: str, key: bytes) -> dict:
    return {"system": system, "value": key.hex()}


def _by_ident(system: str, key: bytes, kind: str | None = None) -> dict:
    """A logical reference: the ledger knows keys, not people."""
    ref = {"identifier": _ident(system, key)}
    return ref | {"type": kind} if kind else ref


def _concept(*codes: fc.Code, text: str | None = None) -> dict:
    concept: dict = {"coding": [c.coding() for c in codes]}
    return concept | {"text": text} if text else concept


def _entry(url: str, resource: dict) -> dict:
    return {"fullUrl": url, "resource": {"id": url.removeprefix("urn:uuid:")} | resource}


def bundle(stream: bytes, readings: Iterable[ReadingEntry], consents: Iterable[ConsentEntry],
           audits: Iterable[AuditEntry], *, now_ms: int) -> dict:
    """The Bundle (JSON as a dict) of ``stream``'s decrypted readings, grants and audit records.
    Raises :class:`FhirError` for a reading FHIR cannot carry (an ECG whose samples do not
    divide into its leads, a sample rate of 0, a time out of range)."""
    readings = sorted(readings, key=lambda r: (r.plain.measured_ms, r.tx_id))
    device_class: dict[bytes, int] = {}
    for r in readings:  # the device's earliest reading says its class
        device_class.setdefault(r.device, r.plain.device_class)
    entries = [_device(key, device_class[key]) for key in sorted(device_class)]
    subject = _by_ident(fc.STREAM_SYSTEM, stream, "Patient")
    for r in readings:
        entries += [_observation(r, subject), _provenance(r)]
    entries += [_consent(c) for c in sorted(consents, key=lambda c: (c.granted_ms, c.tx_id,
                                                                     c.grantee))]
    entries += [_audit_event(a) for a in sorted(audits, key=lambda a: (a.node, a.index))]
    return {"resourceType": "Bundle", "id": full_url("bundle", stream, now_ms)[9:],
            "identifier": _ident(fc.STREAM_SYSTEM, stream), "type": "collection",
            "timestamp": instant(now_ms), "entry": entries}


def _device(key: bytes, device_class: int) -> dict:
    return _entry(full_url("device", key), {
        "resourceType": "Device", "identifier": [_ident(fc.DEVICE_SYSTEM, key)],
        "type": {"text": fc.DEVICE_TYPES[device_class]}})


def _observation(r: ReadingEntry, subject: dict) -> dict:
    p = r.plain
    obs: dict = {"resourceType": "Observation", "identifier": [_ident(fc.TX_SYSTEM, r.tx_id)],
                 "status": "final", "subject": subject,
                 "effectiveDateTime": instant(p.measured_ms),
                 "device": {"reference": full_url("device", r.device)}}
    match p.kind:
        case pt.HEART_RATE:
            obs |= {"category": [_concept(fc.VITAL_SIGNS)],
                    "code": _concept(fc.HEART_RATE, fc.heart_rate_mdc(p.device_class)),
                    "valueQuantity": fc.PER_MIN.quantity(p.values[0])}
        case pt.SPO2:
            obs |= {"category": [_concept(fc.VITAL_SIGNS)],
                    "code": _concept(fc.SPO2, fc.SPO2_ARTERIAL, fc.MDC_PULS_OXIM_SAT_O2),
                    "valueQuantity": fc.PERCENT.quantity(p.values[0])}
        case pt.BODY_TEMPERATURE:  # hundredths of a degree: 3712 is 37.12 Cel
            obs |= {"category": [_concept(fc.VITAL_SIGNS)],
                    "code": _concept(fc.BODY_TEMPERATURE, fc.MDC_TEMP_BODY),
                    "valueQuantity": fc.CELSIUS.quantity(_hundredths(p.values[0]))}
        case pt.BLOOD_PRESSURE:
            systolic, diastolic = p.values
            obs |= {"category": [_concept(fc.VITAL_SIGNS)],
                    "code": _concept(fc.BP_PANEL, fc.MDC_PRESS_BLD_NONINV),
                    "component": [
                        {"code": _concept(fc.SYSTOLIC, fc.MDC_PRESS_BLD_NONINV_SYS),
                         "valueQuantity": fc.MM_HG.quantity(systolic)},
                        {"code": _concept(fc.DIASTOLIC, fc.MDC_PRESS_BLD_NONINV_DIA),
                         "valueQuantity": fc.MM_HG.quantity(diastolic)}]}
        case pt.ECG:
            obs |= {"category": [_concept(fc.PROCEDURE)],
                    "code": _concept(fc.MDC_ECG_ELEC_POTL, text="ECG"),
                    "valueSampledData": _sampled_data(r)}
    return _entry(full_url("observation", r.tx_id), obs)


def _hundredths(value: int) -> int | float:
    return value // 100 if value % 100 == 0 else value / 100  # int / 100 rounds correctly


def _sampled_data(r: ReadingEntry) -> dict:
    """Samples as FHIR's SampledData: value = origin + factor * datum, in microvolts; one
    dimension per lead, interleaved as the device wrote them; period in ms between samples."""
    rate_hz, leads, nv_per_lsb = r.plain.values
    samples = r.plain.samples
    count = len(samples) // ECG_SAMPLE_BYTES
    if rate_hz == 0 or leads == 0 or len(samples) % ECG_SAMPLE_BYTES or count % leads:
        raise FhirError([f"reading {r.tx_id.hex()}: ECG of {len(samples)} bytes at {rate_hz} Hz"
                         f" does not divide into {leads} leads of int16 samples"])
    values = struct.unpack(f"<{count}h", samples)
    return {"origin": fc.MICROVOLT.quantity(0), "period": _ratio(1000, rate_hz),
            "factor": _ratio(nv_per_lsb, 1000), "dimensions": leads,
            "data": " ".join(map(str, values))}


def _ratio(num: int, den: int) -> int | float:
    return num // den if num % den == 0 else num / den


def _provenance(r: ReadingEntry) -> dict:
    device = {"reference": full_url("device", r.device)}
    when = instant(r.ts_ms)
    return _entry(full_url("provenance", r.tx_id), {
        "resourceType": "Provenance",
        "target": [{"reference": full_url("observation", r.tx_id)}],
        "recorded": when,
        "agent": [{"type": _concept(fc.Code(fc.PROVENANCE_AGENT_TYPE, "author", "Author")),
                   "who": device}],
        "entity": [{"role": "source", "what": _by_ident(fc.TX_SYSTEM, r.tx_id)}],
        "signature": [{"type": [{"system": fc.SIGNATURE_TYPE,
                                 "code": fc.AUTHORS_SIGNATURE[0],
                                 "display": fc.AUTHORS_SIGNATURE[1]}],
                       "when": when, "who": device, "sigFormat": fc.SIG_FORMAT,
                       "data": base64.b64encode(r.signature).decode()}],
        "extension": [
            {"url": fc.SIGNED_BODY_URL, "valueBase64Binary": base64.b64encode(r.body).decode()},
            {"url": fc.BLOCK_URL, "extension": [
                {"url": "height", "valueUnsignedInt": r.height},
                {"url": "hash", "valueString": r.block_hash.hex()}]}]})


def _consent(c: ConsentEntry) -> dict:
    if c.mode not in fc.GRANT_MODES:
        raise FhirError([f"grant {c.tx_id.hex()}: mode {c.mode} is not one of "
                         f"{sorted(fc.GRANT_MODES)}"])
    return _entry(full_url("consent", c.tx_id, c.grantee), {
        "resourceType": "Consent",
        "identifier": [_ident(fc.TX_SYSTEM, c.tx_id)],
        "status": "active" if c.active else "inactive",
        "scope": _concept(fc.Code(fc.CONSENT_SCOPE, "patient-privacy", "Privacy Consent")),
        "category": [_concept(fc.Code(fc.LOINC, "59284-0", "Patient Consent"))],
        "patient": _by_ident(fc.STREAM_SYSTEM, c.stream, "Patient"),
        "dateTime": instant(c.granted_ms),
        # ppc-1 wants a policy or a rule: opting in to disclosure to the named recipient
        "policyRule": _concept(fc.Code(fc.ACT_CODE, "OPTIN", "opt-in")),
        "provision": {
            "type": "permit",
            "period": {"start": instant(c.granted_ms), "end": instant(c.expires_ms)},
            "actor": [{"role": _concept(fc.Code(fc.PARTICIPATION_TYPE, "IRCP",
                                                "information recipient")),
                       "reference": _by_ident(fc.KEY_SYSTEM, c.grantee)}],
            "action": [_concept(fc.Code(fc.CONSENT_ACTION, "access", "Access"))]},
        "extension": [{"url": fc.GRANT_MODE_URL, "valueCode": fc.GRANT_MODES[c.mode]}]})


def _audit_event(a: AuditEntry) -> dict:
    agent: dict = {"who": _by_ident(fc.KEY_SYSTEM, a.caller), "requestor": True}
    if a.grant_tx:  # the grant that let the caller in
        agent["policy"] = [f"{fc.TX_SYSTEM}:{a.grant_tx.hex()}"]
    served = a.code == 0
    return _entry(full_url("audit", a.node, a.index), {
        "resourceType": "AuditEvent",
        "type": {"system": fc.AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": fc.RESTFUL_INTERACTION, "code": "read", "display": "read"},
                    {"system": fc.METHOD_SYSTEM, "code": a.method}],
        "action": "R",
        "recorded": instant(a.time_ms),
        "outcome": fc.SERVED_OUTCOME if served else fc.REFUSED_OUTCOME,
        "outcomeDesc": "served" if served else f"refused with code {a.code}",
        "agent": [agent],
        "source": {"observer": _by_ident(fc.NODE_SYSTEM, a.node)},
        "entity": [{"what": _by_ident(fc.STREAM_SYSTEM, a.stream, "Patient")}]
                  + [{"what": _by_ident(fc.TX_SYSTEM, t)} for t in a.tx_ids]})


EXPORTED = frozenset({"Device", "Observation", "Provenance", "Consent", "AuditEvent"})


def validate(bundle: dict) -> None:
    """Raises :class:`FhirError` listing every problem of ``bundle``: what the R4B models reject
    (types, cardinalities, required elements, of the Bundle and each resource in it), then our
    checks: each Observation's LOINC and IEEE 11073 codes are the table's for its kind, its
    units the kind's UCUM unit, its category the kind's; every reference resolves to an entry."""
    raw = bundle.get("entry")
    resources = {i: e["resource"] for i, e in enumerate(raw if isinstance(raw, list) else [])
                 if isinstance(e, dict) and isinstance(e.get("resource"), dict)}
    unknown = {i: r.get("resourceType") for i, r in resources.items()
               if not (isinstance(r.get("resourceType"), str) and r["resourceType"] in EXPORTED)}
    problems = [f"entry[{i}] is a {kind!r}, not one of the exported {sorted(EXPORTED)}"
                for i, kind in unknown.items()]
    problems += [  # fhir_core fails on a resourceType it does not know: name it instead
        "R4B: not parsed: an entry is of no exported resource type"] if unknown else (
        _r4b_problems(bundle))
    urls = [e.get("fullUrl") for e in raw if isinstance(e, dict)] if isinstance(
        raw, list) else []
    problems += [f"fullUrl {u} appears {urls.count(u)} times" for u in sorted(set(map(str, urls)))
                 if urls.count(u) > 1]
    for i, resource in resources.items():
        where = f"entry[{i}] {resource.get('resourceType')}"
        problems += [f"{where}: reference {ref} resolves to no entry"
                     for ref in _references(resource) if ref not in urls]
        if resource.get("resourceType") == "Observation":
            problems += [f"{where}: {p}" for p in fc.observation_problems(resource)]
    if problems:
        raise FhirError(problems)


def _r4b_problems(bundle: dict) -> list[str]:
    try:
        Bundle.model_validate(bundle)
    except ValidationError as exc:
        return [f"R4B: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    except (KeyError, TypeError) as exc:  # fhir_core's lookup of a malformed resourceType
        return [f"R4B: the models failed on a malformed resource: {exc!r}"]
    return []


def _references(node: object) -> Iterator[str]:
    """Every literal ``reference`` in a resource (the logical ones, by identifier, have none)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)
