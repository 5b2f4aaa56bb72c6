"""A patient's records answer only the stream's key or a live grantee, through the dispatcher
and its access check, and every call, served or refused, leaves an audit record.

Keys: S the stream (the patient), G a forward-mode grantee from epoch 2, H a history-mode
grantee, E a grantee whose grant expired, R a grantee revoked (no grant record), A an
authority, X a key related to nothing. Readings r1..r3 are of epochs 1, 2, 3.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from iomtnode.api.access import NO_CONSENT, Access
from iomtnode.api.auth import MAX_PROVEN_KEYS
from iomtnode.api.jsonrpc import Dispatcher, RpcError
from iomtnode.api.records import (
    AUDIT_UNAVAILABLE,
    MAX_RECORDS_PAGE,
    NO_STREAM,
    NOT_FOUND,
    ROLES,
    RecordsApi,
)
from iomtnode.audit.record import MAX_AUDIT_CALLERS, MAX_AUDIT_METHOD_BYTES, MAX_AUDIT_TX_IDS
from iomtnode.chain.records import StreamReading, StreamView, WrapEntry
from iomtnode.core.crypto import SigningKey
from iomtnode.core.errors import ErasedStreamError
from iomtnode.core.ledger import GrantRecord
from iomtnode.core.payload import commitment
from iomtnode.core.tx import FORWARD, HISTORY, stripped
from tests.core.sealkit import announce, sealed_reading

CHAIN = "iomt-test"
NOW_MS = 1_000_000
STREAM = SigningKey(b"\x11" * 32)
DEVICE = SigningKey(b"\x12" * 32)
S = STREAM.public
G, H, E, R, A, X = (bytes([i]) * 32 for i in range(0x21, 0x27))
UNKNOWN_STREAM = b"\x31" * 32
BLOB = b"\x41" * 16_448
BLOB_COMMIT = commitment(BLOB)
OLD_BLOB = b"\x42" * 16_448  # the blob of a reading of epoch 1, before G's grant
OLD_BLOB_COMMIT = commitment(OLD_BLOB)
BLOB_EPOCHS = {BLOB_COMMIT: 3, b"\x91" * 32: 3, OLD_BLOB_COMMIT: 1}
GRANT_G_TX, GRANT_H_TX, EPOCH2_TX, EPOCH3_TX = (bytes([i]) * 32 for i in range(0x51, 0x55))
OLD_GRANT_TX = b"\x50" * 32


READINGS = [StreamReading(sealed_reading(DEVICE, seq, 100 * seq, CHAIN, epoch=seq), seq, b"",
                          False) for seq in (1, 2, 3)]
ERASED = StreamReading(stripped(sealed_reading(DEVICE, 4, 400, CHAIN, epoch=3)), 4, b"\x61" * 32,
                       False)


class Ledger:
    """The chain's answers of one stream S (and the access check's questions)."""

    def __init__(self) -> None:
        self.readings = [*READINGS, ERASED]
        self.erased = False  # the stream's whole scope was erased
        self.grants = {
            G: GrantRecord(b"\x71" * 32, FORWARD, NOW_MS + 1, 2, 5, GRANT_G_TX),  # epoch 2
            H: GrantRecord(b"\x72" * 32, HISTORY, NOW_MS + 60_000, 3, 6, GRANT_H_TX),
            E: GrantRecord(b"\x73" * 32, HISTORY, NOW_MS, 1, 3, OLD_GRANT_TX),  # expires now
        }
        self.wraps = {  # by epoch, then tx id (as the store orders them)
            G: [WrapEntry(1, FORWARD, b"old", OLD_GRANT_TX),  # the earlier grant's, before epoch 2
                WrapEntry(2, FORWARD, b"g2", GRANT_G_TX), WrapEntry(2, FORWARD, b"w2", EPOCH2_TX),
                WrapEntry(3, FORWARD, b"w3", EPOCH3_TX)],
            H: [WrapEntry(3, HISTORY, b"h3", GRANT_H_TX)],
        }

    def authorities(self) -> tuple[bytes, ...]:
        return (A,)

    def device(self, key: bytes) -> None:
        return None

    def known_stream(self, key: bytes) -> bool:
        return key == S

    def stream_view(self, stream: bytes) -> StreamView | None:
        if stream != S:
            return None
        return StreamView(3, b"\x81" * 32, self.erased, self.grants, announce(STREAM, CHAIN, 3))

    def stream_grants(self, stream: bytes) -> dict[bytes, GrantRecord] | None:
        return None if stream != S else self.grants

    def stream_readings(self, stream: bytes, since_ms: int, until_ms: int, after: bytes,
                        limit: int) -> list[StreamReading]:
        assert stream == S

        def key(e: StreamReading) -> bytes:
            return e.tx.body.ts_ms.to_bytes(8, "big") + e.tx.id

        found = sorted((e for e in self.readings if since_ms <= e.tx.body.ts_ms < until_ms
                        and key(e) > after), key=key)
        return found[:limit]

    def stream_wraps(self, stream: bytes, grantee: bytes) -> list[WrapEntry]:
        return self.wraps.get(grantee, []) if stream == S else []

    def blob(self, commit: bytes) -> bytes | None:
        return {BLOB_COMMIT: BLOB, OLD_BLOB_COMMIT: OLD_BLOB}.get(commit)

    def blob_owner(self, commit: bytes) -> tuple[bytes, int] | None:
        return (S, BLOB_EPOCHS[commit]) if commit in BLOB_EPOCHS else None


@dataclass
class Trail:
    """The audit log: what was recorded; ``fail`` makes it refuse as a broken log does."""

    records: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False

    async def record(self, **call: Any) -> None:
        if self.fail:
            raise RpcError(AUDIT_UNAVAILABLE, "the audit log refuses appends")
        self.records.append(call)


class Conn:
    def __init__(self, *keys: bytes) -> None:
        self.proven_keys = frozenset(keys)
        self.reads = 0

    async def admit_audited_read(self) -> None:
        self.reads += 1


def setup() -> tuple[Dispatcher, Ledger, Trail]:
    ledger, trail = Ledger(), Trail()
    api = RecordsApi(ledger, trail, lambda: NOW_MS)
    access = Access(ROLES, api.methods(), {}, ledger)
    return Dispatcher(api.methods(), guard=access.check), ledger, trail


async def call(d: Dispatcher, conn: Conn | None, method: str, **params: Any) -> dict[str, Any]:
    request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    reply = await d.handle_text(json.dumps(request), conn=conn)
    assert reply is not None
    return json.loads(reply)


SEQ_OF_LEAF = {e.tx.leaf_bytes.hex(): e.tx.body.seq for e in (*READINGS, ERASED)}


def ids(result: dict[str, Any]) -> list[int]:
    """The sequence numbers of the readings in an answer."""
    return [SEQ_OF_LEAF[r["tx"]] for r in result["readings"]]


async def test_the_stream_key_is_served_every_reading_with_its_sidecar():
    d, _, trail = setup()
    result = (await call(d, Conn(S), "get_patient_records", stream=S.hex()))["result"]
    assert ids(result) == [1, 2, 3, 4]
    first = result["readings"][0]
    assert first == {"tx": READINGS[0].tx.leaf_bytes.hex(),
                     "sidecar": READINGS[0].tx.sidecar.hex(), "height": 1, "erased_by": None,
                     "size_class": 0, "blob": False}
    erased = result["readings"][3]
    assert (erased["sidecar"], erased["erased_by"]) == (None, "61" * 32)
    assert result["wraps"] == [] and result["cursor"] is None
    assert trail.records == [{
        "callers": frozenset({S}), "stream": S, "grant_tx": b"", "method": "get_patient_records",
        "code": 0, "tx_ids": [e.tx.id for e in (*READINGS, ERASED)]}]


async def test_a_forward_grantee_is_served_only_its_epochs_and_its_wraps():
    d, _, trail = setup()
    result = (await call(d, Conn(G, X), "get_patient_records", stream=S.hex()))["result"]
    assert ids(result) == [2, 3, 4]
    assert [(w["epoch"], w["wrap"]) for w in result["wraps"]] == [
        (2, b"g2".hex()), (2, b"w2".hex()), (3, b"w3".hex())]
    record = trail.records[0]
    assert (record["callers"], record["grant_tx"], record["code"]) == (
        frozenset({G, X}), GRANT_G_TX, 0)
    assert record["tx_ids"] == [READINGS[1].tx.id, READINGS[2].tx.id, ERASED.tx.id]


async def test_a_history_grantee_is_served_every_epoch():
    d, _, trail = setup()
    result = (await call(d, Conn(H), "get_patient_records", stream=S.hex()))["result"]
    assert ids(result) == [1, 2, 3, 4]
    assert trail.records[0]["grant_tx"] == GRANT_H_TX


# (the connection's proven keys, why it is refused)
REFUSED = [
    ((E,), "its grant expired (expires_ms is not after the node's time)"),
    ((R,), "its grant was revoked: the ledger holds no grant record"),
    ((X,), "a key the stream never granted"),
    ((), "an anonymous client"),
    ((A,), "an authority: only the patient grants"),
]


@pytest.mark.parametrize("keys, why", REFUSED)
async def test_everyone_else_is_refused_and_the_refusal_is_audited(keys, why):
    d, _, trail = setup()
    reply = await call(d, Conn(*keys), "get_patient_records", stream=S.hex())
    assert reply["error"] == {"code": NO_CONSENT, "message": "no consent for this stream"}, why
    assert trail.records == [{
        "callers": frozenset(keys), "stream": S, "grant_tx": b"",
        "method": "get_patient_records", "code": NO_CONSENT, "tx_ids": ()}]


async def test_a_client_without_a_connection_is_refused_too():
    d, _, trail = setup()
    reply = await call(d, None, "get_patient_records", stream=S.hex())
    assert reply["error"]["code"] == NO_CONSENT
    assert trail.records[0]["callers"] == frozenset()


async def test_an_unknown_stream_is_answered_as_a_refusal_is():
    d, _, trail = setup()
    refused = await call(d, Conn(X), "get_patient_records", stream=S.hex())
    unknown = await call(d, Conn(X), "get_patient_records", stream=UNKNOWN_STREAM.hex())
    own = await call(d, Conn(UNKNOWN_STREAM), "get_patient_records",
                     stream=UNKNOWN_STREAM.hex())
    assert refused == unknown == own
    assert [r["stream"] for r in trail.records] == [S, UNKNOWN_STREAM, UNKNOWN_STREAM]


async def test_the_cursor_walks_the_readings_a_page_at_a_time():
    d, _, trail = setup()
    first = (await call(d, Conn(S), "get_patient_records", stream=S.hex(), limit=3))["result"]
    assert ids(first) == [1, 2, 3] and first["cursor"] is not None
    rest = (await call(d, Conn(S), "get_patient_records", stream=S.hex(), limit=3,
                       cursor=first["cursor"]))["result"]
    assert ids(rest) == [4] and rest["cursor"] is None
    window = (await call(d, Conn(S), "get_patient_records", stream=S.hex(), since_ms=200,
                         until_ms=400))["result"]
    assert ids(window) == [2, 3]
    assert len(trail.records) == 3


@pytest.mark.parametrize("params", [
    {"stream": "zz"}, {"stream": S.hex(), "limit": 0}, {"stream": S.hex(), "limit": 501},
    {"stream": S.hex(), "cursor": "00"}, {"stream": S.hex(), "since_ms": -1},
])
async def test_malformed_params_name_no_stream_to_read_and_are_not_audited(params):
    d, _, trail = setup()
    reply = await call(d, Conn(S), "get_patient_records", **params)
    assert reply["error"]["code"] == -32602
    assert trail.records == []


async def test_a_log_that_cannot_record_serves_nothing():
    d, _, trail = setup()
    trail.fail = True
    reply = await call(d, Conn(S), "get_patient_records", stream=S.hex())
    assert reply["error"]["code"] == AUDIT_UNAVAILABLE and "result" not in reply
    reply = await call(d, Conn(S), "get_blob", commitment=BLOB_COMMIT.hex())
    assert reply["error"]["code"] == AUDIT_UNAVAILABLE and "result" not in reply


async def test_a_blob_answers_the_consent_of_its_readings_stream():
    d, _, trail = setup()
    served = await call(d, Conn(H), "get_blob", commitment=BLOB_COMMIT.hex())
    assert served["result"] == {"blob": BLOB.hex()}
    refused = await call(d, Conn(E), "get_blob", commitment=BLOB_COMMIT.hex())
    nowhere = await call(d, Conn(S), "get_blob", commitment=(b"\x99" * 32).hex())
    assert refused["error"] == nowhere["error"] == {"code": NO_CONSENT,
                                                    "message": "no consent for this stream"}
    missing = await call(d, Conn(S), "get_blob", commitment=(b"\x91" * 32).hex())
    assert missing["error"]["code"] == NOT_FOUND
    assert [(r["stream"], r["grant_tx"], r["code"], r["tx_ids"]) for r in trail.records] == [
        (S, GRANT_H_TX, 0, [BLOB_COMMIT]),
        (S, b"", NO_CONSENT, [BLOB_COMMIT]),
        (NO_STREAM, b"", NO_CONSENT, [b"\x99" * 32]),
        (S, b"", NOT_FOUND, [b"\x91" * 32]),
    ]


async def test_a_forward_grantee_is_refused_the_blob_of_an_epoch_before_its_grant():
    d, _, trail = setup()
    served = await call(d, Conn(G), "get_blob", commitment=BLOB_COMMIT.hex())
    assert served["result"] == {"blob": BLOB.hex()}
    refused = await call(d, Conn(G), "get_blob", commitment=OLD_BLOB_COMMIT.hex())
    assert refused["error"] == {"code": NO_CONSENT, "message": "no consent for this stream"}
    assert (await call(d, Conn(H), "get_blob", commitment=OLD_BLOB_COMMIT.hex()))["result"] == {
        "blob": OLD_BLOB.hex()}  # a history grantee reads every epoch
    assert [(r["grant_tx"], r["code"], r["tx_ids"]) for r in trail.records] == [
        (GRANT_G_TX, 0, [BLOB_COMMIT]), (b"", NO_CONSENT, [OLD_BLOB_COMMIT]),
        (GRANT_H_TX, 0, [OLD_BLOB_COMMIT])]


async def test_a_streams_ledger_metadata_is_public():
    d, _, trail = setup()
    stream = (await call(d, None, "get_stream", stream=S.hex()))["result"]
    assert (stream["epoch"], stream["erased"]) == (3, False)
    assert [g["grantee"] for g in stream["grants"]] == sorted(k.hex() for k in (G, H, E))
    assert stream["announcement"] == announce(STREAM, CHAIN, 3).raw.hex()
    epoch = (await call(d, None, "get_stream_epoch", stream=S.hex()))["result"]
    announcement = announce(STREAM, CHAIN, 3)
    assert (epoch["epoch"], epoch["announcement"]) == (3, announcement.leaf_bytes.hex())
    unknown = await call(d, None, "get_stream_epoch", stream=UNKNOWN_STREAM.hex())
    assert unknown["error"]["code"] == NOT_FOUND
    assert trail.records == []  # ledger metadata is not a patient's record


async def test_an_erased_streams_epoch_is_refused_as_erased_not_as_missing():
    # a device of an erased stream is told why it cannot seal, not that the stream has no epoch
    d, ledger, _ = setup()
    ledger.erased = True
    refused = (await call(d, None, "get_stream_epoch", stream=S.hex()))["error"]
    assert refused["code"] == ErasedStreamError.code
    assert "erased" in refused["message"]
    # what the device's owner can do: the device key is the erased stream's for good
    # (admitting it again is refused, 1007), and the scope's stream is erased for good
    assert "new device key" in refused["message"]
    assert "another scope" in refused["message"]


def test_every_call_fits_an_audit_record():
    # a record that did not fit would stop the node's audit writer: the API's limits are
    # within the record's
    assert MAX_PROVEN_KEYS <= MAX_AUDIT_CALLERS
    assert MAX_RECORDS_PAGE <= MAX_AUDIT_TX_IDS
    assert max(len(name) for name in ROLES) <= MAX_AUDIT_METHOD_BYTES
