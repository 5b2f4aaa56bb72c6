"""Consensus on the wire: its reactor (what peers send) and its network (what it sends).

:class:`ConsensusReactor` is registered with the p2p router for :data:`KINDS` and hands
each message to the driver's queue (:meth:`~.driver.Driver.on_message`; never blocks), and
the transactions the driver asked for by :class:`~iomtnode.admission.messages.GetBlockTxs`
(sent through, and the answers routed by, :mod:`iomtnode.admission.blocktxs`).
:class:`PeerNetwork` is what the driver sends through: consensus messages are pushed to
every peer at once, and before a proposal the transactions waiting to be pushed go
(``flush``), so that a proposal finds its transactions in its receivers' mempools rather
than having them fetched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..admission.messages import GetBlockTxs
from ..p2p.peer import Peer
from ..p2p.router import Router
from .messages import ConsensusProposal, ConsensusVote

KINDS = (ConsensusProposal, ConsensusVote)
# the kinds whose delivery protects a peer from eviction (p2p/slots.py), and what each delivers
USEFUL = {ConsensusProposal: "votes", ConsensusVote: "votes"}


class Delivery(Protocol):
    """Where peers' consensus messages go (:class:`~.driver.Driver`)."""

    def on_message(self, peer_id: bytes, msg: Any) -> None: ...

    def peer_connected(self, peer_id: bytes) -> None: ...


class _Outside:
    """The peers a broadcast skips: those in ``exclude`` and those not in ``only``."""

    __slots__ = ("_exclude", "_only")

    def __init__(self, only: frozenset[bytes], exclude: frozenset[bytes]) -> None:
        self._only, self._exclude = only, exclude

    def __contains__(self, node_id: object) -> bool:
        return node_id not in self._only or node_id in self._exclude


class PeerNetwork:
    """The driver's network over the router (module doc)."""

    def __init__(self, router: Router, flush: Callable[[], None],
                 ask: Callable[[bytes, GetBlockTxs], bool],
                 saw_height: Callable[[bytes, int], None]) -> None:
        self._router = router
        self._flush = flush
        self._ask = ask  # :meth:`~iomtnode.admission.blocktxs.Asks.sender`
        self._saw_height = saw_height  # sync's: a peer's head, to catch up with it

    def broadcast_consensus(self, msg: ConsensusProposal | ConsensusVote,
                            exclude: frozenset[bytes] = frozenset(),
                            only: frozenset[bytes] | None = None) -> None:
        """Push ``msg`` to every peer not in ``exclude`` (and in ``only``, if given) at
        once (never waits); a proposal goes after the transactions waiting to be pushed."""
        if isinstance(msg, ConsensusProposal):
            self._flush()
        self._router.broadcast(msg, exclude if only is None else _Outside(only, exclude))

    def send_consensus(self, peer_id: bytes, msg: GetBlockTxs) -> bool:
        """Send ``msg`` to the peer ``peer_id``; False if it is not connected."""
        return self._ask(peer_id, msg)

    def peer_committed(self, peer_id: bytes, height: int) -> None:
        """``peer_id`` is past ``height`` (it sent a message of the next one): block sync
        fetches that block from it if this node's consensus does not decide it (a node
        whose precommit was counted is sent neither the deciding votes again nor the block,
        and a peer's head is otherwise told only when it connects)."""
        self._saw_height(peer_id, height)

    def penalize_peer(self, peer_id: bytes, points: int, reason: str) -> None:
        """Charge the peer ``peer_id`` for a bad consensus message, if still connected."""
        self._router.penalize_id(peer_id, points, reason)


class ConsensusReactor:
    """Peers' consensus messages to the driver (module doc)."""

    def __init__(self, driver: Delivery) -> None:
        self._driver = driver

    async def receive(self, peer: Peer, msg: Any) -> None:
        self._driver.on_message(peer.node_id, msg)

    def connected(self, peer: Peer) -> None:
        self._driver.peer_connected(peer.node_id)

    def disconnected(self, peer: Peer) -> None:
        pass
