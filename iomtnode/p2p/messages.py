"""Peer-to-peer messages: one frozen dataclass per kind, decoded in one place.

Every websocket binary frame on ``/p2p/v1`` is one envelope, ``encode([KIND, field, ...])``.
:func:`decode_message` turns untrusted bytes into a typed message or raises
:class:`ProtocolError` with the reason; the peer that sent it is penalised by the caller.
Messages carry other signed objects (transactions, blocks, certificates, peer records)
as their exact bytes; those are decoded and verified by the layer that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from ..consensus.votes import MAX_PROPOSAL_BYTES
from ..core import codec
from ..core import fields as f
from ..core.block import MAX_BLOCK_TXS
from ..core.vote import MAX_VOTE_BYTES
from .records import MAX_ADDRESS_BYTES

PROTOCOL_VERSION = 2  # 2: compact consensus proposals (kinds 16, 18, 19)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # one frame; larger frames are refused unread
MAX_TXS_PER_MESSAGE = 4096  # transactions in one Txs message
MAX_IDS_PER_MESSAGE = MAX_BLOCK_TXS  # ids in an announcement, request or compact block
MAX_BLOCKS_PER_MESSAGE = 64  # blocks in one sync response
MAX_RECORDS_PER_MESSAGE = 64  # peer records in one exchange
NONCE_BYTES = 32


class ProtocolError(ValueError):
    """A frame that is not a well-formed message of this protocol version."""


def _list_of(check: f.Check, limit: int) -> f.Check:
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


_raw = f.max_bytes(codec.MAX_BIN_BYTES)
_nonce = f.exact_bytes(NONCE_BYTES)
_address = f.text(MAX_ADDRESS_BYTES)


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


@dataclass(frozen=True, slots=True)
class Auth:
    """Second message: a signature over the other side's nonce, and what we observe of it.

    ``record`` is the sender's signed :class:`~iomtnode.p2p.records.PeerRecord` bytes.
    """

    KIND: ClassVar[int] = 2
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.signature, _address, f.max_bytes(2048))
    signature: bytes
    observed_address: str
    record: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    KIND: ClassVar[int] = 3
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.u64,)
    nonce: int


@dataclass(frozen=True, slots=True)
class Pong:
    KIND: ClassVar[int] = 4
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.u64,)
    nonce: int


@dataclass(frozen=True, slots=True)
class Txs:
    """Full transactions (a batch, flushed on size or after a few ms)."""

    KIND: ClassVar[int] = 5
    CHECKS: ClassVar[tuple[f.Check, ...]] = (_list_of(f.max_bytes(8192), MAX_TXS_PER_MESSAGE),)
    txs: list[bytes]


@dataclass(frozen=True, slots=True)
class TxAnnounce:
    """Ids of transactions the sender holds (relay is lazy: announce, then fetch)."""

    KIND: ClassVar[int] = 6
    CHECKS: ClassVar[tuple[f.Check, ...]] = (_list_of(f.digest, MAX_IDS_PER_MESSAGE),)
    ids: list[bytes]


@dataclass(frozen=True, slots=True)
class TxRequest:
    """Ask for announced transactions by id; answered with :class:`Txs`."""

    KIND: ClassVar[int] = 7
    CHECKS: ClassVar[tuple[f.Check, ...]] = (_list_of(f.digest, MAX_IDS_PER_MESSAGE),)
    ids: list[bytes]


@dataclass(frozen=True, slots=True)
class CompactBlock:
    """A new final block as header + tx ids + its certificate; the receiver fills in txs."""

    KIND: ClassVar[int] = 8
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.max_bytes(1024), _list_of(f.digest, MAX_IDS_PER_MESSAGE), _raw, _raw,
    )
    header: bytes
    tx_ids: list[bytes]
    last_commit: bytes
    commit: bytes


@dataclass(frozen=True, slots=True)
class GetBlockTxs:
    """Ask for the transactions at ``indexes`` of the block ``block_hash``."""

    KIND: ClassVar[int] = 9
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.digest, _list_of(f.u64, MAX_IDS_PER_MESSAGE))
    block_hash: bytes
    indexes: list[int]


@dataclass(frozen=True, slots=True)
class BlockTxs:
    KIND: ClassVar[int] = 10
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.digest, _list_of(f.max_bytes(8192),
                                                                MAX_IDS_PER_MESSAGE))
    block_hash: bytes
    txs: list[bytes]


@dataclass(frozen=True, slots=True)
class GetBlocks:
    """Ask for up to ``count`` whole blocks from ``start`` (sync)."""

    KIND: ClassVar[int] = 11
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.u64, f.u64)
    start: int
    count: int


@dataclass(frozen=True, slots=True)
class Blocks:
    """Whole blocks with their certificates, ``[[block, commit], ...]`` from ``start``."""

    KIND: ClassVar[int] = 12
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.u64, _list_of(_list_of(_raw, 2),
                                                             MAX_BLOCKS_PER_MESSAGE))
    start: int
    blocks: list[list[bytes]]


@dataclass(frozen=True, slots=True)
class Status:
    """The sender's head, sent when it changes (peers use it to decide to sync)."""

    KIND: ClassVar[int] = 13
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.u64, f.digest)
    height: int
    head_hash: bytes


