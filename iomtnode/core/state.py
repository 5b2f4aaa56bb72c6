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
device; an admission, a maintenance record, a vote, evidence or an audit anchor from an
authority; a device's revocation from an authority or the device's stream key; a grant or
an epoch from a stream the ledger knows (the stream of at least one active device:
authorities do not grant for a patient, and a key that no admission named is nobody's
stream); a grant's revocation from the stream that made it; an erasure from the stream or
an authority naming the patient's request. :func:`check_signer` checks exactly these
rules, reading the
state only, so admission runs it before verifying a signature: a transaction from a key
without the right costs a lookup, not a verification. :func:`apply` checks them too, first,
so a block carrying such a transaction is invalid on every node.

Keyspace (first byte)::

    a            current authority list
    c            scheduled authority changes [[height, subject, add], ...]
    k            handoffs: each height whose next block has another authority set, with
                 that set [[h, [authority, ...]], ...]
    d <device>   Device record [stream, profile hash, status, height, successor]
    p <device>   pending admission [[approvers...], stream, profile hash]
    q <device>   the device's anti-replay window: highest sequence number and which of
                 the ``replay_window`` below it were used (see :mod:`.window`)
    m <device>   last maintenance [action, note, ts_ms, height]
    v <subject> <0|1>   votes to remove/add subject [voters...]
    n <stream>   how many active devices record into the stream (u64; absent: none): the
                 streams the ledger knows, which alone may grant access to their records
    s <stream>   [epoch, epoch public key, [live grantees...], erased] (see .streams)
    g <stream> <grantee>   grant [box key, mode, expires_ms, first epoch, height, tx id]
    l <node>     audit anchors [authority, next index] (see .governance)
    b <commitment>   a class 1 or 2 reading named this blob (one reading per blob)
    x <tx id>    a nonce-bearing transaction already applied
    o <authority>  the last height the authority certified (its precommit is in the
                 certificate a block carries; 0 for a genesis authority); u64
    e <authority> <height u64> <round u64> <vote type u8>
                 evidence of equivocation [evidence hash, height included, reporter]
