"""Admission's reactor: the transactions peers push, announce and request.

Registered with the p2p router for :class:`Txs`, :class:`TxAnnounce` and :class:`TxRequest`;
it hands each to :class:`~.gossip.TxGossip` (a pushed batch waits for room in the admission
inbox: that wait is the backpressure on the peer) or :class:`~.reconcile.Reconciler`.
"""

from __future__ import annotations

from typing import Any

from ..p2p.peer import Peer
from .gossip import TxGossip
from .messages import TX_REQUEST_RATE, TxAnnounce, TxRequest, Txs
from .reconcile import Reconciler

KINDS = (Txs, TxAnnounce, TxRequest)
RATES = {TxRequest: TX_REQUEST_RATE}  # per peer (the request kinds among KINDS)
# the kinds whose delivery protects a peer from eviction (p2p/slots.py), and what each delivers
USEFUL = {Txs: "txs"}


class TxReactor:
    """Peers' transaction messages to gossip and reconciliation (module doc)."""

    def __init__(self, gossip: TxGossip, reconcile: Reconciler) -> None:
        self._gossip = gossip
        self._reconcile = reconcile

    async def receive(self, peer: Peer, msg: Any) -> None:
        match msg:
            case Txs():
                await self._gossip.queue_txs(peer, msg)
            case TxAnnounce():
                self._gossip.on_announce(peer, msg)
            case TxRequest():
                self._reconcile.on_request(peer, msg)

    def connected(self, peer: Peer) -> None:
        self._reconcile.connected(peer.node_id)

    def disconnected(self, peer: Peer) -> None:
        self._gossip.forget(peer.node_id)
        self._reconcile.forget(peer.node_id)
