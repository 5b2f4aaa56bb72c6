"""The node's peer-to-peer service: the transport host plus gossip, relay, sync, discovery.

This is the one place where every validated peer message is routed (``on_message``,
called by each peer's reader task in order, never a task per message). Handshake
messages after the handshake are a protocol violation and cost the peer score.
"""

from __future__ import annotations

import random
import time
from typing import Any, Protocol

import structlog
import trio

from ..admission.gossip import TxGossip
from ..admission.inbox import Inbox
from ..admission.mempool import Mempool
from ..admission.reconcile import Reconciler
from ..chain.chain import Chain
from ..chain.feed import BlockFeed, each_block
from ..chain.writer import ChainWriter
from ..config import Config, parse_hostport
from ..core.block import Block
from ..core.crypto import SigningKey
from ..store import BlockStore
from ..sync.blockrelay import BlockRelay
from ..sync.blocksync import BlockSync
from ..sync.progress import SyncProgress
from . import score
from .discovery import (
    BOOK_FLUSH_S,
    PEX_INTERVAL_S,
    PEX_RECORDS,
    AddressBook,
    Dialer,
    OwnRecord,
)
from .handshake import make_hello
from .host import Host, P2PConfig
from .messages import (
    Auth,
    Blocks,
    BlockTxs,
    CompactBlock,
    ConsensusProposal,
    ConsensusVote,
    GetBlocks,
    GetBlockTxs,
    GetPeers,
    GetProposalTxs,
    Hello,
    Message,
    PeerRecords,
    ProposalTxs,
    Status,
    TxAnnounce,
    TxRequest,
    Txs,
)
from .mobility import AddressWatcher, is_wildcard, local_ip_toward
from .peer import encode
from .records import RecordError, decode_record
from .stats import P2PStats, PeerStats
from .transport import Transport

log = structlog.get_logger(__name__)


class ConsensusHandler(Protocol):
    """Where consensus messages go (:class:`~iomtnode.consensus.driver.Driver`)."""

    def on_message(self, peer_id: bytes, msg: ConsensusProposal | ConsensusVote
                   | GetProposalTxs | ProposalTxs) -> None: ...

    def holders(self, block: Block) -> frozenset[bytes]: ...


