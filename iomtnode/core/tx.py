"""Transactions as bytes: a body's encoding and its checked decoding, and the signed
envelope around it. The kinds themselves (one frozen record each) are declared in
:mod:`.txkinds` and imported from here by the rest of the node.

Wire form of a signed transaction::

    encode([body, signature])             body = encode([KIND, field, field, ...])
    encode([body, signature, sidecar])    with its sidecar

The *leaf* ``encode([body, signature])`` is what a block's Merkle root and a receipt
commit to. A sidecar (a reading's sealed payload, a grant's or an epoch's wrapped keys)
travels beside it in the same envelope and is checked against the hash its body holds
(:mod:`.payload`), but no hash of the chain covers it: a node may erase it and every block
hash and receipt stays valid.

The body is kept as the exact bytes that were hashed and signed, so a received
transaction is never re-encoded: its id is ``blake2b256(body)`` and its signature covers
``domain | chain id | id`` (see :mod:`iomtnode.core.crypto`). Replay is impossible:
readings carry a per-device sequence number, each usable once (an anti-replay window, see
:mod:`iomtnode.core.window`), every other kind either
is idempotent by its content (an admission) or carries a nonce and is rejected when its
id has been seen (see :mod:`iomtnode.core.state`).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from . import codec, merkle
from . import fields as f
from .crypto import KEY_BYTES, BadSignatureError, SigningKey, blake2b256, verify
from .evidence import InvalidEvidenceError
from .sidecar import (
    SidecarError,
    UnpaddedSidecarError,
    check_sidecar,
    has_sidecar,
)
from .txkinds import (
    FORWARD,
    HISTORY,
    KIND_NAMES,
    MAX_GRANTEES,
    MAX_NOTE_BYTES,
    MAX_WRAPPED_KEY_BYTES,
    TX_TYPES,
    AdmitDevice,
    AuditAnchor,
    AuthorityVote,
    DeviceMaintenance,
    EpochAnnounce,
    Erase,
    Grant,
    MalformedTxError,
    Reading,
    ReportEvidence,
    RevokeDevice,
    RevokeGrant,
    RotateDeviceKey,
    TxBody,
)

__all__ = [  # the kinds are declared in .txkinds; the node imports them from here
    "FORWARD", "HISTORY", "KIND_NAMES", "MAX_BODY_BYTES", "MAX_GRANTEES", "MAX_NOTE_BYTES",
    "MAX_TX_BYTES", "MAX_WRAPPED_KEY_BYTES", "TX_TYPES", "AdmitDevice", "AuditAnchor",
    "AuthorityVote", "DeviceMaintenance", "EpochAnnounce", "Erase", "Grant",
    "MalformedTxError", "Reading", "ReportEvidence", "RevokeDevice", "RevokeGrant",
    "RotateDeviceKey", "SidecarError", "SignedTx", "TxBody", "UnpaddedSidecarError",
    "body_fields", "decode_body", "decode_tx", "encode_body", "has_sidecar", "leaf_hash_of",
    "leaf_of", "sign_tx", "stripped", "tx_to_json", "with_sidecar",
]

MAX_BODY_BYTES = 4096  # a signed transaction's body
MAX_TX_BYTES = 8192  # a whole signed transaction on the wire, with its sidecar


def body_fields(body: TxBody) -> list[Any]:
    return [getattr(body, name) for name in body.__struct_fields__]


def encode_body(body: TxBody) -> bytes:
    return codec.encode([body.KIND, *body_fields(body)])


class _ReadingWire(msgspec.Struct, array_like=True, tag=Reading.KIND):
    """A reading body as msgspec decodes it in one C call, with :class:`Reading`'s checks
    as constraints. Only the fast path of
    :func:`decode_body`: what it refuses goes to the general decoder, which says why."""

    device: Annotated[bytes, msgspec.Meta(min_length=KEY_BYTES, max_length=KEY_BYTES)]
    seq: Annotated[int, msgspec.Meta(ge=0)]  # msgpack holds no integer above 2^64 - 1
    ts_ms: Annotated[int, msgspec.Meta(ge=0)]
    epoch: Annotated[int, msgspec.Meta(ge=0)]
    size_class: Annotated[int, msgspec.Meta(ge=0, le=2)]
    commitment: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


_READING_HEADER = bytes([0x90 + 1 + len(msgspec.structs.fields(_ReadingWire)), Reading.KIND])
_reading_decoder = msgspec.msgpack.Decoder(_ReadingWire)
_reading_encoder = msgspec.msgpack.Encoder()


def _reading(data: bytes) -> Reading | None:
    """The reading in ``data`` if it decodes under :class:`_ReadingWire`'s constraints and
    ``data`` is exactly its canonical encoding; else None. Readings are nearly every
    transaction a node decodes; this takes about a third of the general path's time."""
    try:
        wire = _reading_decoder.decode(data)
    except (msgspec.MsgspecError, ValueError):  # ValueError: a string that is not UTF-8
        return None
    if _reading_encoder.encode(wire) != data:
        return None
    return Reading(wire.device, wire.seq, wire.ts_ms, wire.epoch, wire.size_class,
                   wire.commitment)


