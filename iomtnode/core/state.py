"""The world state and the rules that change it: ``apply(state, tx, ctx)``.

The authority rules (votes, scheduled changes, who is online, evidence) are in
:mod:`.governance`; this module holds the state itself and the device and consent rules.

State is a key-value map of bytes, read through a base (the store, or a dict in tests)
with the writes of the transactions applied so far held in an overlay. Applying a block
means: :func:`begin_block`, then :func:`apply` for each transaction, then persisting
:meth:`State.changes` together with the block (one atomic batch, see ``store/``).

Rules check the cheapest things first and raise one specific
:class:`~iomtnode.core.errors.RuleError` per violated rule; a rejected transaction leaves
the state exactly as it was (every rule is checked before anything is written).
Signatures are not checked here: a transaction reaches :func:`apply` only after its
signature was verified once, on admission.

Only participants write. Every kind names the key that signs it, and that key must hold
the right to sign it in the state: a reading or a key rotation comes from an active
device; an admission, a maintenance record, a vote or evidence from an authority; a
device's revocation from an authority or the device's patient; a grant from a patient the
ledger knows (the patient of at least one active device: authorities do not grant for a
patient, and a key that no admission named is nobody's patient); a grant's revocation
from the patient who made it. :func:`check_signer` checks exactly these rules, reading the
state only, so admission runs it before verifying a signature: a transaction from a key
without the right costs a lookup, not a verification. :func:`apply` checks them too, first,
so a block carrying such a transaction is invalid on every node.

Keyspace (first byte)::

    a            current authority list
    c            scheduled authority changes [[height, subject, add], ...]
    k            handoffs: each height whose next block has another authority set, with
                 that set [[h, [authority, ...]], ...]
    d <device>   Device record
    p <device>   pending admission [[approvers...], patient, class, manufacturer]
    q <device>   the device's anti-replay window: highest sequence number and which of
                 the ``replay_window`` below it were used (see :mod:`.window`)
    m <device>   last maintenance [action, note, ts_ms, height]
    v <subject> <0|1>   votes to remove/add subject [voters...]
    n <patient>  how many active devices name the patient (u64; absent: none): the
                 patients the ledger knows, who alone may grant access to their records
    g <patient> <grantee> <scope>   grant [expires_ms, wrapped_key, height]
    x <tx id>    a nonce-bearing transaction already applied
    o <authority>  the last height the authority certified (its precommit is in the
                 certificate a block carries; 0 for a genesis authority); u64
    e <authority> <height u64> <round u64> <vote type u8>
                 evidence of equivocation [evidence hash, height included, reporter]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from . import errors as e
from . import window
from .genesis import Genesis
from .governance import (
    apply_scheduled_changes,
    authorities_at,
    decode_evidence_record,
    evidence_key,
    report_evidence,
    require_authority,
    vote,
)
from .ledger import K_PATIENTS, BlockContext, Device, State
from .tx import (
    AdmitDevice,
    AuthorityVote,
    DeviceMaintenance,
    Grant,
    Reading,
    ReportEvidence,
    RevokeDevice,
    RevokeGrant,
    RotateDeviceKey,
    SignedTx,
    TxBody,
)

ACTIVE, REVOKED, ROTATED = "active", "revoked", "rotated"
# the rules' version: a state built by other rules is not this one's (a node refuses it and
# resyncs); 2: each patient's active devices are counted (``n``), and only a patient the
# ledger knows may grant
STATE_RULES_VERSION = 2


def patient_index(devices: Iterable[Device]) -> dict[bytes, bytes | None]:
    """The ``n <patient>`` records of a state whose device records are ``devices``: what the
    rules of version 2 keep, computed once from the devices of a state built by version 1
    (which kept none; the count depends only on which devices are active, and the rules of
    admission, rotation and revocation did not change)."""
    counts: Counter[bytes] = Counter(d.patient for d in devices if d.status == ACTIVE)
    return {K_PATIENTS + patient: count.to_bytes(8, "big") for patient, count in counts.items()}


def genesis_state(genesis: Genesis) -> dict[bytes, bytes | None]:
    """The state changes block 0 commits: the genesis authority set."""
    state = State(lambda key: None)
    state.set_authorities(genesis.authorities)
    for authority in genesis.authorities:
        state.set_last_certified(authority, 0)
    return state.changes()


def begin_block(state: State, ctx: BlockContext) -> None:
    """Start block ``ctx.height``: record who certified its parent, and apply the authority
    changes scheduled for it."""
    for signer in ctx.signers:
        state.set_last_certified(signer, ctx.height - 1)
    apply_scheduled_changes(state, ctx)


def apply(state: State, tx: SignedTx, ctx: BlockContext) -> None:
    """Apply ``tx`` to ``state`` or raise the :class:`RuleError` of the first broken rule."""
    body = tx.body
    match body:
        case Reading():
            _reading(state, body, ctx)
        case AdmitDevice():
            _admit(state, body, ctx)
        case RevokeDevice():
            _once(state, tx)
            _revoke(state, body)
            state.mark_seen(tx.id)
        case RotateDeviceKey():
            _rotate(state, body, ctx)
        case DeviceMaintenance():
            _once(state, tx)
            _maintenance(state, body, ctx)
            state.mark_seen(tx.id)
        case AuthorityVote():
            _once(state, tx)
            vote(state, body, ctx)
            state.mark_seen(tx.id)
        case Grant():
            _once(state, tx)
            _grant(state, body, ctx)
            state.mark_seen(tx.id)
        case RevokeGrant():
            _once(state, tx)
            _revoke_grant(state, body)
            state.mark_seen(tx.id)
        case ReportEvidence():
            report_evidence(state, body, ctx)
        case _:  # pragma: no cover - decode_tx only yields the kinds above
            raise TypeError(f"no rule for {type(body).__name__}")


def check_signer(state: State, body: TxBody) -> None:
    """Raise the :class:`RuleError` of the signer's right to sign ``body`` if it lacks it
    (see the module's introduction); reads the state, writes nothing.

    :func:`apply` checks the same rules before any other but a replayed id (a refusal
    here is a refusal there), so admission may call this before a signature is verified.
    A reading's sequence number is checked by the caller (``window.fresh``)."""
    if type(body) is Reading:  # nearly every transaction: no pattern matching
        _active_device(state, body.device)
        return
    match body:
        case RotateDeviceKey():
            _active_device(state, body.device)
        case AdmitDevice() | DeviceMaintenance() | AuthorityVote():
            require_authority(state, body.authority)
        case RevokeDevice():
            _may_revoke(state, body)
        case Grant():
            _known_patient(state, body.patient)
        case RevokeGrant():
            _existing_grant(state, body)
        case ReportEvidence():
            require_authority(state, body.reporter)
        case _:  # pragma: no cover - decode_tx only yields the kinds above
            raise TypeError(f"no rule for {type(body).__name__}")


def _once(state: State, tx: SignedTx) -> None:
    if state.seen(tx.id):
        raise e.DuplicateTxError(f"transaction {tx.id.hex()[:16]} was already applied")


def _active_device(state: State, key: bytes) -> Device:
    device = state.device(key)
    if device is None:
        raise e.UnknownDeviceError(f"device {key.hex()[:16]} is not admitted")
    if device.status == REVOKED:
        raise e.RevokedDeviceError(f"device {key.hex()[:16]} was revoked")
    if device.status == ROTATED:
        raise e.RetiredKeyError(
            f"device key {key.hex()[:16]} was rotated to {device.successor.hex()[:16]}; "
            "sign with the new key"
        )
    return device


def _reading(state: State, r: Reading, ctx: BlockContext) -> None:
    _active_device(state, r.device)
    record = window.use(state.seq_record(r.device), r.seq, ctx.genesis.replay_window)
    limit = ctx.time_ms + ctx.genesis.max_future_drift_ms
    if r.ts_ms > limit:
        raise e.FutureTimestampError(
            f"timestamp {r.ts_ms} is {r.ts_ms - ctx.time_ms} ms ahead of the chain's clock "
            f"(at most {ctx.genesis.max_future_drift_ms} ms allowed); check the device clock"
        )
    state.set_seq_record(r.device, record)


def _admit(state: State, a: AdmitDevice, ctx: BlockContext) -> None:
    require_authority(state, a.authority)
    existing = state.device(a.device)
    if existing is not None:
        raise e.DuplicateAdmissionError(
            f"device {a.device.hex()[:16]} is already registered ({existing.status})"
        )
    if a.device in state.authorities():
        raise e.KeyInUseError("an authority key cannot be admitted as a device")
    pending = state.pending_admission(a.device)
    approvers: list[bytes] = []
    if pending is not None:
        approvers, patient, device_class, manufacturer = pending
        if a.authority in approvers:
            raise e.DuplicateAdmissionError(
                f"authority {a.authority.hex()[:16]} already approved this device"
            )
        if [patient, device_class, manufacturer] != [a.patient, a.device_class, a.manufacturer]:
            raise e.ConflictingAdmissionError(
                "this approval names a different patient, class or manufacturer than the "
                "pending ones for the same device"
            )
    approvers = [*approvers, a.authority]
    if len(approvers) >= ctx.genesis.admission_threshold:
        state.put_device(Device(a.device, a.patient, a.device_class, a.manufacturer, ACTIVE,
                                ctx.height, b""))
        state.count_patient_device(a.patient, +1)
        if pending is not None:
            state.delete(b"p" + a.device)
    else:
        state.put_value(b"p" + a.device,
                         [approvers, a.patient, a.device_class, a.manufacturer])


def _may_revoke(state: State, r: RevokeDevice) -> Device:
    device = _active_device(state, r.device)
    if r.by != device.patient and r.by not in state.authorities():
        raise e.NotPermittedError("only an authority or the device's patient may revoke it")
    return device


def _revoke(state: State, r: RevokeDevice) -> None:
    device = _may_revoke(state, r)
    state.put_device(replace(device, status=REVOKED))
    state.count_patient_device(device.patient, -1)


def _rotate(state: State, r: RotateDeviceKey, ctx: BlockContext) -> None:
    device = _active_device(state, r.device)
    if state.device(r.new_key) is not None or state.pending_admission(r.new_key) is not None:
        raise e.KeyInUseError(f"key {r.new_key.hex()[:16]} is already registered")
    if r.new_key in state.authorities():
        raise e.KeyInUseError("an authority key cannot become a device key")
    state.put_device(replace(device, status=ROTATED, successor=r.new_key))
    state.put_device(Device(r.new_key, device.patient, device.device_class,
                            device.manufacturer, ACTIVE, ctx.height, b""))


def _maintenance(state: State, m: DeviceMaintenance, ctx: BlockContext) -> None:
    require_authority(state, m.authority)
    if state.device(m.device) is None:
        raise e.UnknownDeviceError(f"device {m.device.hex()[:16]} is not admitted")
    state.put_value(b"m" + m.device, [m.action, m.note, m.ts_ms, ctx.height])


def _known_patient(state: State, patient: bytes) -> None:
    if not state.patient_devices(patient):
        raise e.UnknownPatientError(
            f"{patient.hex()[:16]} is not the patient of any active device: only a patient "
            "the ledger knows may grant access to their records")


def _grant(state: State, g: Grant, ctx: BlockContext) -> None:
    _known_patient(state, g.patient)
    if g.grantee == g.patient:
        raise e.NotPermittedError("a patient does not need a grant for their own records")
    if g.expires_ms <= ctx.time_ms:
        raise e.ExpiredGrantError(f"grant expires at {g.expires_ms}, before the block time")
    state.put_value(b"g" + g.patient + g.grantee + g.scope.encode(),
                     [g.expires_ms, g.wrapped_key, ctx.height])


def _existing_grant(state: State, r: RevokeGrant) -> None:
    """A grant is revoked by the patient who made it (the grant's key names them), even
    once their devices are revoked: withdrawing consent is always allowed."""
    if state.grant(r.patient, r.grantee, r.scope) is None:
        raise e.UnknownGrantError(f"no grant of scope {r.scope!r} to {r.grantee.hex()[:16]}")


def _revoke_grant(state: State, r: RevokeGrant) -> None:
    _existing_grant(state, r)
    state.delete(b"g" + r.patient + r.grantee + r.scope.encode())


__all__ = [  # the governance functions and ledger types the state's users import from here
    "STATE_RULES_VERSION", "BlockContext", "Device", "State", "apply", "authorities_at",
    "begin_block", "check_signer", "decode_evidence_record", "evidence_key", "genesis_state",
    "patient_index",
]
