"""Audit records: canonical round trips, precise refusals of malformed bytes, tags and leaves."""

from __future__ import annotations

import contextlib
import hashlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from iomtnode.audit.record import (
    AUDIT_ANCHOR_RECORDS,
    AUDIT_ANCHOR_S,
    MAX_AUDIT_CALLERS,
    MAX_AUDIT_TX_IDS,
    AuditCall,
    AuditRecord,
    AuditRecordError,
    decode_record,
    leaf,
    range_root,
    record_hash,
    split_leaf,
    tag,
)
from iomtnode.core import codec, merkle
from iomtnode.core.crypto import blake2b256

key = st.binary(min_size=32, max_size=32)
records = st.builds(
    AuditRecord,
    index=st.integers(0, 2**64 - 1),
    time_ms=st.integers(0, 2**64 - 1),
    node=key,
    callers=st.lists(key, max_size=MAX_AUDIT_CALLERS).map(tuple),
    stream=key,
    grant_tx=st.one_of(st.just(b""), key),
    method=st.text(min_size=1, max_size=20),
    code=st.integers(-(2**31), 2**31 - 1),
    tx_ids=st.lists(key, max_size=20).map(tuple),
    salt=st.binary(min_size=16, max_size=16),
)

NODE, STREAM, OTHER = b"N" * 32, b"S" * 32, b"O" * 32


def sample(**changes) -> AuditRecord:
    fields = dict(index=7, time_ms=1_700_000_000_000, node=NODE, callers=(b"C" * 32,),
                  stream=STREAM, grant_tx=b"G" * 32, method="get_patient_records", code=0,
                  tx_ids=(b"T" * 32, b"U" * 32), salt=b"s" * 16)
    fields.update(changes)
    return AuditRecord(**fields)


def test_constants():
    assert AUDIT_ANCHOR_S == 60 and AUDIT_ANCHOR_RECORDS == 1_000


@given(records)
def test_round_trip(rec):
    data = rec.encode()
    assert decode_record(data) == rec
    assert codec.decode(data) == [rec.index, rec.time_ms, rec.node, list(rec.callers),
                                  rec.stream, rec.grant_tx, rec.method, rec.code,
                                  list(rec.tx_ids), rec.salt]


@given(records, st.data())
def test_malformed_bytes_are_refused_with_a_reason(rec, data):
    raw = rec.encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(AuditRecordError, match="audit record"):
        decode_record(raw[:cut])
    with pytest.raises(AuditRecordError, match=r"trailing|not canonical|malformed"):
        decode_record(raw + b"\x00")


@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_another_error(data):
    with contextlib.suppress(AuditRecordError):  # any other exception fails the test
        decode_record(data)


@pytest.mark.parametrize(("value", "reason"), [
    ({"a": 1}, "map"),
    ([1, 2, 3], "has 10 fields, got 3"),
    (b"x", "must be an array"),
])
def test_wrong_shapes(value, reason):
    raw = msgpack.packb(value)
    with pytest.raises(AuditRecordError, match=reason):
        decode_record(raw)


@pytest.mark.parametrize(("position", "value", "reason"), [
    (0, -1, "index must be an integer"),
    (1, "now", "time_ms must be an integer"),
    (2, b"n" * 31, "node must be 32 bytes, got 31 bytes"),
    (3, [b"c" * 33], r"callers\[0\] must be 32 bytes"),
    (3, [b"c" * 32] * (MAX_AUDIT_CALLERS + 1), "more than the limit of 8"),
    (4, None, "stream must be 32 bytes, got NoneType"),
    (5, b"g" * 5, "grant_tx must be empty or 32 bytes"),
    (6, "", "method must be a non-empty string"),
    (6, "m" * 65, "method is longer than 64 bytes"),
    (7, 2**31, "code must be a 32-bit integer"),
    (7, True, "code must be a 32-bit integer"),
    (8, [b"t" * 32] * (MAX_AUDIT_TX_IDS + 1), "tx_ids holds 1001 items"),
    (9, b"s" * 15, "salt must be 16 bytes"),
])
def test_each_field_is_checked(position, value, reason):
    fields = codec.decode(sample().encode())
    fields[position] = value
    with pytest.raises(AuditRecordError, match=reason):
        decode_record(codec.encode(fields))


def test_tag_is_keyed_by_the_stream():
    expected = hashlib.blake2b(b"iomt/audit-tag/v1\x00" + NODE + (7).to_bytes(8, "big"),
                               digest_size=32, key=STREAM).digest()
    assert tag(STREAM, NODE, 7) == expected
    assert tag(OTHER, NODE, 7) != expected  # another stream's key: another tag
    assert tag(STREAM, OTHER, 7) != expected and tag(STREAM, NODE, 8) != expected


def test_leaf_and_root():
    rec = sample()
    assert record_hash(rec) == blake2b256(rec.encode())
    assert leaf(rec) == codec.encode([tag(STREAM, NODE, 7), record_hash(rec)])
    assert split_leaf(leaf(rec)) == (tag(STREAM, NODE, 7), record_hash(rec))
    assert split_leaf(b"\x92\x01\x02") is None
    leaves = [leaf(sample(index=i)) for i in range(5)]
    assert range_root(leaves) == merkle.root(leaves)


def test_the_salt_hides_the_fields():
    # two records alike but for their salt have unrelated hashes and leaves
    assert leaf(sample(salt=b"a" * 16)) != leaf(sample(salt=b"b" * 16))


def test_a_record_of_a_call():
    call = AuditCall(5, NODE, (), STREAM, b"", "get_blob", -32025, ())
    rec = AuditRecord.of(3, call, b"z" * 16)
    assert (rec.index, rec.code, rec.callers, rec.grant_tx) == (3, -32025, (), b"")
    with pytest.raises(AuditRecordError, match="salt"):
        AuditRecord.of(3, call, b"z")