def decode_body(data: bytes) -> TxBody:
    """Decode and check a transaction body. Raises :class:`MalformedTxError`."""
    if data[:2] == _READING_HEADER and (reading := _reading(data)) is not None:
        return reading
    return _decode_any_body(data)


def _decode_any_body(data: bytes) -> TxBody:
    """The general path of :func:`decode_body`: every kind, and the precise reason."""
    try:
        value = codec.decode(data, max_bytes=MAX_BODY_BYTES)
    except codec.DecodeError as exc:
        raise MalformedTxError(f"transaction body: {exc}") from None
    try:
        body = f.tagged_record(value, TX_TYPES, "transaction", KIND_NAMES.__getitem__)
        if hasattr(body, "check"):
            body.check()
    except f.FieldError as exc:
        raise MalformedTxError(str(exc)) from None
    return body


class SignedTx(msgspec.Struct, frozen=True, gc=False):
    """A transaction body with its signature, as received or as made.

    ``raw`` is the exact wire form (with the sidecar, if it has one), ``id`` the hash of
    the body bytes, ``leaf`` what a block's Merkle root commits to (the wire form without
    the sidecar). Construct with :func:`decode_tx` (untrusted bytes) or :func:`sign_tx` (a
    local key).
    """

    body: TxBody
    body_bytes: bytes
    signature: bytes
    raw: bytes
    id: bytes
    sidecar: bytes = b""
    leaf: bytes = b""  # b"": the same as ``raw`` (no sidecar)

    @property
    def leaf_bytes(self) -> bytes:
        return self.leaf or self.raw

    def verify(self, chain_id: str) -> None:
        """Raise :class:`~iomtnode.core.crypto.BadSignatureError` unless the signer signed it
        (and, for evidence, unless both of its votes are validly signed)."""
        verify(self.body.signer, self.body.DOMAIN, chain_id, self.id, self.signature)
        if isinstance(self.body, ReportEvidence):
            try:
                self.body.proof.verify(chain_id)
            except InvalidEvidenceError as exc:
                raise BadSignatureError(str(exc)) from None

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[type(self.body)]


def sign_tx(body: TxBody, key: SigningKey, chain_id: str, sidecar: bytes = b"") -> SignedTx:
    """Sign ``body`` with ``key`` (which must be the body's signer) for ``chain_id``, with
    its ``sidecar`` beside it (checked against the body)."""
    if key.public != body.signer:
        raise ValueError(f"{KIND_NAMES[type(body)]} must be signed by its signer field's key")
    body_bytes = encode_body(body)
    decode_body(body_bytes)  # refuse to sign what every node would refuse to accept
    tx_id = blake2b256(body_bytes)
    signature = key.sign(body.DOMAIN, chain_id, tx_id)
    leaf = codec.encode([body_bytes, signature])
    return with_sidecar(SignedTx(body, body_bytes, signature, leaf, tx_id), sidecar)


