"""Transactions as bytes: a body's encoding and its checked decoding, and the signed
envelope around it. The kinds themselves (one frozen record each) are declared in
:mod:`.txkinds` and imported from here by the rest of the node.

Wire form of a signed transaction::

    encode([body, signature])     body = encode([KIND, field, field, ...])

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

from . import codec
from . import fields as f
from .crypto import HASH_BYTES, KEY_BYTES, BadSignatureError, SigningKey, blake2b256, verify
from .evidence import InvalidEvidenceError
from .txkinds import (
    KIND_NAMES,
    MAX_INLINE_PAYLOAD_BYTES,
    MAX_NOTE_BYTES,
    MAX_WRAPPED_KEY_BYTES,
    TX_TYPES,
    AdmitDevice,
    AuthorityVote,
    DeviceMaintenance,
    Grant,
    Reading,
    ReportEvidence,
    RevokeDevice,
    RevokeGrant,
    RotateDeviceKey,
    TxBody,
)

__all__ = [  # the kinds are declared in .txkinds; the node imports them from here
    "KIND_NAMES", "MAX_INLINE_PAYLOAD_BYTES", "MAX_NOTE_BYTES", "MAX_TX_BYTES",
    "MAX_WRAPPED_KEY_BYTES", "TX_TYPES", "AdmitDevice", "AuthorityVote", "DeviceMaintenance",
    "Grant", "MalformedTxError", "Reading", "ReportEvidence", "RevokeDevice", "RevokeGrant",
    "RotateDeviceKey", "SignedTx", "TxBody", "body_fields", "decode_body", "decode_tx",
    "encode_body", "sign_tx", "tx_to_json",
]

MAX_TX_BYTES = 4096  # a whole signed transaction on the wire


class MalformedTxError(ValueError):
    """Bytes that do not decode to a well-formed transaction (says which field and why)."""


def body_fields(body: TxBody) -> list[Any]:
    return [getattr(body, name) for name in body.__struct_fields__]


def encode_body(body: TxBody) -> bytes:
    return codec.encode([body.KIND, *body_fields(body)])


class _ReadingWire(msgspec.Struct, array_like=True, tag=Reading.KIND):
    """A reading body as msgspec decodes it in one C call, with :class:`Reading`'s checks
    as constraints (the payload-or-hash rule is checked after). Only the fast path of
    :func:`decode_body`: what it refuses goes to the general decoder, which says why."""

    device: Annotated[bytes, msgspec.Meta(min_length=KEY_BYTES, max_length=KEY_BYTES)]
    seq: Annotated[int, msgspec.Meta(ge=0)]  # msgpack holds no integer above 2^64 - 1
    ts_ms: Annotated[int, msgspec.Meta(ge=0)]
    kind: Annotated[str, msgspec.Meta(pattern=rf"^{f.IDENT_RE.pattern}\Z")]
    payload: Annotated[bytes, msgspec.Meta(max_length=MAX_INLINE_PAYLOAD_BYTES)]
    payload_hash: bytes


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
    if (len(wire.payload_hash) not in (0, HASH_BYTES)
            or bool(wire.payload) == bool(wire.payload_hash)
            or _reading_encoder.encode(wire) != data):
        return None
    return Reading(wire.device, wire.seq, wire.ts_ms, wire.kind, wire.payload,
                   wire.payload_hash)


def decode_body(data: bytes) -> TxBody:
    """Decode and check a transaction body. Raises :class:`MalformedTxError`."""
    if data[:2] == _READING_HEADER and (reading := _reading(data)) is not None:
        return reading
    return _decode_any_body(data)


def _decode_any_body(data: bytes) -> TxBody:
    """The general path of :func:`decode_body`: every kind, and the precise reason."""
    try:
        value = codec.decode(data, max_bytes=MAX_TX_BYTES)
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

    ``raw`` is the exact wire form, ``id`` the hash of the body bytes. Construct with
    :func:`decode_tx` (untrusted bytes) or :func:`sign_tx` (a local key).
    """

    body: TxBody
    body_bytes: bytes
    signature: bytes
    raw: bytes
    id: bytes

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


def sign_tx(body: TxBody, key: SigningKey, chain_id: str) -> SignedTx:
    """Sign ``body`` with ``key`` (which must be the body's signer) for ``chain_id``."""
    if key.public != body.signer:
        raise ValueError(f"{KIND_NAMES[type(body)]} must be signed by its signer field's key")
    body_bytes = encode_body(body)
    decode_body(body_bytes)  # refuse to sign what every node would refuse to accept
    tx_id = blake2b256(body_bytes)
    signature = key.sign(body.DOMAIN, chain_id, tx_id)
    raw = codec.encode([body_bytes, signature])
    return SignedTx(body, body_bytes, signature, raw, tx_id)


_body_field = f.max_bytes(MAX_TX_BYTES)
_SIGNATURE_HEADER = b"\xc4\x40"  # msgpack bin 8 of 64 bytes


def _envelope(raw: bytes) -> tuple[bytes, bytes] | None:
    """``(body, signature)`` if ``raw`` is exactly the canonical encoding of
    ``[body bytes, 64 signature bytes]``: a 2-array header, the body as bin 8 (under 256
    bytes) or bin 16 (256 bytes or more), then bin 8 of 64 bytes; else None, and the
    general decoder says what is wrong. Every transaction is decoded once per node, and
    this saves a general decode and its re-encoding check."""
    if len(raw) < 69 or raw[0] != 0x92:  # 3 header bytes + 66 of signature at least
        return None
    if raw[1] == 0xC4:
        start, size = 3, raw[2]
    elif raw[1] == 0xC5:
        start, size = 4, int.from_bytes(raw[2:4], "big")
        if size < 256:
            return None
    else:
        return None
    end = start + size
    if end + 66 != len(raw) or raw[end:end + 2] != _SIGNATURE_HEADER:
        return None
    return raw[start:end], raw[end + 2:]


def decode_tx(raw: bytes) -> SignedTx:
    """Decode a signed transaction from untrusted bytes (its signature is not checked here).

    Raises :class:`MalformedTxError` with the reason.
    """
    raw = bytes(raw)
    parts = _envelope(raw) if len(raw) <= MAX_TX_BYTES else None
    if parts is None:
        try:
            value = codec.decode(raw, max_bytes=MAX_TX_BYTES)
            f.record("transaction", value, 2)
            body_bytes = _body_field("transaction.body", value[0])
            signature = f.signature("transaction.signature", value[1])
        except (codec.DecodeError, f.FieldError) as exc:
            raise MalformedTxError(f"transaction: {exc}") from None
    else:
        body_bytes, signature = parts
    body = decode_body(body_bytes)
    return SignedTx(body, body_bytes, signature, raw, blake2b256(body_bytes))


def tx_to_json(tx: SignedTx) -> dict[str, Any]:
    """A readable view of a transaction (bytes as hex); ``raw`` is the authoritative form."""
    view: dict[str, Any] = {"id": tx.id.hex(), "type": tx.kind_name}
    for name in tx.body.__struct_fields__:
        value = getattr(tx.body, name)
        view[name] = value.hex() if isinstance(value, bytes) else value
    view["signature"] = tx.signature.hex()
    view["raw"] = tx.raw.hex()
    return view
