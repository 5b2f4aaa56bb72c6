"""One audit record: a call of a patient-records method, served or refused, and the leaf that
stands for it in the node's Merkle tree (docs/privacy.md, section 6).

A record is the canonical msgpack array ``[index, time_ms, node, callers, stream, grant_tx,
method, code, tx_ids, salt]``. Its leaf is ``encode([tag, H(record)])`` with ``tag`` the
BLAKE2b-256 of ``"iomt/audit-tag/v1\\0" | node | u64 index`` keyed by the stream id: whoever
does not know the stream learns nothing from a leaf, and whoever does finds their own
records among all the leaves. The 16-byte salt makes ``H(record)`` unguessable from the
record's fields (who called, when, with which code), which are otherwise few.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from iomtnode.core import codec, merkle
from iomtnode.core.crypto import HASH_BYTES, KEY_BYTES, blake2b256

AUDIT_ANCHOR_S = 60  # seconds: a node anchors its log at least this often ...
AUDIT_ANCHOR_RECORDS = 1_000  # ... or as soon as this many records wait to be anchored

SALT_BYTES = 16
MAX_AUDIT_CALLERS = 8  # keys one caller proved (at least the API's MAX_PROVEN_KEYS per connection)
MAX_AUDIT_TX_IDS = 1_000  # ids served by one call (the API's page of readings is at most this)
MAX_AUDIT_METHOD_BYTES = 64  # a method name, UTF-8
CODE_MIN, CODE_MAX = -(2**31), 2**31 - 1  # a code: 0 served, a rule or JSON-RPC error code
U64_MAX = 2**64 - 1
# the largest encoded record: 1,000 ids of 34 bytes, 8 callers, the rest under 200 bytes
MAX_RECORD_BYTES = 64 * 1024
FIELDS = 10

TAG_DOMAIN = b"iomt/audit-tag/v1\x00"
_U64 = struct.Struct(">Q")


class AuditRecordError(ValueError):
    """Bytes that are not an audit record, or a record field of the wrong type, size or range."""


def _u64(name: str, value: Any) -> int:
    if type(value) is not int or not 0 <= value <= U64_MAX:
        raise AuditRecordError(f"{name} must be an integer in [0, 2^64), got {value!r:.40}")
    return value


def _exact(name: str, value: Any, size: int) -> bytes:
    if type(value) is not bytes or len(value) != size:
        got = f"{len(value)} bytes" if type(value) is bytes else type(value).__name__
        raise AuditRecordError(f"{name} must be {size} bytes, got {got}")
    return value


def _keys(name: str, value: Any, limit: int) -> tuple[bytes, ...]:
    if type(value) not in (tuple, list):
        raise AuditRecordError(f"{name} must be an array, got {type(value).__name__}")
    if len(value) > limit:
        raise AuditRecordError(f"{name} holds {len(value)} items, more than the limit of {limit}")
    for i, item in enumerate(value):
        _exact(f"{name}[{i}]", item, KEY_BYTES)
    return tuple(value)


@dataclass(frozen=True, slots=True)
class AuditCall:
    """What the serving node knows of one call: everything of a record but its index and salt,
    which the log assigns (:meth:`iomtnode.audit.log.AuditLog.append`)."""

    time_ms: int  # the node's wall clock when it answered
    node: bytes  # the serving node's id (its key)
    callers: tuple[bytes, ...]  # the keys the caller proved on its connection (may be none)
    stream: bytes  # the stream asked for
    grant_tx: bytes  # the id of the grant the caller was served under; b"" for the stream's key
    method: str
    code: int  # 0 served, else the error code it was refused with
    tx_ids: tuple[bytes, ...]  # the ids of the readings served (none when refused)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record of the log; checks its fields when made (``AuditRecordError``)."""

    index: int
    time_ms: int
    node: bytes
    callers: tuple[bytes, ...]
    stream: bytes
    grant_tx: bytes
    method: str
    code: int
    tx_ids: tuple[bytes, ...]
    salt: bytes

    def __post_init__(self) -> None:
        _u64("index", self.index)
        _u64("time_ms", self.time_ms)
        _exact("node", self.node, KEY_BYTES)
        object.__setattr__(self, "callers", _keys("callers", self.callers, MAX_AUDIT_CALLERS))
        _exact("stream", self.stream, KEY_BYTES)
        if type(self.grant_tx) is not bytes or len(self.grant_tx) not in (0, HASH_BYTES):
            raise AuditRecordError(f"grant_tx must be empty or {HASH_BYTES} bytes")
        if type(self.method) is not str or not self.method:
            raise AuditRecordError("method must be a non-empty string")
        if len(self.method.encode("utf-8", "replace")) > MAX_AUDIT_METHOD_BYTES:
            raise AuditRecordError(f"method is longer than {MAX_AUDIT_METHOD_BYTES} bytes")
        if type(self.code) is not int or not CODE_MIN <= self.code <= CODE_MAX:
            raise AuditRecordError(f"code must be a 32-bit integer, got {self.code!r:.40}")
        object.__setattr__(self, "tx_ids", _keys("tx_ids", self.tx_ids, MAX_AUDIT_TX_IDS))
        _exact("salt", self.salt, SALT_BYTES)

    @classmethod
    def of(cls, index: int, call: AuditCall, salt: bytes) -> AuditRecord:
        return cls(index, call.time_ms, call.node, tuple(call.callers), call.stream,
                   call.grant_tx, call.method, call.code, tuple(call.tx_ids), salt)

    def encode(self) -> bytes:
        """The canonical bytes (what :func:`record_hash` hashes)."""
        try:
            return codec.encode([self.index, self.time_ms, self.node, list(self.callers),
                                 self.stream, self.grant_tx, self.method, self.code,
                                 list(self.tx_ids), self.salt])
        except codec.EncodeError as exc:  # a method name that is not UTF-8
            raise AuditRecordError(f"record has no canonical encoding: {exc}") from None