class P2PService:
    def __init__(
        self,
        config: Config,
        key: SigningKey,
        chain: Chain,
        store: BlockStore,
        mempool: Mempool,
        writer: ChainWriter,
        feed: BlockFeed,
        inbox: Inbox,
        *,
        rng: random.Random | None = None,
        transport: Transport | None = None,
    ) -> None:
        self._config = config
        self._key = key
        self._chain = chain
        self._rng = rng or random.Random()
        host, port = parse_hostport(config.p2p_listen, "p2p_listen")
        self.host = Host(
            P2PConfig(host=host, port=port, max_peers=config.max_peers,
                      max_inbound_per_ip=config.max_inbound_per_ip, ban_s=config.ban_s),
            key, self, transport=transport,
        )
        self.book = AddressBook(store, chain.chain_id)
        self.own = OwnRecord(key, chain.chain_id, store)
        self.dialer = Dialer(self.host, self.book, config.bootnodes, key.public, self._rng)
        self.gossip = TxGossip(self.host, inbox, mempool.get)
        self.reconcile = Reconciler(self.host, self.gossip, mempool.oldest,
                                    mempool.__contains__)
        self.sync = BlockSync(self.host, chain, writer, feed, mempool.verified,
                              on_progress=SyncProgress())
        self.relay = BlockRelay(self.host, chain, writer, mempool, self.sync.saw_height,
                                holders=self._block_holders, inbox=inbox)
        feed.listen(each_block(self.relay.on_committed))
        self.address = ""
        # set by the node when consensus runs here (several authorities); else dropped
        self.consensus: ConsensusHandler | None = None

    def _block_holders(self, block: Block) -> frozenset[bytes]:
        return frozenset() if self.consensus is None else self.consensus.holders(block)

    # the handler the host calls ------------------------------------------------------

    def local_hello(self) -> Hello:
        return make_hello(self._key, self._chain.chain_id, self._chain.genesis.hash,
                          self._chain.height, self._chain.head.hash)

    def local_record(self) -> bytes:
        return self.own.record.raw if self.own.record else b""

    async def on_connected(self, peer: Any) -> None:
        if peer.record:
            self._take_records(peer, [peer.record])
        self.book.mark_connected(peer.node_id)
        self.sync.saw_height(peer.node_id, peer.hello.height)
        peer.send(Status(self._chain.height, self._chain.head.hash))
        peer.send(PeerRecords(self._records_to_share()))
        self.reconcile.connected(peer.node_id)

    def on_disconnected(self, peer: Any, reason: str) -> None:
        self.gossip.forget(peer.node_id)
        self.reconcile.forget(peer.node_id)
        self.sync.forget(peer.node_id)
        self.dialer.wake()

    async def on_message(self, peer: Any, msg: Message) -> None:
        match msg:
            case Txs():
                await self.gossip.queue_txs(peer, msg)
            case TxAnnounce():
                self.gossip.on_announce(peer, msg)
            case TxRequest():
                self.reconcile.on_request(peer, msg)
            case CompactBlock():
                await self.relay.on_compact(peer, msg)
            case GetBlockTxs():
                self.relay.on_get_block_txs(peer, msg)
            case BlockTxs():
                await self.relay.on_block_txs(peer, msg)
            case GetBlocks():
                self.sync.on_get_blocks(peer, msg)
            case Blocks():
                self.sync.on_blocks(peer, msg)
            case Status():
                self.sync.saw_height(peer.node_id, msg.height)
            case ConsensusProposal() | ConsensusVote() | GetProposalTxs() | ProposalTxs():
                if self.consensus is not None:
                    self.consensus.on_message(peer.node_id, msg)
            case PeerRecords():
                self._take_records(peer, msg.records)
            case GetPeers():
                peer.send(PeerRecords(self._records_to_share()))
            case Hello() | Auth():
                self.host.penalize(peer, score.INVALID_MESSAGE, "handshake message after handshake")
            case _:
                self.host.penalize(peer, score.INVALID_MESSAGE,
                                   f"unexpected {type(msg).__name__}")

    # consensus (the driver's network) ------------------------------------------------

    def broadcast_consensus(self, msg: ConsensusProposal | ConsensusVote,
                            exclude: frozenset[bytes] = frozenset()) -> None:
        """Push a consensus message to every peer not in ``exclude`` at once (never waits).
        Transactions waiting to be pushed go first, so that a proposal finds its
        transactions in its receivers' mempools rather than having them fetched."""
        if isinstance(msg, ConsensusProposal):
            self.gossip.flush()
        frame = encode(msg)
        for peer in self.host.peers():
            if peer.node_id not in exclude:
                peer.send(frame)

    def send_consensus(self, peer_id: bytes, msg: GetProposalTxs | ProposalTxs) -> bool:
        """Send ``msg`` to the peer ``peer_id``; False if it is not connected."""
        peer = self.host.get(peer_id)
        return peer is not None and peer.send(msg)

    def penalize_peer(self, peer_id: bytes, points: int, reason: str) -> None:
        """Charge the peer ``peer_id`` for a bad consensus message, if still connected."""
        peer = self.host.get(peer_id)
        if peer is not None:
            self.host.penalize(peer, points, reason)

    # discovery -----------------------------------------------------------------------

    def _records_to_share(self) -> list[bytes]:
        records = [r.raw for r in self.book.sample(PEX_RECORDS - 1, self._rng)]
        own = self.local_record()
        return [own, *records] if own else records

    def _take_records(self, peer: Any, raws: list[bytes]) -> None:
        for raw in raws:
            try:
                record = decode_record(raw, self._chain.chain_id)
            except RecordError as exc:
                self.host.penalize(peer, score.BAD_SIGNATURE, f"peer record: {exc}")
                continue
            if record.node_id == self._key.public:
                continue
            if self.book.update(record, int(time.time() * 1000)):
                log.debug("peer_record_learned", node=record.node_id.hex()[:16],
                          address=record.addresses[0], seq=record.seq)
                if self.host.get(record.node_id) is None:
                    self.dialer.wake(reset=record.addresses[0])

    async def move(self, address: str) -> str:
        """Listen on ``address`` instead (the node moved); re-announce; re-dial everyone."""
        host, port = parse_hostport(address, "address")
        bound = await self.host.rebind(host, port)
        self.address = f"{host}:{bound}"
        record = self.own.publish(self.address)
        self.host.broadcast(PeerRecords([record.raw]))
        self.dialer.reset_all()
        return self.address

    def _probe_local_ip(self) -> str | None:
        """The local address toward a known peer (IP literals only: no DNS here)."""
        hosts = [p.remote.rsplit(":", 1)[0] for p in self.host.peers()]
        hosts += [b.rsplit(":", 1)[0] for b in self._config.bootnodes]
        for host in hosts:
            host = host.strip("[]")
            if host.replace(".", "").isdigit() or ":" in host:
                ip = local_ip_toward(host)
                if ip is not None:
                    return ip
        return None

    async def address_changed(self, ip: str) -> None:
        """This node's routable address changed: re-announce and re-dial from the new one."""
        port = self.host.listen_port
        self.address = f"{ip}:{port}"
        record = self.own.publish(self.address)
        for peer in self.host.peers():  # connections made from the old address are dead
            self.host.disconnect(peer.node_id, "local address changed")
        log.info("p2p_address_changed", address=self.address, seq=record.seq)
        self.dialer.reset_all()

    async def _exchange_records(self) -> None:
        next_pex = trio.current_time() + PEX_INTERVAL_S
        try:
            while True:
                await trio.sleep(BOOK_FLUSH_S)
                self.book.flush()
                if trio.current_time() >= next_pex:
                    next_pex += PEX_INTERVAL_S
                    self.host.broadcast(PeerRecords(self._records_to_share()))
        finally:
            self.book.flush()

    def stats(self) -> P2PStats:
        """The p2p service's figures now."""
        return P2PStats(
            self.address,
            tuple(PeerStats(p.node_id, p.remote, p.outbound, p.observed_address)
                  for p in self.host.peers()),
            self.host.refused, self.host.counters())

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Listen, publish our record, gossip, relay, sync and dial until cancelled.

        Reports the address the p2p listener is bound to (``host:port``).
        """
        async with trio.open_nursery() as nursery:
            port = await nursery.start(self.host.run)
            host, _ = parse_hostport(self._config.p2p_listen)
            if is_wildcard(host):  # advertise the routable address, and follow it
                ip = self._probe_local_ip()
                if ip is None:
                    ip = "127.0.0.1"
                    log.warning("p2p_address_unknown", listen=self._config.p2p_listen,
                                advertised=ip, reason="no peer known yet to route toward")
                watcher = AddressWatcher(self._probe_local_ip, self.address_changed, ip)
                nursery.start_soon(watcher.run)
                host = ip
            self.address = f"{host}:{port}"
            self.own.publish(self.address)
            await nursery.start(self.gossip.run)
            await nursery.start(self.reconcile.run)
            await nursery.start(self.sync.run)
            await nursery.start(self.dialer.run)
            nursery.start_soon(self._exchange_records)
            task_status.started(self.address)
