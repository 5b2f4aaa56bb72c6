"""Sync's reactor: peers' heads, whole blocks in ranges, and compact blocks relayed.

Registered with the p2p router for :data:`KINDS`. On connect it notes the head the peer
gave in its Hello and sends this node's :class:`Status`; ranges go to
:class:`~.blocksync.BlockSync`, compact blocks, and the transactions the relay
asked for (routed here by :class:`~iomtnode.admission.blocktxs.BlockTxsReactor`), to
:class:`~.blockrelay.BlockRelay`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..admission.messages import BlockTxs
from ..p2p.peer import Peer
from .blockrelay import BlockRelay
from .blocksync import BlockSync
from .messages import GET_BLOCKS_RATE, STATUS_RATE, Blocks, CompactBlock, GetBlocks, Status

KINDS = (Status, GetBlocks, Blocks, CompactBlock)
RATES = {GetBlocks: GET_BLOCKS_RATE, Status: STATUS_RATE}  # per peer (the requests among KINDS)
# the kinds whose delivery protects a peer from eviction (p2p/slots.py), and what each delivers
USEFUL = {CompactBlock: "blocks", Blocks: "blocks"}


class SyncReactor:
    """Peers' sync and relay messages (module doc); ``head()`` is this node's
    ``(height, block hash)``."""

    def __init__(self, sync: BlockSync, relay: BlockRelay,
                 head: Callable[[], tuple[int, bytes]]) -> None:
        self._sync = sync
        self._relay = relay
        self._head = head

    async def receive(self, peer: Peer, msg: Any) -> None:
        match msg:
            case CompactBlock():
                await self._relay.on_compact(peer, msg)
            case BlockTxs():
                await self._relay.on_block_txs(peer, msg)
            case GetBlocks():
                self._sync.on_get_blocks(peer, msg)
            case Blocks():
                self._sync.on_blocks(peer, msg)
            case Status():
                self._sync.saw_height(peer.node_id, msg.height)

    def connected(self, peer: Peer) -> None:
        self._sync.saw_height(peer.node_id, peer.hello.height)
        peer.send(Status(*self._head()))

    def disconnected(self, peer: Peer) -> None:
        self._sync.forget(peer.node_id)
        self._sync.connection_lost(peer)
