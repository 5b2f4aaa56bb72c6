"""The world state and the rules that change it: ``apply(state, tx, ctx)``.

State is a key-value map of bytes, read through a base (the store, or a dict in tests)
with the writes of the transactions applied so far held in an overlay. Applying a block
means: :func:`begin_block`, then :func:`apply` for each transaction, then persisting
:meth:`State.changes` together with the block (one atomic batch, see ``store/``).

Rules check the cheapest things first and raise one specific
:class:`~iomtnode.core.errors.RuleError` per violated rule; a rejected transaction leaves
the state exactly as it was (every rule is checked before anything is written).
Signatures are not checked here: a transaction reaches :func:`apply` only after its
signature was verified once, on admission.

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
    g <patient> <grantee> <scope>   grant [expires_ms, wrapped_key, height]
    x <tx id>    a nonce-bearing transaction already applied
    o <authority>  the last height the authority certified (its precommit is in the
                 certificate a block carries), or the height it joined; u64
    e <authority> <height u64> <round u64> <vote type u8>
                 evidence of equivocation [evidence hash, height included, reporter]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from . import codec, window
from . import errors as e
from .block import quorum
from .genesis import Genesis
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
)

ACTIVE, REVOKED, ROTATED = "active", "revoked", "rotated"
GOVERNANCE_DELAY_BLOCKS = 2  # an authority change takes effect this many heights later
ONLINE_WINDOW_BLOCKS = 32  # an authority is online if it certified one of this many blocks
DEVICE_CACHE = 16_384  # decoded device records kept (about 5 MB)

K_AUTHORITIES = b"a"
K_SCHEDULED = b"c"
K_EVIDENCE = b"e"
K_ONLINE = b"o"
K_HANDOFFS = b"k"
K_VOTES = b"v"


@dataclass(frozen=True, slots=True)
class Device:
    key: bytes
    patient: bytes
    device_class: str
    manufacturer: str
    status: str
    admitted_height: int
    successor: bytes  # the new key after a rotation, else b""


@functools.lru_cache(maxsize=DEVICE_CACHE)
def _device(key: bytes, raw: bytes) -> Device:
    """The device record stored as ``raw`` (pure, so decoded once per record version:
    every reading reads its device's record, in the mempool and again in the block)."""
    return Device(key, *codec.decode(raw))


@dataclass(frozen=True, slots=True)
class BlockContext:
    """What a rule may know besides the state: the block being built or applied."""

    height: int
    time_ms: int
    genesis: Genesis
    # the authorities whose precommits certify the parent (the block's ``last_commit``)
    signers: tuple[bytes, ...] = ()


class State:
    """Typed reads and writes over a base key-value reader, with a write overlay."""

    def __init__(self, base: Callable[[bytes], bytes | None]) -> None:
        self._base = base
        self._writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key]
        return self._base(key)

    def get_value(self, key: bytes) -> Any:
        raw = self.get(key)
        return None if raw is None else codec.decode(raw)

    def put_value(self, key: bytes, value: Any) -> None:
        self._writes[key] = codec.encode(value)

    def delete(self, key: bytes) -> None:
        self._writes[key] = None

    def changes(self) -> dict[bytes, bytes | None]:
        """Every write since this overlay was made (``None`` = delete)."""
        return dict(self._writes)

    # typed accessors -----------------------------------------------------------------

    def authorities(self) -> tuple[bytes, ...]:
        value = self.get_value(K_AUTHORITIES)
        return tuple(value) if value else ()

    def set_authorities(self, authorities: tuple[bytes, ...]) -> None:
        self.put_value(K_AUTHORITIES, list(authorities))

    def device(self, key: bytes) -> Device | None:
        raw = self.get(b"d" + key)
        return None if raw is None else _device(key, raw)

    def put_device(self, device: Device) -> None:
        self.put_value(b"d" + device.key, [
            device.patient, device.device_class, device.manufacturer, device.status,
            device.admitted_height, device.successor,
        ])

    def last_seq(self, device: bytes) -> int:
        """The highest sequence number the device used (0: none)."""
        return window.highest(self.get(b"q" + device))

    def seq_record(self, device: bytes) -> bytes | None:
        """The device's anti-replay window as stored (see :mod:`.window`)."""
        return self.get(b"q" + device)

    def set_seq_record(self, device: bytes, record: bytes) -> None:
        self._writes[b"q" + device] = record

    def pending_admission(self, device: bytes) -> list[Any] | None:
        return self.get_value(b"p" + device)

    def grant(self, patient: bytes, grantee: bytes, scope: str) -> list[Any] | None:
        return self.get_value(b"g" + patient + grantee + scope.encode())

    def handoffs(self) -> list[list[Any]]:
        """``[height, next authorities]`` for each height whose next block is certified by
        another authority set, oldest first."""
        return self.get_value(K_HANDOFFS) or []

    def scheduled_changes(self) -> list[list[Any]]:
        return self.get_value(K_SCHEDULED) or []

    def last_certified(self, authority: bytes) -> int:
        raw = self.get(K_ONLINE + authority)
        return -1 if raw is None else int.from_bytes(raw, "big")

    def set_last_certified(self, authority: bytes, height: int) -> None:
        self._writes[K_ONLINE + authority] = height.to_bytes(8, "big")

    def online(self, height: int) -> set[bytes]:
        """The authorities that certified one of the last :data:`ONLINE_WINDOW_BLOCKS`
        blocks before ``height`` (genesis authorities count from block 0; one that joined
        later only from its first precommit in a certificate)."""
        since = max(0, height - ONLINE_WINDOW_BLOCKS)  # -1: never certified
        return {a for a in self.authorities() if self.last_certified(a) >= since}

    def seen(self, tx_id: bytes) -> bool:
        return self.get(b"x" + tx_id) is not None

    def mark_seen(self, tx_id: bytes) -> None:
        self._writes[b"x" + tx_id] = b""


