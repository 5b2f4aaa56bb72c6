"""The twelve transaction kinds: one frozen record per kind, with the key that signs it, its
signature domain and the checks on its fields (msgspec Structs: built in a tenth of a frozen
dataclass's time, and not tracked by the garbage collector, which matters with tens of
thousands pending).

:mod:`.tx` turns them into bytes and back and wraps them in the signed envelope; what each
kind does to the ledger is in :mod:`.state` and :mod:`.governance`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from . import fields as f
from .crypto import Domain
from .evidence import MAX_EVIDENCE_BYTES, Evidence, MalformedEvidenceError, decode_evidence


class MalformedTxError(ValueError):
    """Bytes that do not decode to a well-formed transaction (says which field and why)."""


MAX_NOTE_BYTES = 256  # free-text fields (reasons); a sealed maintenance note
MAX_WRAPPED_KEY_BYTES = 128  # an epoch key sealed to a grantee
MAX_GRANTEES = 24  # live grants on one stream, each re-wrapped at every epoch
MAX_AUDIT_ANCHOR_RECORDS = 1_000_000  # audit records one anchor may cover


class Reading(msgspec.Struct, frozen=True, gc=False):
    """A measurement signed by the device that took it, sealed to its stream's ``epoch``.

    The body holds no vital kind and no value: ``commitment`` is the salted hash of the
    sealed payload (the *sidecar*, see :mod:`.payload`), which travels beside the signed
    transaction (class 0) or in the nodes' blob store (classes 1 and 2).
    """

    KIND: ClassVar[int] = 1
    DOMAIN: ClassVar[Domain] = Domain.READING
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.key, f.u64, f.u64, f.u64, f.size_class, f.digest,
    )
    device: bytes
    seq: int
    ts_ms: int
    epoch: int
    size_class: int
    commitment: bytes

    @property
    def signer(self) -> bytes:
        return self.device


class AdmitDevice(msgspec.Struct, frozen=True, gc=False):
    """An authority's approval to admit ``device`` (its public key) to ``stream``, the
    pseudonym of one patient's scope; ``profile_hash`` commits to the device's class and
    maker with a salt, so neither says what it measures."""

    KIND: ClassVar[int] = 2
    DOMAIN: ClassVar[Domain] = Domain.ADMIT_DEVICE
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.key, f.key, f.key, f.digest)
    authority: bytes
    device: bytes
    stream: bytes
    profile_hash: bytes

    @property
    def signer(self) -> bytes:
        return self.authority


class RevokeDevice(msgspec.Struct, frozen=True, gc=False):
    """Revoke a device for good; signed by an authority or by the device's stream key."""

    KIND: ClassVar[int] = 3
    DOMAIN: ClassVar[Domain] = Domain.REVOKE_DEVICE
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.key, f.key, f.text(MAX_NOTE_BYTES), f.u64)
    by: bytes
    device: bytes
    reason: str
    nonce: int

    @property
    def signer(self) -> bytes:
        return self.by


class RotateDeviceKey(msgspec.Struct, frozen=True, gc=False):
    """Move a device to ``new_key``; signed by the old key, which is retired."""

    KIND: ClassVar[int] = 4
    DOMAIN: ClassVar[Domain] = Domain.ROTATE_DEVICE_KEY
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.key, f.key)
    device: bytes
    new_key: bytes

    @property
    def signer(self) -> bytes:
        return self.device


class DeviceMaintenance(msgspec.Struct, frozen=True, gc=False):
    """A service record signed by an authority: ``action`` (calibration, battery, firmware)
    in clear, ``note`` sealed to the stream's epoch key (or empty)."""

    KIND: ClassVar[int] = 5
    DOMAIN: ClassVar[Domain] = Domain.DEVICE_MAINTENANCE
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.key, f.key, f.ident, f.max_bytes(MAX_NOTE_BYTES), f.u64,
    )
    authority: bytes
    device: bytes
    action: str
    note: bytes
    ts_ms: int

    @property
    def signer(self) -> bytes:
        return self.authority


class AuthorityVote(msgspec.Struct, frozen=True, gc=False):
    """An authority's vote to add or remove ``subject`` from the authority set."""

    KIND: ClassVar[int] = 6
    DOMAIN: ClassVar[Domain] = Domain.AUTHORITY_VOTE
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.key, f.key, f.boolean, f.u64)
    authority: bytes
    subject: bytes
    add: bool
    nonce: int

    @property
    def signer(self) -> bytes:
        return self.authority


FORWARD, HISTORY = 0, 1  # a grant's mode: from its epoch on, or its epoch and every earlier


def _mode(name: str, value: object) -> int:
    if value not in (FORWARD, HISTORY) or type(value) is not int:
        raise f.FieldError(f"{name} must be 0 (forward) or 1 (history), got {value!r:.40}")
    return value


def _public(name: str, value: object) -> bytes:
    f.key(name, value)
    if value == bytes(32):
        raise f.FieldError(f"{name} must be an X25519 public key, not all zero")
    return value  # type: ignore[return-value]


class Grant(msgspec.Struct, frozen=True, gc=False):
    """A stream's key lets ``grantee`` read the stream until ``expires_ms``: the epoch's
    secret (``mode`` forward: this epoch's key; history: the epoch state, which derives
    every earlier epoch's) is sealed to the grantee's X25519 ``box`` key; the wrap travels
    beside the body and ``wrap_hash`` commits to it."""

    KIND: ClassVar[int] = 7
    DOMAIN: ClassVar[Domain] = Domain.GRANT
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.key, f.key, _public, f.u64, f.u64, _mode, f.digest, f.u64,
    )
    stream: bytes
    grantee: bytes
    box: bytes
    expires_ms: int
    epoch: int
    mode: int
    wrap_hash: bytes
    nonce: int

    @property
    def signer(self) -> bytes:
        return self.stream


