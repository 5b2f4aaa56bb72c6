"""Sync's message kinds: heads, whole blocks in ranges, and compact blocks relayed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..core import fields as f
from ..core.block import MAX_IDS_PER_MESSAGE
from ..p2p.messages import list_of, message, raw_value
from ..p2p.ratelimit import Rate

MAX_BLOCKS_PER_MESSAGE = 64  # blocks in one sync response


def _block_and_commit(name: str, value: object) -> list[bytes]:
    """Exactly ``[block bytes, commit bytes]`` (the reader unpacks each entry in two)."""
    pair = f.record(name, value, 2)
    raw_value(f"{name}[0]", pair[0])
    raw_value(f"{name}[1]", pair[1])
    return pair


@message
@dataclass(frozen=True, slots=True)
class Status:
    """The sender's head, sent when it changes (peers use it to decide to sync)."""

    KIND: ClassVar[int] = 13
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.u64, f.digest)
    height: int
    head_hash: bytes


@message
@dataclass(frozen=True, slots=True)
class GetBlocks:
    """Ask for up to ``count`` whole blocks from ``start`` (sync)."""

    KIND: ClassVar[int] = 11
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.u64, f.u64)
    start: int
    count: int


@message
@dataclass(frozen=True, slots=True)
class Blocks:
    """Whole blocks with their certificates, ``[[block, commit], ...]`` from ``start``."""

    KIND: ClassVar[int] = 12
    CHECKS: ClassVar[tuple[f.Check, ...]] = (f.u64, list_of(_block_and_commit,
                                                             MAX_BLOCKS_PER_MESSAGE))
    start: int
    blocks: list[list[bytes]]


@message
@dataclass(frozen=True, slots=True)
class CompactBlock:
    """A new final block as header + tx ids + its certificate; the receiver fills in txs."""

    KIND: ClassVar[int] = 8
    CHECKS: ClassVar[tuple[f.Check, ...]] = (
        f.max_bytes(1024), list_of(f.digest, MAX_IDS_PER_MESSAGE), raw_value, raw_value,
    )
    header: bytes
    tx_ids: list[bytes]
    last_commit: bytes
    commit: bytes


# How often one peer may send each request kind (see :mod:`iomtnode.p2p.ratelimit`).
# GetBlocks: a syncing peer has at most PARALLEL_PEERS (3) ranges of up to 64 blocks out at
# once and asks again when one is verified (a range of 32 empty blocks takes over 10 ms): a
# few dozen a second at most. Each answer is at most one frame read from the store.
GET_BLOCKS_RATE = Rate(per_s=100, burst=400)  # requests/s; burst: requests
# Status: honest nodes send one per connection (on connect); each may wake this node's sync.
STATUS_RATE = Rate(per_s=100, burst=400)  # messages/s; burst: messages
