"""Admission's message kinds: transactions pushed, announced and requested by id, and a
compact block's transactions requested by index (:mod:`.assembly`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..core import fields as f
from ..p2p.messages import MAX_IDS_PER_MESSAGE, list_of, message

MAX_TXS_PER_MESSAGE = 4096  # transactions in one Txs message


@message
@dataclass(frozen=True, slots=True)
class Txs:
    """Full transactions (a batch, flushed on size or after a few ms)."""

    KIND: ClassVar[int] = 5
    CHECKS: ClassVar[tuple[f.Check, ...]] = (list_of(f.max_bytes(8192), MAX_TXS_PER_MESSAGE),)
    txs: list[bytes]


@message
@dataclass(frozen=True, slots=True)
class TxAnnounce:
    """Ids of transactions the sender holds (relay is lazy: announce, then fetch)."""

    KIND: ClassVar[int] = 6
    CHECKS: ClassVar[tuple[f.Check, ...]] = (list_of(f.digest, MAX_IDS_PER_MESSAGE),)
    ids: list[bytes]


@message
@dataclass(frozen=True, slots=True)
class TxRequest:
    """Ask for announced transactions by id; answered with :class:`Txs`."""

    KIND: ClassVar[int] = 7
    CHECKS: ClassVar[tuple[f.Check, ...]] = (list_of(f.digest, MAX_IDS_PER_MESSAGE),)
    ids: list[bytes]


@message
@dataclass(frozen=True, slots=True)
class GetBlockTxs:
    """Ask for the transactions at ``indexes`` of the block ``block_hash`` (a proposed or a
    committed one); answered with one or more :class:`BlockTxs`."""

    KIND: ClassVar[int] = 9
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.digest, list_of(f.u64, MAX_IDS_PER_MESSAGE))
    block_hash: bytes
    indexes: list[int]


@message
@dataclass(frozen=True, slots=True)
class BlockTxs:
    """Transactions of the block ``block_hash``: ``txs[i]`` is the one at ``indexes[i]``.
    No indexes at all: the sender does not hold that block."""

    KIND: ClassVar[int] = 10
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.digest, list_of(f.u64, MAX_IDS_PER_MESSAGE),
        list_of(f.max_bytes(8192), MAX_IDS_PER_MESSAGE),
    )
    block_hash: bytes
    indexes: list[int]
    txs: list[bytes]
