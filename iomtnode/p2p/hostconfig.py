"""What a :class:`~.host.Host` is given and what it raises: its settings (:class:`P2PConfig`),
the handler above it (:class:`HostHandler`), and :class:`DialError`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .handshake import HANDSHAKE_TIMEOUT_S, TO_ITSELF
from .messages import Hello, Message
from .peer import CLOSE_TIMEOUT_S, MISSED_PINGS, PING_INTERVAL_S, SEND_QUEUE_MESSAGES, Peer
from .score import BAN_S
from .slots import (
    MAX_INBOUND_PER_IP,
    MAX_INBOUND_PER_NETGROUP,
    MAX_PENDING_PER_IP,
    MAX_PENDING_PER_NETGROUP,
    OUTBOUND_SLOTS,
    Limits,
)

P2P_PATH = "/p2p/v1"
RECEIVE_QUEUE_FRAMES = 1  # whole frames trio-websocket buffers per peer before TCP pushes back
RECEIVE_BUFFER_BYTES = 256 * 1024  # read from the socket at once (trio-websocket: 4 KiB,
# so a 1 MB batch of transactions took 256 reads and frame-parser passes)


WRONG_NODE = "answered by another node"  # how a refused dial of a node id's record begins


class DialError(Exception):
    """A dial that failed: unreachable, timed out, rejected or refused (the message says why)."""

    @property
    def wrong_node(self) -> bool:
        """Whether another node than the one dialed for answered (see ``Host.dial``)."""
        return str(self).startswith(WRONG_NODE)

    @property
    def to_itself(self) -> bool:
        """Whether the address dialed is this node's own (it answered as this node)."""
        return TO_ITSELF in str(self)


class HostHandler(Protocol):
    """What the host needs from the node above it."""

    def local_hello(self) -> Hello:
        """This node's Hello: a fresh nonce and the current head, on every call."""

    def local_record(self) -> bytes:
        """This node's signed peer record, sent in its Auth."""

    async def on_connected(self, peer: Peer) -> None:
        """A peer was registered; its messages go to ``on_message`` after this returns."""

    async def on_message(self, peer: Peer, msg: Message) -> None:
        """A message from ``peer`` (never Ping/Pong/Hello/Auth), in order, one at a time per
        peer. Cancelled at its next checkpoint if the peer is closed meanwhile."""

    def on_disconnected(self, peer: Peer, reason: str) -> None:
        """``peer`` is gone (once per registered peer); a replacement may already be there."""


@dataclass(frozen=True, slots=True)
class P2PConfig:
    """Where the host listens, and its limits."""

    host: str = "127.0.0.1"  # listen on this address (a name may bind ports that differ)
    port: int | None = 0  # listen on this port; 0: the OS picks one; None: do not listen
    max_peers: int = 50  # registered connections at most, inbound and outbound
    outbound_slots: int = OUTBOUND_SLOTS  # of max_peers, kept for outbound (see .slots)
    max_inbound_per_ip: int = MAX_INBOUND_PER_IP  # inbound connections from one IP; more: 503
    max_inbound_per_netgroup: int = MAX_INBOUND_PER_NETGROUP  # ... from one /24 or /48
    max_pending_per_ip: int = MAX_PENDING_PER_IP  # inbound handshakes at once from one IP
    max_pending_per_netgroup: int = MAX_PENDING_PER_NETGROUP  # ... from one /24 or /48
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S  # TCP connect, HTTP upgrade, Hello + Auth
    ping_interval_s: float = PING_INTERVAL_S
    missed_pings: int = MISSED_PINGS  # silent for this many ping intervals -> dropped
    send_queue: int = SEND_QUEUE_MESSAGES  # frames queued per peer; full -> the peer is dropped
    close_timeout_s: float = CLOSE_TIMEOUT_S  # waiting for the peer's closing frame
    tcp_user_timeout_ms: int = 10_000  # unacknowledged data this long -> the kernel drops the link
    ban_s: float = BAN_S  # seconds a peer whose score fell below the threshold stays banned
    address_ban_s: float = BAN_S  # ... and its IP (0: no bans by address); both grow on repeat

    def limits(self) -> Limits:
        return Limits(max_peers=self.max_peers, outbound_slots=self.outbound_slots,
                      max_inbound_per_ip=self.max_inbound_per_ip,
                      max_inbound_per_netgroup=self.max_inbound_per_netgroup,
                      max_pending_per_ip=self.max_pending_per_ip,
                      max_pending_per_netgroup=self.max_pending_per_netgroup)