@dataclass(frozen=True, slots=True)
class PeerRecords:
    """Signed peer records (peer exchange); sent on connect, periodically and on a move."""

    KIND: ClassVar[int] = 14
    CHECKS: ClassVar[tuple[f.Check, ...]] = (_list_of(f.max_bytes(2048), MAX_RECORDS_PER_MESSAGE),)
    records: list[bytes]


@dataclass(frozen=True, slots=True)
class GetPeers:
    KIND: ClassVar[int] = 15
    CHECKS: ClassVar[tuple[f.Check, ...]] = ()


@dataclass(frozen=True, slots=True)
class ConsensusProposal:
    """A signed consensus proposal (its exact bytes) with its block in compact form: the
    header, the ids of the transactions and the parent's certificate. The receiver fills
    the transactions in from its mempool and fetches the missing ones (:class:`GetProposalTxs`)."""

    KIND: ClassVar[int] = 16
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.max_bytes(MAX_PROPOSAL_BYTES), f.max_bytes(1024),
        _list_of(f.digest, MAX_IDS_PER_MESSAGE), _raw,
    )
    proposal: bytes
    header: bytes
    tx_ids: list[bytes]
    last_commit: bytes


@dataclass(frozen=True, slots=True)
class ConsensusVote:
    """A signed prevote or precommit (its exact bytes)."""

    KIND: ClassVar[int] = 17
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.max_bytes(MAX_VOTE_BYTES),)
    vote: bytes


@dataclass(frozen=True, slots=True)
class GetProposalTxs:
    """Ask for the transactions at ``indexes`` of the proposed block ``block_hash``;
    answered with one or more :class:`ProposalTxs`."""

    KIND: ClassVar[int] = 18
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.digest, _list_of(f.u64, MAX_IDS_PER_MESSAGE))
    block_hash: bytes
    indexes: list[int]


@dataclass(frozen=True, slots=True)
class ProposalTxs:
    """Transactions of the proposed block ``block_hash``: ``txs[i]`` is the one at
    ``indexes[i]``. No indexes at all: the sender does not hold that block."""

    KIND: ClassVar[int] = 19
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.digest, _list_of(f.u64, MAX_IDS_PER_MESSAGE),
        _list_of(f.max_bytes(8192), MAX_IDS_PER_MESSAGE),
    )
    block_hash: bytes
    indexes: list[int]
    txs: list[bytes]


Message = (
    Hello | Auth | Ping | Pong | Txs | TxAnnounce | TxRequest | CompactBlock | GetBlockTxs
    | BlockTxs | GetBlocks | Blocks | Status | PeerRecords | GetPeers | ConsensusProposal
    | ConsensusVote | GetProposalTxs | ProposalTxs
)
MESSAGE_TYPES: dict[int, type[Any]] = {
    t.KIND: t
    for t in (Hello, Auth, Ping, Pong, Txs, TxAnnounce, TxRequest, CompactBlock, GetBlockTxs,
              BlockTxs, GetBlocks, Blocks, Status, PeerRecords, GetPeers, ConsensusProposal,
              ConsensusVote, GetProposalTxs, ProposalTxs)
}


def encode_message(msg: Message) -> bytes:
    return codec.encode([msg.KIND, *(getattr(msg, fld.name) for fld in fields(msg))])


def message_name(msg: Message | type[Any]) -> str:
    cls = msg if isinstance(msg, type) else type(msg)
    return cls.__name__


def decode_message(frame: bytes) -> Message:
    """Decode one frame from a peer. Raises :class:`ProtocolError` naming what is wrong."""
    try:
        value = codec.decode_envelope(frame, max_bytes=MAX_MESSAGE_BYTES)
    except codec.DecodeError as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from None
    try:
        return f.tagged_record(value, MESSAGE_TYPES, "message")
    except f.FieldError as exc:
        raise ProtocolError(str(exc)) from None
