"""Admission's message kinds: transactions pushed, announced and requested by id, and a
compact block's transactions requested by index (:mod:`.assembly`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..core import fields as f
from ..core.block import MAX_IDS_PER_MESSAGE
from ..p2p.messages import list_of, message
from ..p2p.ratelimit import Rate

MAX_TXS_PER_MESSAGE = 4096  # transactions in one Txs message
TXS_MESSAGE_BYTES = 1024 * 1024  # transaction bytes in one Txs message; more are split


@message
@dataclass(frozen=True, slots=True)
class Txs:
    """Full transactions (a batch). ``admitted_ms``: for a push of transactions the sender
    admitted from its clients, its wall clock (ms) when it admitted the oldest of them;
    0 otherwise (an answer to a request). The receiver times delivery by it
    (``delivery_delay_ms``), meaningful between nodes whose clocks agree."""

    KIND: ClassVar[int] = 5
    CHECKS: ClassVar[tuple[f.Check, ...]] = (list_of(f.max_bytes(8192), MAX_TXS_PER_MESSAGE),
                                             f.u64)
    txs: list[bytes]
    admitted_ms: int = 0


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


# How often one peer may send each request kind (see :mod:`iomtnode.p2p.ratelimit`).
# TxRequest: an honest peer asks once per TxAnnounce it gets (announcements are flushed every
# 5 ms: at most 200 a second, a few more when a flush holds over 10,000 ids), once per
# reconciliation batch (every 20 ms) and for retries (every 0.5 s): under 300 a second; the
# ids it may have looked up are bounded apart (reconcile.SERVE_IDS_PER_S).
TX_REQUEST_RATE = Rate(per_s=500, burst=2000)  # requests/s; burst: requests
# GetBlockTxs: an honest peer asks for the transactions it lacks of a proposal or a relayed
# block, once per block and source: two a block, so 200 a second allows a block every 10 ms.
GET_BLOCK_TXS_RATE = Rate(per_s=200, burst=1000)  # requests/s; burst: requests
