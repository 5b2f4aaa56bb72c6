"""One node's admission service around a real mempool and chain, with fake peers."""

from __future__ import annotations

from iomtnode.admission.gossip import TxGossip
from iomtnode.admission.inbox import CLIENT_TXS, INBOX_TXS, Inbox
from iomtnode.admission.mempool import Mempool
from iomtnode.admission.messages import Txs
from iomtnode.admission.service import Admission
from iomtnode.chain.feed import BlockFeed
from iomtnode.metrics import LatencyWindow

from ..core.helpers import pub
from .chainkit import T0
from .fakes import FakeHost, FakePeer


class Node:
    """One node's admission around a real mempool, with fake peers A and B."""

    def __init__(self, chain, capacity_txs: int = INBOX_TXS, client_txs: int = CLIENT_TXS
                 ) -> None:
        self.peers = [FakePeer(pub("A")), FakePeer(pub("B"))]
        self.host = FakeHost(self.peers)
        self.mempool = Mempool(chain, now_ms=lambda: T0 + 60_000)
        self.inbox = Inbox(capacity_txs, client_txs=client_txs)
        self.gossip = TxGossip(self.host, self.inbox, self.mempool.get, relay_delay_s=0,
                               now_ms=lambda: T0 + 60_000)
        self.feed = BlockFeed(chain.height)
        self.gossip_delay = LatencyWindow()
        self.delivery_delay = LatencyWindow()
        self.admission = Admission(self.mempool, self.inbox, self.gossip, self.feed,
                                   now_ms=lambda: T0 + 60_000, gossip_delay=self.gossip_delay,
                                   delivery_delay=self.delivery_delay)
        self.hops: list[int] = []  # transactions per verification call (one per step)
        real = self.mempool.verifier.verify

        async def verify(txs, *, bulk=False):
            self.hops.append(len(txs))
            return await real(txs, bulk=bulk)

        self.mempool.verifier.verify = verify  # type: ignore[method-assign]

    async def push(self, peer: FakePeer, txs) -> None:
        await self.gossip.queue_txs(peer, Txs([tx.raw for tx in txs]))
