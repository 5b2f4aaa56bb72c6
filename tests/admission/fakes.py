"""Fake peers and a fake mempool around the real admission service and gossip reactor."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from iomtnode.admission.gossip import TxGossip
from iomtnode.admission.inbox import Inbox
from iomtnode.admission.messages import Txs
from iomtnode.admission.service import Admission
from iomtnode.chain.feed import BlockFeed
from iomtnode.core.crypto import BadSignatureError, SigningKey, blake2b256
from iomtnode.core.tx import SignedTx
from iomtnode.metrics import LatencyWindow

from ..core.sealkit import sealed_reading

CHAIN = "iomt-test"
PUSHED_MS = 1500  # the fake node's clock when its gossip stamps a push
DEVICE = SigningKey(blake2b256(b"device"))


def reading(seq: int) -> SignedTx:
    return sealed_reading(DEVICE, seq, 1000 + seq, CHAIN)


@dataclass
class FakePeer:
    node_id: bytes
    sent: list = field(default_factory=list)
    queued_bytes: int = 0  # bytes waiting for the link (0: idle); sends here never wait

    def send(self, msg) -> bool:
        self.sent.append(msg)
        return True

    def of(self, kind) -> list:
        return [m for m in self.sent if isinstance(m, kind)]


@dataclass
class FakeHost:
    peer_list: list[FakePeer]
    penalties: list = field(default_factory=list)

    def peers(self):
        return list(self.peer_list)

    def get(self, node_id):
        return next((p for p in self.peer_list if p.node_id == node_id), None)

    def penalize(self, peer, points, reason):
        self.penalties.append((peer.node_id, points, reason))


class FakeVerifier:
    """Checks signatures for real, on this thread."""

    verified_count = 0

    async def verify(self, txs, *, bulk=False):
        out = []
        for tx in txs:
            self.verified_count += 1
            try:
                tx.verify(CHAIN)
            except BadSignatureError as exc:
                out.append(exc)
            else:
                out.append(None)
        return out


class FakeMempool:
    """Admits every transaction whose signature verifies, unless told to refuse with
    ``refuse`` (no state rules, no duplicate check: what gossip dedups is what is tested)."""

    def __init__(self, refuse: Exception | None = None) -> None:
        self.txs: dict[bytes, SignedTx] = {}
        self.refuse = refuse
        self.admitted = 0
        self.kept: list[SignedTx] = []
        self.verifier = FakeVerifier()
        self.dropped_total = 0

    def __len__(self) -> int:
        return len(self.txs)

    def precheck(self, tx: SignedTx) -> None:
        if self.refuse is not None:
            raise self.refuse

    def add_tx(self, tx: SignedTx, *, prechecked: bool = False) -> SignedTx:
        self.admitted += 1
        self.txs[tx.id] = tx
        return tx

    def get(self, tx_id: bytes) -> SignedTx | None:
        return self.txs.get(tx_id)

    def keep(self, txs) -> None:
        self.kept.extend(txs)

    def committed(self, committed) -> None:
        for done in committed:
            for tx in done.block.txs:
                self.txs.pop(tx.id, None)

    def readmit(self) -> tuple[int, int]:
        return 0, 0


@dataclass
class Gossiping:
    """The admission service and the gossip reactor of one node with fake peers."""

    admission: Admission
    gossip: TxGossip
    inbox: Inbox
    host: FakeHost
    peers: list[FakePeer]
    pool: FakeMempool
    feed: BlockFeed
    delivery_delay: LatencyWindow

    async def deliver(self, peer: FakePeer, raws: list[bytes], admitted_ms: int = 0) -> None:
        """``peer`` pushes ``raws`` (stamped ``admitted_ms``); returns once admission has
        handled them (the service must be running)."""
        await self.gossip.queue_txs(peer, Txs(raws, admitted_ms))
        with trio.fail_after(5):
            await self.inbox.wait_admitted(self.inbox.mark())


def gossiping(n_peers: int = 3, refuse: Exception | None = None, *,
              relay_delay_s: float = 0, pool=None, capacity_txs: int | None = None
              ) -> Gossiping:
    peers = [FakePeer(bytes([i]) * 32) for i in range(n_peers)]
    host = FakeHost(peers)
    pool = FakeMempool(refuse) if pool is None else pool
    inbox = Inbox() if capacity_txs is None else Inbox(capacity_txs)
    gossip = TxGossip(host, inbox, pool.get, relay_delay_s=relay_delay_s,
                      now_ms=lambda: PUSHED_MS)
    feed = BlockFeed(0)
    delivery_delay = LatencyWindow()
    admission = Admission(pool, inbox, gossip, feed, now_ms=lambda: 2000,
                          gossip_delay=LatencyWindow(), delivery_delay=delivery_delay)
    return Gossiping(admission, gossip, inbox, host, peers, pool, feed, delivery_delay)