def with_sidecar(tx: SignedTx, sidecar: bytes) -> SignedTx:
    """``tx`` with ``sidecar`` beside it; raises :class:`SidecarError` if the body's hash
    of it does not match (b"": ``tx`` without one)."""
    if not sidecar:
        return stripped(tx)
    check_sidecar(tx.body, sidecar)
    raw = codec.encode([tx.body_bytes, tx.signature, sidecar])
    return SignedTx(tx.body, tx.body_bytes, tx.signature, raw, tx.id, sidecar, tx.leaf_bytes)


def stripped(tx: SignedTx) -> SignedTx:
    """``tx`` without its sidecar (what is left of an erased reading)."""
    if not tx.sidecar:
        return tx
    return SignedTx(tx.body, tx.body_bytes, tx.signature, tx.leaf, tx.id)


_body_field = f.max_bytes(MAX_BODY_BYTES)
_sidecar_field = f.max_bytes(MAX_TX_BYTES)
_SIGNATURE_HEADER = b"\xc4\x40"  # msgpack bin 8 of 64 bytes


def _bin(raw: bytes, at: int) -> tuple[int, int] | None:
    """(start, end) of the canonical msgpack bin 8 or bin 16 at ``raw[at]``, else None."""
    if raw[at:at + 1] == b"\xc4" and len(raw) > at + 1:
        start, size = at + 2, raw[at + 1]
    elif raw[at:at + 1] == b"\xc5" and len(raw) > at + 2:
        start, size = at + 3, int.from_bytes(raw[at + 1:at + 3], "big")
        if size < 256:
            return None
    else:
        return None
    return start, start + size


def _envelope(raw: bytes) -> tuple[bytes, bytes, bytes] | None:
    """``(body, signature, sidecar)`` if ``raw`` is exactly the canonical encoding of
    ``[body bytes, 64 signature bytes]`` or ``[body, signature, sidecar]``: an array
    header, the body as bin 8 (under 256 bytes) or bin 16 (256 bytes or more), bin 8 of 64
    bytes, then the sidecar as bin 8 or 16; else None, and the general decoder says what
    is wrong. Every transaction is decoded once per node, and this saves a general decode
    and its re-encoding check."""
    if len(raw) < 69 or raw[0] not in (0x92, 0x93):  # 3 header bytes + 66 of signature
        return None
    body = _bin(raw, 1)
    if body is None:
        return None
    start, end = body
    if raw[end:end + 2] != _SIGNATURE_HEADER or len(raw) < end + 66:
        return None
    signature = raw[end + 2:end + 66]
    if raw[0] == 0x92:
        return (raw[start:end], signature, b"") if end + 66 == len(raw) else None
    side = _bin(raw, end + 66)
    if side is None or side[1] != len(raw) or side[0] == side[1]:
        return None
    return raw[start:end], signature, raw[side[0]:]


def _without_sidecar(raw: bytes, sidecar: bytes) -> bytes:
    """The canonical envelope ``raw`` of three elements as the two-element leaf: a 2-array
    header, then the body and signature bytes exactly as received."""
    return b"\x92" + raw[1:len(raw) - len(sidecar) - (2 if len(sidecar) < 256 else 3)]


def leaf_of(raw: bytes) -> bytes:
    """The leaf of a stored transaction's wire form (its sidecar dropped) without decoding its
    body. A two-element envelope is its own leaf and is returned as it is (stored blocks were
    checked when committed); any other form is decoded, which raises
    :class:`MalformedTxError` for bytes that are not a transaction."""
    if raw[:1] == b"\x92":
        return raw
    parts = _envelope(raw)
    if parts is None:
        return decode_tx(raw).leaf_bytes
    return _without_sidecar(raw, parts[2])


