"""The p2p service's figures, as one frozen record (``status``, the admin API, metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .peer import Traffic


@dataclass(frozen=True, slots=True)
class PeerStats:
    """One connected peer, as this node sees it."""

    node_id: bytes
    address: str  # where the connection comes from or goes to (host:port)
    outbound: bool  # dialled by this node
    observed_address: str  # the address the peer says it sees this node at


@dataclass(frozen=True, slots=True)
class P2PStats:
    """The p2p service's figures at one moment."""

    address: str  # where this node's listener is advertised (host:port; "" before it listens)
    peers: tuple[PeerStats, ...]  # connected now (not those closing)
    refused: frozenset[bytes]  # node ids the operator refuses
    traffic: Mapping[str, Traffic]  # by message kind, in and out, since the start (a copy)
    bans: int  # node ids banned since the start (by score or by the operator)
    banned_nodes: int  # node ids banned now
    banned_addresses: int  # addresses (IPs) banned now
    penalties: Mapping[str, int]  # penalties given since the start, by reason (a copy;
    # at most score.MAX_PENALTY_REASONS + 1 reasons)