def evidence_key(authority: bytes, height: int, round_: int, vote_type: int) -> bytes:
    return (K_EVIDENCE + authority + height.to_bytes(8, "big") + round_.to_bytes(8, "big")
            + bytes([vote_type]))


def decode_evidence_record(key: bytes, value: bytes) -> dict[str, Any]:
    """A readable view of one ``e`` record (for the API and ``status``)."""
    evidence_hash, included, reporter = codec.decode(value)
    return {
        "authority": key[1:33].hex(), "height": int.from_bytes(key[33:41], "big"),
        "round": int.from_bytes(key[41:49], "big"),
        "type": "prevote" if key[49] == 1 else "precommit",
        "evidence_hash": evidence_hash.hex(), "included_at": included,
        "reporter": reporter.hex(),
    }


def genesis_state(genesis: Genesis) -> dict[bytes, bytes | None]:
    """The state changes block 0 commits: the genesis authority set."""
    state = State(lambda key: None)
    state.set_authorities(genesis.authorities)
    for authority in genesis.authorities:
        state.set_last_certified(authority, 0)
    return state.changes()


def authorities_at(state: State, height: int) -> tuple[bytes, ...]:
    """The authorities of block ``height`` once the changes due by then apply (no writes).

    Called with the state after block ``height - 1`` this is the set that certifies
    ``height``; a vote that passes in block ``h`` takes effect at ``h + 2``, so the set of
    the next block is always known when a block is made."""
    authorities = list(state.authorities())
    for due, subject, add in state.scheduled_changes():
        if due <= height:
            _change(authorities, subject, add, keep_last=True)
    return tuple(authorities)


def _change(authorities: list[bytes], subject: bytes, add: bool, *, keep_last: bool) -> None:
    """Add or remove ``subject`` in place (``keep_last``: never remove the last one)."""
    if add and subject not in authorities:
        authorities.append(subject)
    elif not add and subject in authorities and (len(authorities) > 1 or not keep_last):
        authorities.remove(subject)


def begin_block(state: State, ctx: BlockContext) -> None:
    """Start block ``ctx.height``: record who certified its parent, and apply the authority
    changes scheduled for it."""
    for signer in ctx.signers:
        state.set_last_certified(signer, ctx.height - 1)
    pending = state.scheduled_changes()
    if not any(c[0] <= ctx.height for c in pending):
        return
    before = state.authorities()
    after = authorities_at(state, ctx.height)
    # one that joins is online from its first precommit in a certificate, not before
    for subject in set(before) - set(after):
        state.delete(K_ONLINE + subject)
    if after != before:
        state.set_authorities(after)
        state.put_value(K_HANDOFFS, [*state.handoffs(), [ctx.height - 1, list(after)]])
    rest = [c for c in pending if c[0] > ctx.height]
    if rest:
        state.put_value(K_SCHEDULED, rest)
    else:
        state.delete(K_SCHEDULED)


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
            _vote(state, body, ctx)
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
            _evidence(state, body, ctx)
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


def _require_authority(state: State, key: bytes) -> None:
    if key not in state.authorities():
        raise e.NotAuthorityError(f"{key.hex()[:16]} is not an authority")


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
    _require_authority(state, a.authority)
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
        if pending is not None:
            state.delete(b"p" + a.device)
    else:
        state.put_value(b"p" + a.device,
                         [approvers, a.patient, a.device_class, a.manufacturer])


def _revoke(state: State, r: RevokeDevice) -> None:
    device = _active_device(state, r.device)
    if r.by != device.patient and r.by not in state.authorities():
        raise e.NotPermittedError("only an authority or the device's patient may revoke it")
    state.put_device(replace(device, status=REVOKED))


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
    _require_authority(state, m.authority)
    if state.device(m.device) is None:
        raise e.UnknownDeviceError(f"device {m.device.hex()[:16]} is not admitted")
    state.put_value(b"m" + m.device, [m.action, m.note, m.ts_ms, ctx.height])