"""

from __future__ import annotations

from dataclasses import replace

from . import errors as e
from . import streams, window
from .genesis import Genesis
from .governance import (
    anchor_audit,
    apply_scheduled_changes,
    authorities_at,
    decode_evidence_record,
    evidence_key,
    report_evidence,
    require_authority,
    vote,
)
from .ledger import NO_STREAM, BlockContext, Device, State
from .tx import (
    AdmitDevice,
    AuditAnchor,
    AuthorityVote,
    DeviceMaintenance,
    EpochAnnounce,
    Erase,
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
# resyncs); 3: streams, epochs, sealed payloads committed by hash (docs/privacy.md)
STATE_RULES_VERSION = 3


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
            streams.grant(state, body, ctx, tx.id)
            state.mark_seen(tx.id)
        case RevokeGrant():
            _once(state, tx)
            streams.revoke(state, body, ctx)
            state.mark_seen(tx.id)
        case EpochAnnounce():  # one per epoch number: no nonce needed
            streams.announce(state, body, ctx)
        case Erase():
            _once(state, tx)
            streams.erase(state, body)
            state.mark_seen(tx.id)
        case AuditAnchor():  # one per (node, first index)
            anchor_audit(state, body, tx.id, ctx.height)
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
        case AdmitDevice() | DeviceMaintenance() | AuthorityVote() | AuditAnchor():
            require_authority(state, body.authority)
        case RevokeDevice():
            _may_revoke(state, body)
        case Grant() | EpochAnnounce():
            streams.known_stream(state, body.stream)
        case RevokeGrant():
            streams.existing_grant(state, body)
        case Erase():
            streams.may_erase(state, body)
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
    device = _active_device(state, r.device)
    streams.current_epoch(state.stream(device.stream), device.stream, r.epoch)
    record = window.use(state.seq_record(r.device), r.seq, ctx.genesis.replay_window)
    limit = ctx.time_ms + ctx.genesis.max_future_drift_ms
    if r.ts_ms > limit:
        raise e.FutureTimestampError(
            f"timestamp {r.ts_ms} is {r.ts_ms - ctx.time_ms} ms ahead of the chain's clock "
            f"(at most {ctx.genesis.max_future_drift_ms} ms allowed); check the device clock"
        )
    if r.size_class:  # a blob is content-addressed: one reading may name it
        if state.blob_named(r.commitment):
            raise e.CommitmentInUseError(
                f"blob {r.commitment.hex()[:16]} is named by a committed reading already: "
                "re-seal the payload with a new salt")
        state.name_blob(r.commitment)
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
    if a.device == a.stream or _is_stream(state, a.device):
        raise e.KeyInUseError("a stream key cannot be admitted as a device")
    pending = state.pending_admission(a.device)
    approvers: list[bytes] = []
    if pending is not None:
        approvers, stream, profile_hash = pending
        if a.authority in approvers:
            raise e.DuplicateAdmissionError(
                f"authority {a.authority.hex()[:16]} already approved this device"
            )
        if [stream, profile_hash] != [a.stream, a.profile_hash]:
            raise e.ConflictingAdmissionError(
                "this approval names a different stream or profile than the pending ones "
                "for the same device"
            )
    if state.stream(a.stream).erased:
        raise e.ErasedStreamError(f"stream {a.stream.hex()[:16]} was erased")
    if a.stream in state.authorities() or state.device(a.stream) is not None:
        raise e.KeyInUseError("a stream key cannot be an authority's or a device's key")
    approvers = [*approvers, a.authority]
    if len(approvers) >= ctx.genesis.admission_threshold:
        state.put_device(Device(a.device, a.stream, a.profile_hash, ACTIVE, ctx.height, b""))
        state.count_stream_device(a.stream, +1)
        if pending is not None:
            state.delete(b"p" + a.device)
    else:
        state.put_value(b"p" + a.device, [approvers, a.stream, a.profile_hash])


def _is_stream(state: State, key: bytes) -> bool:
    """Whether ``key`` is a stream the ledger knows (devices record into it, or it has a
    record: epochs, grants, an erasure)."""
    return bool(state.stream_devices(key)) or state.stream(key) != NO_STREAM


def _may_revoke(state: State, r: RevokeDevice) -> Device:
    device = _active_device(state, r.device)
    if r.by != device.stream and r.by not in state.authorities():
        raise e.NotPermittedError("only an authority or the device's stream may revoke it")
    return device


def _revoke(state: State, r: RevokeDevice) -> None:
    device = _may_revoke(state, r)
    state.put_device(replace(device, status=REVOKED))
    state.count_stream_device(device.stream, -1)


def _rotate(state: State, r: RotateDeviceKey, ctx: BlockContext) -> None:
    device = _active_device(state, r.device)
    if state.device(r.new_key) is not None or state.pending_admission(r.new_key) is not None:
        raise e.KeyInUseError(f"key {r.new_key.hex()[:16]} is already registered")
    if r.new_key in state.authorities():
        raise e.KeyInUseError("an authority key cannot become a device key")
    if _is_stream(state, r.new_key):
        raise e.KeyInUseError("a stream key cannot become a device key")
    state.put_device(replace(device, status=ROTATED, successor=r.new_key))
    state.put_device(Device(r.new_key, device.stream, device.profile_hash, ACTIVE,
                            ctx.height, b""))


def _maintenance(state: State, m: DeviceMaintenance, ctx: BlockContext) -> None:
    require_authority(state, m.authority)
    if state.device(m.device) is None:
        raise e.UnknownDeviceError(f"device {m.device.hex()[:16]} is not admitted")
    state.put_value(b"m" + m.device, [m.action, m.note, m.ts_ms, ctx.height])


__all__ = [  # the governance functions and ledger types the state's users import from here
    "STATE_RULES_VERSION", "BlockContext", "Device", "State", "apply", "authorities_at",
    "begin_block", "check_signer", "decode_evidence_record", "evidence_key", "genesis_state",
]