def decode_record(data: bytes) -> AuditRecord:
    """The record encoded in ``data``; raises :class:`AuditRecordError` saying what is wrong."""
    try:
        value = codec.decode(data, max_bytes=MAX_RECORD_BYTES)
    except codec.DecodeError as exc:
        raise AuditRecordError(f"audit record: {exc}") from None
    if type(value) is not list:
        raise AuditRecordError(f"an audit record must be an array, got {type(value).__name__}")
    if len(value) != FIELDS:
        raise AuditRecordError(f"an audit record has {FIELDS} fields, got {len(value)}")
    index, time_ms, node, callers, stream, grant_tx, method, code, tx_ids, salt = value
    return AuditRecord(index, time_ms, node, callers, stream, grant_tx, method, code, tx_ids,
                       salt)


def record_hash(rec: AuditRecord) -> bytes:
    """``H(record)``: the hash of the record's canonical bytes."""
    return blake2b256(rec.encode())


def tag(stream: bytes, node: bytes, index: int) -> bytes:
    """The tag of record ``index`` of ``node``'s log if it is of ``stream``: BLAKE2b-256 keyed
    by the stream id, so only who knows the stream can tell its records' leaves."""
    return hashlib.blake2b(TAG_DOMAIN + node + _U64.pack(index), digest_size=HASH_BYTES,
                           key=stream).digest()


def leaf_of(index: int, stream: bytes, node: bytes, encoded: bytes) -> bytes:
    """The leaf of a record from its fields and canonical bytes (no re-encoding)."""
    return codec.encode([tag(stream, node, index), blake2b256(encoded)])


def leaf(rec: AuditRecord) -> bytes:
    """The record's leaf in its node's Merkle tree: ``encode([tag, H(record)])``."""
    return leaf_of(rec.index, rec.stream, rec.node, rec.encode())


def split_leaf(data: bytes) -> tuple[bytes, bytes] | None:
    """``(tag, record hash)`` of a leaf, or None when ``data`` is not a leaf's encoding."""
    try:
        value = codec.decode(data, max_bytes=2 * HASH_BYTES + 8)
    except codec.DecodeError:
        return None
    if (type(value) is not list or len(value) != 2
            or not all(type(v) is bytes and len(v) == HASH_BYTES for v in value)):
        return None
    return value[0], value[1]


def range_root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle root (RFC 6962, :mod:`iomtnode.core.merkle`) of a range's leaves."""
    return merkle.root(list(leaves))