class EpochAnnounce(msgspec.Struct, frozen=True, gc=False):
    """A stream's next epoch: devices seal to ``public`` from now on, and each of
    ``grantees`` (exactly the stream's live grants) gets the epoch's secret wrapped to its
    box key (the wraps travel beside the body; ``wraps_hash`` commits to them)."""

    KIND: ClassVar[int] = 10
    DOMAIN: ClassVar[Domain] = Domain.EPOCH
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.key, f.u64, _public, f.sorted_keys(MAX_GRANTEES), f.digest,
    )
    stream: bytes
    epoch: int
    public: bytes
    grantees: list[bytes]
    wraps_hash: bytes

    @property
    def signer(self) -> bytes:
        return self.stream


class RevokeGrant(msgspec.Struct, frozen=True, gc=False):
    """A stream withdraws a grant and starts its next epoch in one transaction, so no block
    exists in which the grant is gone but devices still seal to a key the grantee holds."""

    KIND: ClassVar[int] = 8
    DOMAIN: ClassVar[Domain] = Domain.REVOKE_GRANT
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.key, f.key, f.u64, f.u64, _public, f.sorted_keys(MAX_GRANTEES), f.digest,
    )
    stream: bytes
    grantee: bytes
    nonce: int
    epoch: int
    public: bytes
    grantees: list[bytes]
    wraps_hash: bytes

    @property
    def signer(self) -> bytes:
        return self.stream


class Erase(msgspec.Struct, frozen=True, gc=False):
    """A tombstone: the stream's readings with ``since_ms <= ts_ms < until_ms`` lose their
    sealed payloads on every node (``[0, 2^64 - 1)``: the whole scope, with its wraps and
    grants). Signed by the stream key (``request_hash`` empty) or by an authority acting on
    the patient's documented request (``request_hash``: the document's hash)."""

    KIND: ClassVar[int] = 11
    DOMAIN: ClassVar[Domain] = Domain.ERASE
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.key, f.key, f.u64, f.u64, f.optional_hash, f.u64,
    )
    by: bytes
    stream: bytes
    since_ms: int
    until_ms: int
    request_hash: bytes
    nonce: int

    @property
    def signer(self) -> bytes:
        return self.by

    @property
    def whole_scope(self) -> bool:
        return self.since_ms == 0 and self.until_ms == f.U64_MAX

    def check(self) -> None:
        if self.since_ms >= self.until_ms:
            raise f.FieldError("erase.since_ms must be before erase.until_ms")


class AuditAnchor(msgspec.Struct, frozen=True, gc=False):
    """An authority anchors ``count`` records of its node's audit log from index ``first``
    by their Merkle ``root``; anchors of one node cover its log without gap or overlap."""

    KIND: ClassVar[int] = 12
    DOMAIN: ClassVar[Domain] = Domain.AUDIT_ANCHOR
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.key, f.key, f.u64, f.u64, f.digest)
    authority: bytes
    node: bytes
    first: int
    count: int
    root: bytes

    @property
    def signer(self) -> bytes:
        return self.authority

    def check(self) -> None:
        if not 1 <= self.count <= MAX_AUDIT_ANCHOR_RECORDS:
            raise f.FieldError(
                f"audit_anchor.count must be 1..{MAX_AUDIT_ANCHOR_RECORDS}, got {self.count}")


class ReportEvidence(msgspec.Struct, frozen=True, gc=False):
    """An authority puts another authority's equivocation on the ledger.

    ``evidence`` is an encoded :class:`~iomtnode.core.evidence.Evidence`: two conflicting
    signed votes. Verifying this transaction verifies the reporter's signature and both
    votes' signatures (see :meth:`SignedTx.verify`); the state rules record it once per
    (authority, height, round, vote type).
    """

    KIND: ClassVar[int] = 9
    DOMAIN: ClassVar[Domain] = Domain.EVIDENCE
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.key, f.max_bytes(MAX_EVIDENCE_BYTES))
    reporter: bytes
    evidence: bytes

    @property
    def signer(self) -> bytes:
        return self.reporter

    def check(self) -> None:
        try:
            decode_evidence(self.evidence)
        except MalformedEvidenceError as exc:
            raise f.FieldError(f"evidence.evidence: {exc}") from None

    @property
    def proof(self) -> Evidence:
        return decode_evidence(self.evidence)


TxBody = (
    Reading | AdmitDevice | RevokeDevice | RotateDeviceKey | DeviceMaintenance
    | AuthorityVote | Grant | RevokeGrant | ReportEvidence | EpochAnnounce | Erase
    | AuditAnchor
)
TX_TYPES: dict[int, type[Any]] = {
    t.KIND: t
    for t in (Reading, AdmitDevice, RevokeDevice, RotateDeviceKey, DeviceMaintenance,
              AuthorityVote, Grant, RevokeGrant, ReportEvidence, EpochAnnounce, Erase,
              AuditAnchor)
}
KIND_NAMES: dict[type[Any], str] = {
    Reading: "reading", AdmitDevice: "admit_device", RevokeDevice: "revoke_device",
    RotateDeviceKey: "rotate_device_key", DeviceMaintenance: "device_maintenance",
    AuthorityVote: "authority_vote", Grant: "grant", RevokeGrant: "revoke_grant",
    ReportEvidence: "evidence", EpochAnnounce: "epoch", Erase: "erase",
    AuditAnchor: "audit_anchor",
}
