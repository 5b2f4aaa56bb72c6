"""Peer-to-peer messages: the envelope, one decode point, and p2p's own kinds.

Every websocket binary frame on ``/p2p/v1`` is one envelope, ``encode([KIND, field, ...])``.
A message kind is a frozen dataclass with a ``KIND`` number and its field ``CHECKS``, declared
by the layer that owns it (:mod:`iomtnode.admission.messages`, :mod:`iomtnode.sync.messages`,
:mod:`iomtnode.consensus.messages`) with :func:`message`, which enters it in
:data:`MESSAGE_TYPES` (one type per kind number; a second type for a taken number is refused).
:func:`decode_message` turns untrusted bytes into a typed message of a declared kind or raises
:class:`ProtocolError` with the reason; the peer that sent it is penalised by the caller.
Messages carry other signed objects (transactions, blocks, certificates, peer records)
as their exact bytes; those are decoded and verified by the layer that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

from ..core import codec
from ..core import fields as f
from .ratelimit import Rate
from .records import MAX_ADDRESS_BYTES

# 5: Txs carry their sender's admission stamp; 4: TLS 1.3, the handshake bound to it;
# 3: one BlockTxs pair
PROTOCOL_VERSION = 5
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # one frame; larger frames are refused unread
MAX_RECORDS_PER_MESSAGE = 64  # peer records in one exchange
NONCE_BYTES = 32
CHANNEL_BINDING_BYTES = 32  # SHA-256 of the TLS server's certificate (RFC 5929)

MESSAGE_TYPES: dict[int, type[Any]] = {}  # kind number -> its type (filled by :func:`message`)

_T = TypeVar("_T", bound=type[Any])


def message(cls: _T) -> _T:
    """Declare the message kind ``cls`` (a class decorator): frames of ``cls.KIND`` decode to
    it. Raises ValueError if another type has that kind number already."""
    taken = MESSAGE_TYPES.setdefault(cls.KIND, cls)
    if taken is not cls:
        raise ValueError(f"message kind {cls.KIND} is {taken.__name__} already, "
                         f"not {cls.__name__}")
    return cls


class ProtocolError(ValueError):
    """A frame that is not a well-formed message of this protocol version."""


class UndecodableFrameError(ProtocolError):
    """A frame that is not one msgpack value within the codec's limits (the cheaper fault: a
    :class:`ProtocolError` of any other kind is well-formed msgpack that is not a message)."""


def list_of(check: f.Check, limit: int) -> f.Check:
    of_bytes = hasattr(check, "byte_range")  # checked in C loops (fields.bytes_items)

    def run(name: str, value: Any) -> list[Any]:
        if type(value) is not list:
            raise f.FieldError(f"{name} must be an array")
        if len(value) > limit:
            raise f.FieldError(f"{name} holds {len(value)} items, more than {limit}")
        if of_bytes and f.bytes_items(check, value):
            return value
        for i, item in enumerate(value):
            check(f"{name}[{i}]", item)
        return value

    return run


raw_value = f.max_bytes(codec.MAX_BIN_BYTES)  # signed bytes carried as they are
_nonce = f.exact_bytes(NONCE_BYTES)
_address = f.text(MAX_ADDRESS_BYTES)


@message
@dataclass(frozen=True, slots=True)
class Hello:
    """First message each side sends: who it is, which chain, and a fresh nonce to sign."""

    KIND: ClassVar[int] = 1
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.u64, f.text(64), f.digest, f.key, _nonce, f.u64, f.digest,
    )
    version: int
    chain_id: str
    genesis_hash: bytes
    node_id: bytes
    nonce: bytes
    height: int
    head_hash: bytes


@message
@dataclass(frozen=True, slots=True)
class Auth:
    """Second message: a signature over the other side's nonce, the connection's channel
    binding and the sender's end of it, and what we observe of the other side.

    ``binding`` is the channel binding the sender saw and ``dialed`` whether it dialed (the TLS
    client); both are signed, and sent so that a handshake relayed from another connection is
    refused with that reason. ``record`` is the sender's signed
    :class:`~iomtnode.p2p.records.PeerRecord` bytes.
    """

    KIND: ClassVar[int] = 2
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.signature, f.exact_bytes(CHANNEL_BINDING_BYTES), f.boolean, _address,
        f.max_bytes(2048),
    )
    signature: bytes
    binding: bytes
    dialed: bool
    observed_address: str
    record: bytes


@message
@dataclass(frozen=True, slots=True)
class Ping:
    KIND: ClassVar[int] = 3
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.u64,)
    nonce: int


@message
@dataclass(frozen=True, slots=True)
class Pong:
    KIND: ClassVar[int] = 4
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.u64,)
    nonce: int


@message
@dataclass(frozen=True, slots=True)
class PeerRecords:
    """Signed peer records (peer exchange); sent on connect, periodically and on a move."""

    KIND: ClassVar[int] = 14
    CHECKS: ClassVar[tuple[f.Check, ...]] = (list_of(f.max_bytes(2048), MAX_RECORDS_PER_MESSAGE),)
    records: list[bytes]


@message
@dataclass(frozen=True, slots=True)
class GetPeers:
    KIND: ClassVar[int] = 15
    CHECKS: ClassVar[tuple[f.Check, ...]] = ()


# How often one peer may send each request kind (see :mod:`.ratelimit`). Honest peers send
# PeerRecords on connect, every PEX_INTERVAL_S (30 s) and when they move; nobody asks with
# GetPeers today. Each PeerRecords costs up to 64 signature checks (replays only a lookup).
PEER_RECORDS_RATE = Rate(per_s=1.0, burst=10)  # messages/s; burst: messages
GET_PEERS_RATE = Rate(per_s=1.0, burst=5)  # requests/s (each answered with 64 records)

Message = Any  # an instance of a declared kind (see :func:`message`)


def encode_message(msg: Message) -> bytes:
    return codec.encode([msg.KIND, *(getattr(msg, fld.name) for fld in fields(msg))])


def message_name(msg: Message | type[Any]) -> str:
    cls = msg if isinstance(msg, type) else type(msg)
    return cls.__name__


def decode_message(frame: bytes) -> Message:
    """Decode one frame from a peer. Raises :class:`ProtocolError` naming what is wrong
    (:class:`UndecodableFrameError` when it is not msgpack within the codec's limits)."""
    try:
        value = codec.decode_envelope(frame, max_bytes=MAX_MESSAGE_BYTES)
    except codec.DecodeError as exc:
        raise UndecodableFrameError(f"undecodable frame: {exc}") from None
    try:
        return f.tagged_record(value, MESSAGE_TYPES, "message")
    except f.FieldError as exc:
        raise ProtocolError(str(exc)) from None