def _vote(state: State, v: AuthorityVote, ctx: BlockContext) -> None:
    authorities = state.authorities()
    _require_authority(state, v.authority)
    if v.add and v.subject in authorities:
        raise e.GovernanceError(f"{v.subject.hex()[:16]} is already an authority")
    if not v.add and v.subject not in authorities:
        raise e.GovernanceError(f"{v.subject.hex()[:16]} is not an authority")
    if v.add and state.device(v.subject) is not None:
        raise e.KeyInUseError("a device key cannot become an authority")
    key = K_VOTES + v.subject + (b"\x01" if v.add else b"\x00")
    voters = [a for a in (state.get_value(key) or []) if a in authorities]
    if v.authority not in voters:
        voters.append(v.authority)
    elif len(voters) * 2 <= len(authorities):
        raise e.DuplicateVoteError(f"{v.authority.hex()[:16]} already voted on this change")
    # else: the set shrank since these votes were cast and they are now a majority; the
    # repeated vote carries the change (without it, no remaining voter could ever pass it)
    if len(voters) * 2 <= len(authorities):
        state.put_value(key, voters)
        return
    scheduled = state.scheduled_changes()
    _check_quorum_after(state, [*scheduled, [0, v.subject, v.add]], ctx, v)
    state.delete(key)
    state.put_value(K_SCHEDULED,
                     [*scheduled, [ctx.height + GOVERNANCE_DELAY_BLOCKS, v.subject, v.add]])


def _evidence(state: State, r: ReportEvidence, ctx: BlockContext) -> None:
    _require_authority(state, r.reporter)
    evidence = r.proof
    who = evidence.validator.hex()[:16]
    if evidence.height > ctx.height:
        raise e.InvalidEvidenceRuleError(
            f"evidence is of height {evidence.height}, above this block's {ctx.height}")
    if evidence.validator not in state.authorities():
        raise e.InvalidEvidenceRuleError(f"{who} is not a current authority")
    key = evidence_key(evidence.validator, evidence.height, evidence.round,
                       int(evidence.type))
    if state.get(key) is not None:
        raise e.DuplicateEvidenceError(
            f"{who}'s equivocation at height {evidence.height} round {evidence.round} "
            "is already on the ledger")
    state.put_value(key, [evidence.hash, ctx.height, r.reporter])


def _check_quorum_after(state: State, changes: list[list[Any]], ctx: BlockContext,
                        v: AuthorityVote) -> None:
    """Refuse a change after which the authorities online could not reach a quorum.

    Online: certified one of the last :data:`ONLINE_WINDOW_BLOCKS` blocks. The authority
    this vote adds cannot have certified anything yet; the ledger cannot know whether its
    node runs, so it counts as online (the CLI checks that it is a connected peer), but
    only while no other authority is in that state: an earlier addition that has not
    certified a block yet (scheduled, or joined and silent) is offline, and then this
    one is not counted either. One unproven newcomer at a time: two additions of keys
    that never run cannot both pass.
    """
    after = list(state.authorities())
    for _, subject, add in changes:
        _change(after, subject, add, keep_last=False)
    if not after:
        raise e.GovernanceError("this vote would remove the last authority")
    online_now = state.online(ctx.height)
    unproven = [a for a in after if a != v.subject and state.last_certified(a) < 0]
    online = [a for a in after
              if a in online_now or (v.add and a == v.subject and not unproven)]
    need = quorum(len(after))
    if len(online) < need:
        waiting = (f" ({len(unproven)} added before has not certified a block yet, so the "
                   "one being added is not counted: add it once they sign)"
                   if v.add and unproven else "")
        raise e.GovernanceError(
            f"after this change {len(after)} authorities would need {need} precommits per "
            f"block, but only {len(online)} of them certified one of the last "
            f"{ONLINE_WINDOW_BLOCKS} blocks{waiting}; bring the offline authorities back "
            "(or remove them first)")


def _grant(state: State, g: Grant, ctx: BlockContext) -> None:
    if g.grantee == g.patient:
        raise e.NotPermittedError("a patient does not need a grant for their own records")
    if g.expires_ms <= ctx.time_ms:
        raise e.ExpiredGrantError(f"grant expires at {g.expires_ms}, before the block time")
    state.put_value(b"g" + g.patient + g.grantee + g.scope.encode(),
                     [g.expires_ms, g.wrapped_key, ctx.height])


def _revoke_grant(state: State, r: RevokeGrant) -> None:
    if state.grant(r.patient, r.grantee, r.scope) is None:
        raise e.UnknownGrantError(f"no grant of scope {r.scope!r} to {r.grantee.hex()[:16]}")
    state.delete(b"g" + r.patient + r.grantee + r.scope.encode())
