"""The nine transaction kinds: one frozen record per kind, with the key that signs it, its
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

MAX_INLINE_PAYLOAD_BYTES = 1024  # larger payloads live off-chain, referenced by hash
MAX_NOTE_BYTES = 256  # free-text fields (manufacturer, reasons, maintenance notes)
MAX_WRAPPED_KEY_BYTES = 128  # a data key sealed to a grantee


class Reading(msgspec.Struct, frozen=True, gc=False):
    """A measurement signed by the device that took it.

    ``payload`` is small inline data (normally sealed to the patient's key) or empty, in
    which case ``payload_hash`` names an encrypted off-chain blob. Exactly one is set.
    """

    KIND: ClassVar[int] = 1
    DOMAIN: ClassVar[Domain] = Domain.READING
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.key, f.u64, f.u64, f.ident, f.max_bytes(MAX_INLINE_PAYLOAD_BYTES), f.optional_hash,
    )
    device: bytes
    seq: int
    ts_ms: int
    kind: str
    payload: bytes
    payload_hash: bytes

    @property
    def signer(self) -> bytes:
        return self.device

    def check(self) -> None:
        if bool(self.payload) == bool(self.payload_hash):
            raise f.FieldError("exactly one of payload and payload_hash must be set")


class AdmitDevice(msgspec.Struct, frozen=True, gc=False):
    """An authority's approval to admit ``device`` (its public key) for ``patient``."""

    KIND: ClassVar[int] = 2
    DOMAIN: ClassVar[Domain] = Domain.ADMIT_DEVICE
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.key, f.key, f.key, f.ident, f.text(MAX_NOTE_BYTES),
    )
    authority: bytes
    device: bytes
    patient: bytes
    device_class: str
    manufacturer: str

    @property
    def signer(self) -> bytes:
        return self.authority


class RevokeDevice(msgspec.Struct, frozen=True, gc=False):
    """Revoke a device for good; signed by an authority or by the device's patient."""

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
    """A service record (calibration, battery swap, firmware) signed by an authority."""

    KIND: ClassVar[int] = 5
    DOMAIN: ClassVar[Domain] = Domain.DEVICE_MAINTENANCE
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.key, f.key, f.ident, f.text(MAX_NOTE_BYTES), f.u64,
    )
    authority: bytes
    device: bytes
    action: str
    note: str
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


class Grant(msgspec.Struct, frozen=True, gc=False):
    """A patient lets ``grantee`` read their records in ``scope`` until ``expires_ms``.

    ``wrapped_key`` is the patient's data key sealed to the grantee (may be empty when
    the grantee fetches per-record keys instead).
    """

    KIND: ClassVar[int] = 7
    DOMAIN: ClassVar[Domain] = Domain.GRANT
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.key, f.key, f.ident, f.u64, f.max_bytes(MAX_WRAPPED_KEY_BYTES), f.u64,
    )
    patient: bytes
    grantee: bytes
    scope: str
    expires_ms: int
    wrapped_key: bytes
    nonce: int

    @property
    def signer(self) -> bytes:
        return self.patient


class RevokeGrant(msgspec.Struct, frozen=True, gc=False):
    """A patient withdraws a grant."""

    KIND: ClassVar[int] = 8
    DOMAIN: ClassVar[Domain] = Domain.REVOKE_GRANT
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.key, f.key, f.ident, f.u64)
    patient: bytes
    grantee: bytes
    scope: str
    nonce: int

    @property
    def signer(self) -> bytes:
        return self.patient


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
    | AuthorityVote | Grant | RevokeGrant | ReportEvidence
)
TX_TYPES: dict[int, type[Any]] = {
    t.KIND: t
    for t in (Reading, AdmitDevice, RevokeDevice, RotateDeviceKey, DeviceMaintenance,
              AuthorityVote, Grant, RevokeGrant, ReportEvidence)
}
KIND_NAMES: dict[type[Any], str] = {
    Reading: "reading", AdmitDevice: "admit_device", RevokeDevice: "revoke_device",
    RotateDeviceKey: "rotate_device_key", DeviceMaintenance: "device_maintenance",
    AuthorityVote: "authority_vote", Grant: "grant", RevokeGrant: "revoke_grant",
    ReportEvidence: "evidence",
}