def leaf_hash_of(raw: bytes) -> bytes:
    """``merkle.leaf_hash(leaf_of(raw))`` for any ``raw``, hashing a canonical three-element
    envelope's body and signature where they stand instead of splitting it first (the checks
    are :func:`_envelope`'s, inline: a block's tree hashes 10,000 of them)."""
    n = len(raw)
    if n >= 69 and raw[0] == 0x93:
        if raw[1] == 0xC4:  # body as bin 8
            end = 69 + raw[2]  # the signature's end: the leaf is the array up to here
        elif raw[1] == 0xC5 and (size := raw[2] << 8 | raw[3]) >= 256:  # bin 16
            end = 70 + size
        else:
            end = 0
        if end and raw[end - 66:end - 64] == _SIGNATURE_HEADER and end + 1 < n:
            side = n - end  # the sidecar, as bin 8 or bin 16 of at least 256 bytes
            if (raw[end] == 0xC4 and side - 2 == raw[end + 1] > 0) or (
                    raw[end] == 0xC5 and side > 2
                    and side - 3 == (raw[end + 1] << 8 | raw[end + 2]) >= 256):
                return merkle.leaf_hash(b"\x92" + raw[1:end])
    return merkle.leaf_hash(leaf_of(raw))


def decode_tx(raw: bytes, *, complete: bool = False) -> SignedTx:
    """Decode a signed transaction from untrusted bytes (its signature is not checked here).

    A sidecar must match the hash its body holds; with ``complete`` (a transaction
    submitted or gossiped, not one in a block) it must also be there if the kind has one.
    Raises :class:`MalformedTxError` (:class:`SidecarError` for the sidecar) with the reason.
    """
    raw = bytes(raw)
    parts = _envelope(raw) if len(raw) <= MAX_TX_BYTES else None
    if parts is None:
        try:
            value = codec.decode(raw, max_bytes=MAX_TX_BYTES)
            if type(value) is not list or len(value) not in (2, 3):
                raise f.FieldError("transaction must be an array of 2 or 3 fields")
            body_bytes = _body_field("transaction.body", value[0])
            signature = f.signature("transaction.signature", value[1])
            sidecar = _sidecar_field("transaction.sidecar", value[2]) if len(value) == 3 else b""
            if len(value) == 3 and not sidecar:
                raise f.FieldError("transaction.sidecar is empty: leave it out instead")
        except (codec.DecodeError, f.FieldError) as exc:
            raise MalformedTxError(f"transaction: {exc}") from None
    else:
        body_bytes, signature, sidecar = parts
    body = decode_body(body_bytes)
    if sidecar:
        check_sidecar(body, sidecar)
        # the leaf is the envelope without its last element: a 2-array header, the body and
        # the signature bytes exactly as received (canonical, as the fast path checked)
        leaf = (_without_sidecar(raw, sidecar) if parts is not None
                else codec.encode([body_bytes, signature]))
        return SignedTx(body, body_bytes, signature, raw, blake2b256(body_bytes), sidecar, leaf)
    if complete and has_sidecar(body):
        raise UnpaddedSidecarError(
            f"a {KIND_NAMES[type(body)]} is submitted with its sealed sidecar beside it; "
            "none was sent")
    return SignedTx(body, body_bytes, signature, raw, blake2b256(body_bytes))


def tx_to_json(tx: SignedTx) -> dict[str, Any]:
    """A readable view of a transaction (bytes as hex); ``raw`` is the authoritative form."""
    view: dict[str, Any] = {"id": tx.id.hex(), "type": tx.kind_name}
    for name in tx.body.__struct_fields__:
        value = getattr(tx.body, name)
        if isinstance(value, bytes):
            value = value.hex()
        elif isinstance(value, list):  # an epoch's grantees: keys
            value = [item.hex() for item in value]
        view[name] = value
    view["signature"] = tx.signature.hex()
    view["raw"] = tx.leaf_bytes.hex()  # never the sidecar: it is served only with consent
    return view
