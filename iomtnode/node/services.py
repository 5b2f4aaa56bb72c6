"""The composition root: every service of a node, each constructed complete, in one place.

:func:`build` makes them in dependency order (a service gets what it uses at construction;
nothing is filled in afterwards) and registers each reactor with the p2p router for its
message kinds. The path of a reading runs through what is built here and never back
through the node: a client's or a peer's transactions go to admission's one inbox
(:class:`~iomtnode.admission.service.Admission`), admitted ones to the mempool, consensus
proposes from the mempool and waits on admission's progress, the chain writer commits and
publishes on the commit feed, and the mempool, gossip, relay and consensus follow the feed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..admission.blocktxs import KINDS as BLOCK_TXS_KINDS
from ..admission.blocktxs import RATES as BLOCK_TXS_RATES
from ..admission.blocktxs import Asks, BlockTxsReactor, chain_txs
from ..admission.gossip import TxGossip
from ..admission.inbox import Inbox
from ..admission.mempool import Mempool
from ..admission.reactor import KINDS as TX_KINDS
from ..admission.reactor import RATES as TX_RATES
from ..admission.reactor import USEFUL as TX_USEFUL
from ..admission.reactor import TxReactor
from ..admission.reconcile import Reconciler
from ..admission.service import Admission
from ..admission.verify import Verifier
from ..api.auditapi import AuditApi
from ..api.methods import ClientApi
from ..api.records import RecordsApi
from ..api.server import ApiServer, ApiServerConfig
from ..api.subscriptions import SubscriptionsApi
from ..api.tls import ApiTls
from ..api.txwatch import TxWatch
from ..audit.log import AuditLog
from ..chain.chain import Chain
from ..chain.feed import BlockFeed, each_block
from ..chain.writer import ChainWriter
from ..config import Config, parse_hostport
from ..consensus.driver import Driver, DriverConfig
from ..consensus.held import WAL_FILE
from ..consensus.machine import Params
from ..consensus.reactor import KINDS as CONSENSUS_KINDS
from ..consensus.reactor import USEFUL as CONSENSUS_USEFUL
from ..consensus.reactor import ConsensusReactor, PeerNetwork
from ..consensus.signing import SIGNING_STATE_FILE, Signer, SigningStateFile
from ..core.crypto import SigningKey
from ..core.genesis import Genesis
from ..home import Home
from ..metrics import NodeFigures
from ..p2p.router import Router
from ..p2p.transport import Transport
from ..store import BlockStore
from ..sync.blobs import KINDS as BLOB_KINDS
from ..sync.blobs import RATES as BLOB_RATES
from ..sync.blobs import BlobReactor
from ..sync.blockrelay import BlockRelay
from ..sync.blocksync import BlockSync
from ..sync.progress import SyncProgress
from ..sync.reactor import KINDS as SYNC_KINDS
from ..sync.reactor import RATES as SYNC_RATES
from ..sync.reactor import USEFUL as SYNC_USEFUL
from ..sync.reactor import SyncReactor
from ..telemetry import MetricsServer, NodeCollector, metrics_server
from .audit import AuditService
from .clock import Clock
from .views import EvidenceReporter, PeerAdminView, StatusView


@dataclass(frozen=True, slots=True)
class Setup:
    """What a node is made of before it runs: its home and settings, where its time and its
    streams come from."""

    home: Home
    config: Config
    key: SigningKey
    genesis: Genesis
    admin_token: str
    clock: Clock
    transport: Transport | None  # None: TLS over TCP for p2p, TCP for the API
    api_tls: ApiTls | None  # None: the API speaks plain websocket
    consensus_params: Params


@dataclass(frozen=True, slots=True)
class Services:
    """Every service of one running node (read by tests and tools; the node runs them)."""

    node_id: bytes
    chain: Chain
    feed: BlockFeed
    writer: ChainWriter
    mempool: Mempool
    inbox: Inbox
    admission: Admission
    p2p: Router
    gossip: TxGossip
    reconcile: Reconciler
    sync: BlockSync
    relay: BlockRelay
    blobs: BlobReactor
    consensus: Driver
    api: ApiServer
    figures: NodeFigures
    audit: AuditService
    metrics: MetricsServer | None  # the Prometheus endpoint; None: metrics_listen is empty


def build(setup: Setup, store: BlockStore, audit_log: AuditLog) -> Services:
    """Construct every service over ``store`` and ``audit_log``, complete, and wire the
    reactors."""
    config, clock, key = setup.config, setup.clock, setup.key
    virtual = clock.virtual
    figures = NodeFigures(started_at=clock.now_ms() / 1000)

    chain = Chain(store, setup.genesis)
    verifier = Verifier(chain.chain_id, inline=virtual)
    mempool = Mempool(chain, now_ms=clock.now_ms, max_txs=config.mempool_max_txs,
                      verifier=verifier)
    feed = BlockFeed(chain.height)
    writer = ChainWriter(chain, feed, verifier, inline=virtual)

    def head() -> tuple[int, bytes]:
        return chain.height, chain.head_hash

    router = Router(config, key, store, chain.chain_id, chain.genesis.hash, head,
                    transport=setup.transport, now_ms=clock.now_ms)
    inbox = Inbox()
    gossip = TxGossip(router, inbox, mempool.get, now_ms=clock.now_ms)
    reconcile = Reconciler(router, gossip, mempool.oldest, mempool.__contains__)
    admission = Admission(mempool, inbox, gossip, feed, now_ms=clock.now_ms,
                          gossip_delay=figures.gossip_delay,
                          delivery_delay=figures.delivery_delay)
    sync = BlockSync(router, chain, writer, feed, mempool.verified, on_progress=SyncProgress(),
                     now_ms=clock.now_ms)
    asks = Asks(router)  # requests for blocks' transactions, to route their answers
    consensus = Driver(
        chain, mempool, writer, PeerNetwork(router, gossip.flush, asks.sender("consensus"),
                                            sync.saw_height),
        Signer(key, chain.chain_id, SigningStateFile(setup.home.path / SIGNING_STATE_FILE)),
        DriverConfig(config.block_interval_s, config.empty_block_interval_s,
                     config.max_block_txs, setup.consensus_params, config.resend_interval_s,
                     config.fresh_grace_s or None, inline_io=virtual),
        now_ms=clock.now_ms,
        peer_heads=lambda: sync.peer_heights,
        on_evidence=EvidenceReporter(key, chain, admission),
        inbox=inbox,
        wal=SigningStateFile(setup.home.path / WAL_FILE),
    )
    relay = BlockRelay(router, chain, writer, mempool, sync.saw_height, asks.sender("sync"),
                       holders=consensus.holders, inbox=inbox)
    feed.listen(each_block(relay.on_committed))
    feed.listen(each_block(
        lambda block, commit, source: figures.committed(block, chain.committed_txs,
                                                        clock.now_ms())))

    blobs = BlobReactor(router, chain)
    feed.listen(blobs.committed)
    router.register(BLOB_KINDS, blobs, rates=BLOB_RATES)

    sync_reactor = SyncReactor(sync, relay, head)
    consensus_reactor = ConsensusReactor(consensus)
    router.register(TX_KINDS, TxReactor(gossip, reconcile), rates=TX_RATES, useful=TX_USEFUL)
    router.register(BLOCK_TXS_KINDS, BlockTxsReactor(
        (consensus.held_txs, chain_txs(chain)), asks,
        {"consensus": consensus_reactor, "sync": sync_reactor}, router.penalize),
        rates=BLOCK_TXS_RATES)
    router.register(SYNC_KINDS, sync_reactor, rates=SYNC_RATES, useful=SYNC_USEFUL)
    router.register(CONSENSUS_KINDS, consensus_reactor, useful=CONSENSUS_USEFUL)

    audit = AuditService(audit_log, key, chain, submit_own=admission.submit_nowait,
                         tx_status=mempool.tx_status, now_ms=clock.now_ms, inline=virtual,
                         anchor_s=config.audit_anchor_s)
    watch = TxWatch(mempool.tx_status)  # subscribe_tx_status: told of commits and drops
    feed.listen(watch.committed)
    mempool.listen_drops(watch.dropped)
    status = StatusView(key.public, chain, admission, router, sync, consensus, figures)
    client_api = ClientApi(
        submitter=admission, chain=chain, txs=mempool,
        peers=PeerAdminView(router),
        status=status,
        groups=(SubscriptionsApi(feed, chain, mempool, watch),
                RecordsApi(chain, audit, clock.now_ms),
                AuditApi(audit, chain)),
        now_ms=clock.now_ms)
    host, port = parse_hostport(config.api_listen, "api_listen")
    api = ApiServer(
        ApiServerConfig(host=host, port=port, max_connections=config.api_max_connections,
                        max_connections_per_ip=config.api_max_connections_per_ip,
                        idle_timeout_s=config.api_idle_timeout_s,
                        requests_per_s=config.api_requests_per_s), client_api.methods(),
        admin_methods=client_api.admin_methods(), admin_token=setup.admin_token,
        binary_handler=client_api.handle_binary, transport=setup.transport,
        guard=client_api.access.check, tls=setup.api_tls,
    )
    metrics = (metrics_server(config.metrics_listen, NodeCollector(status, api.stats,
                                                                   clock.now_ms))
               if config.metrics_listen else None)
    return Services(key.public, chain, feed, writer, mempool, inbox, admission, router,
                    gossip, reconcile, sync, relay, blobs, consensus, api, figures, audit,
                    metrics)
