"""A node: one trio nursery of services around one chain.

Services start in dependency order with ``await nursery.start(service.run)``: the
store and chain are opened first (synchronously; a held lock is a clear error), then
block production: the consensus driver on every node, whatever the number of authorities
(one engine for every chain: it signs only at heights whose authorities include this
node's key, after taking the signing lock ``HOME/signing.lock``: a second process signing
with this home refuses to start); then p2p and the client API. The node runs until
cancelled; on the way out every service cleans up and the store is closed, so the last
committed block is on disk.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
import trio

from . import __version__
from .admission.batch import CHUNK as ADMISSION_CHUNK
from .admission.batch import Admitted, admit_batch, admit_raw_batch
from .admission.blocktxs import KINDS as BLOCK_TXS_KINDS
from .admission.blocktxs import BlockTxsReactor, chain_txs
from .admission.gossip import TxGossip
from .admission.mempool import Mempool
from .admission.reactor import KINDS as TX_KINDS
from .admission.reactor import TxReactor
from .admission.reconcile import Reconciler
from .api.methods import ClientApi
from .api.server import ApiServer, ApiServerConfig
from .chain.chain import Chain
from .chain.feed import BlockFeed
from .chain.writer import ChainWriter
from .config import Config, parse_hostport
from .consensus.driver import Driver, DriverConfig, wall_clock_ms
from .consensus.held import WAL_FILE
from .consensus.machine import Params
from .consensus.reactor import KINDS as CONSENSUS_KINDS
from .consensus.reactor import ConsensusReactor, PeerNetwork
from .consensus.signing import (
    SIGNING_LOCK_FILE,
    SIGNING_STATE_FILE,
    Signer,
    SigningLock,
    SigningStateFile,
)
from .core.block import Block, Commit
from .core.errors import RuleError
from .core.evidence import Evidence
from .core.tx import Reading, ReportEvidence, SignedTx, sign_tx
from .home import Home
from .metrics import LatencyWindow
from .p2p.router import Router
from .store import BlockStore
from .sync.blockrelay import BlockRelay
from .sync.blocksync import BlockSync
from .sync.progress import SyncProgress
from .sync.reactor import KINDS as SYNC_KINDS
from .sync.reactor import SyncReactor

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a started node tells its starter."""

    api_port: int
    node_id: str
    chain_id: str


class Node:
    def __init__(self, home: Home, config: Config, *,
                 now_ms: Callable[[], int] = wall_clock_ms,
                 consensus_params: Params | None = None) -> None:
        home.check()
        self.home = home
        self.config = config
        self.key = home.load_key()
        self.genesis = home.load_genesis()
        self.admin_token = home.admin_token()
        self._now_ms = now_ms
        self._consensus_params = consensus_params or Params(
            timeout_propose_s=config.timeout_propose_s,
            timeout_prevote_s=config.timeout_prevote_s,
            timeout_precommit_s=config.timeout_precommit_s,
            timeout_delta_s=config.timeout_delta_s, timeout_cap_s=config.timeout_cap_s)
        self.chain: Chain | None = None
        self.mempool: Mempool | None = None
        self.feed: BlockFeed | None = None
        self.writer: ChainWriter | None = None
        self.p2p: Router | None = None
        self.gossip: TxGossip | None = None
        self.sync: BlockSync | None = None
        self.consensus: Driver | None = None
        self.started_at = time.time()
        # reading timestamp -> admitted from a peer / committed here (same-host clocks)
        self.gossip_delay = LatencyWindow()
        self.commit_delay = LatencyWindow()
        # (committed transactions, wall-clock ms) just after this node's latest commit
        self.last_commit: tuple[int, int] | None = None

    @property
    def node_id(self) -> bytes:
        return self.key.public

    def submit(self, raw: bytes, *, reading_only: bool = False) -> SignedTx:
        """Admit a client's transaction (raises the precise RuleError on refusal), keep it
        (a restart re-admits it) and push it to the peers."""
        assert self.mempool is not None, "node not started"
        tx = self.mempool.add(raw, reading_only=reading_only)
        self.mempool.keep([tx])  # durable before it is acknowledged
        self._wake_producer()
        if self.gossip is not None:
            self.gossip.local([tx])
        return tx

    async def submit_many(self, raws: Sequence[bytes], *, reading_only: bool = False
                          ) -> list[Admitted]:
        """Admit a client's batch in order (signatures verified in worker threads, see
        :mod:`.admission.batch`), keep what was admitted (one write per chunk, before the
        reply) and push it to the peers; returns, per transaction, the admitted one or the
        RuleError that refused it."""
        assert self.mempool is not None, "node not started"
        results: list[Admitted] = []
        for start in range(0, len(raws), ADMISSION_CHUNK):  # push each chunk at once
            chunk = await admit_raw_batch(self.mempool, raws[start:start + ADMISSION_CHUNK],
                                          reading_only=reading_only)
            admitted = [r for r in chunk if isinstance(r, SignedTx)]
            if admitted:
                self.mempool.keep(admitted)  # durable before they are acknowledged
                self._wake_producer()
                if self.gossip is not None:
                    self.gossip.local(admitted)
            results.extend(chunk)
        return results

    async def admit_from_peers(self, txs: Sequence[SignedTx]) -> list[Admitted]:
        """Admit transactions a peer relayed, in order (the gossip layer relays them on)."""
        assert self.mempool is not None, "node not started"
        results = await admit_batch(self.mempool, txs)
        admitted = [r for r in results if isinstance(r, SignedTx)]
        if admitted:
            self._wake_producer()
        now = self._now_ms()
        for tx in admitted:
            if isinstance(tx.body, Reading):
                self.gossip_delay.add(now - tx.body.ts_ms)
        return results

    def report_evidence(self, evidence: Evidence) -> None:
        """Put an equivocation the consensus driver saw on the ledger: as an authority,
        sign an ``evidence`` transaction and submit it like any other (others that saw it
        too may report it first; the ledger keeps one record)."""
        if self.chain is None or self.key.public not in self.chain.authorities():
            return  # only authorities report; an observer's status still lists it
        tx = sign_tx(ReportEvidence(self.key.public, evidence.encode()), self.key,
                     self.genesis.chain_id)
        try:
            self.submit(tx.raw)
        except RuleError as exc:
            log.info("evidence_not_submitted", authority=evidence.validator.hex()[:16],
                     height=evidence.height, reason=str(exc))
        else:
            log.warning("evidence_submitted", authority=evidence.validator.hex()[:16],
                        height=evidence.height, round=evidence.round, tx=tx.id.hex())

    def _wake_producer(self) -> None:
        if self.consensus is not None:
            self.consensus.wake()

    def _block_committed(self, block: Block, commit: Commit, source: bytes | None) -> None:
        now = self._now_ms()
        if self.chain is not None:
            self.last_commit = (self.chain.committed_txs, now)
        for tx in block.txs:
            if isinstance(tx.body, Reading):
                self.commit_delay.add(now - tx.body.ts_ms)

    async def run(self, *, task_status: trio.TaskStatus[NodeInfo] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Run every service until cancelled. Reports :class:`NodeInfo` once serving."""
        with BlockStore.open(self.home.data_path) as store, contextlib.ExitStack() as held:
            chain = self.chain = Chain(store, self.genesis)
            mempool = self.mempool = Mempool(chain, now_ms=self._now_ms,
                                             max_txs=self.config.mempool_max_txs)
            readmitted, dropped = mempool.readmit()
            if readmitted or dropped:
                log.info("pending_txs_readmitted", admitted=readmitted, dropped=dropped)
            self.feed = BlockFeed(chain.height)
            writer = self.writer = ChainWriter(chain, mempool, self.feed)
            writer.add_listener(self._block_committed)
            log.info("node_starting", node_id=self.node_id.hex()[:16],
                     chain_id=chain.chain_id, height=chain.height, version=__version__)
            async with trio.open_nursery() as nursery:
                authorities = chain.authorities()
                if chain.height == 0 and self.key.public not in authorities:
                    # joining a running network: it will sync the whole chain, so its
                    # verifying workers start now, while it connects, rather than when its
                    # first blocks arrive (their start takes a few hundred ms)
                    nursery.start_soon(writer.warm_verifier)

                def head() -> tuple[int, bytes]:
                    return chain.height, chain.head.hash

                router = self.p2p = Router(self.config, self.key, store, chain.chain_id,
                                           chain.genesis.hash, head)
                gossip = self.gossip = TxGossip(router, self.admit_from_peers, mempool.get)
                reconcile = Reconciler(router, gossip, mempool.oldest, mempool.__contains__)
                sync = self.sync = BlockSync(router, chain, writer, self.feed,
                                             mempool.verified, on_progress=SyncProgress())
                writer.add_listener(
                    lambda block, commit, source: gossip.committed(tx.id for tx in block.txs))
                held.enter_context(SigningLock.acquire(self.home.path / SIGNING_LOCK_FILE))
                self.consensus = Driver(
                    chain, mempool, writer, PeerNetwork(router, gossip.flush),
                    Signer(self.key, chain.chain_id,
                           SigningStateFile(self.home.path / SIGNING_STATE_FILE)),
                    DriverConfig(self.config.block_interval_s,
                                 self.config.empty_block_interval_s,
                                 self.config.max_block_txs, self._consensus_params,
                                 self.config.resend_interval_s,
                                 self.config.fresh_grace_s or None),
                    now_ms=self._now_ms,
                    peer_heads=lambda: sync.peer_heights,
                    on_evidence=self.report_evidence,
                    inbox=gossip,
                    wal=SigningStateFile(self.home.path / WAL_FILE),
                )
                relay = BlockRelay(router, chain, writer, mempool, sync.saw_height,
                                   holders=self.consensus.holders, inbox=gossip)
                writer.add_listener(relay.on_committed)
                sync_reactor = SyncReactor(sync, relay, head)
                consensus_reactor = ConsensusReactor(self.consensus)
                router.register(TX_KINDS, TxReactor(gossip, reconcile))
                router.register(BLOCK_TXS_KINDS, BlockTxsReactor(
                    (self.consensus.held_txs, chain_txs(chain)),
                    (consensus_reactor, sync_reactor)))
                router.register(SYNC_KINDS, sync_reactor)
                router.register(CONSENSUS_KINDS, consensus_reactor)
                gossip.on_progress = self.consensus.inbox_progressed
                await nursery.start(self.consensus.run)
                await nursery.start(gossip.run)
                await nursery.start(reconcile.run)
                await nursery.start(sync.run)
                p2p_address = await nursery.start(router.run)
                host, port = parse_hostport(self.config.api_listen, "api_listen")
                api = ClientApi(self)
                server = ApiServer(
                    ApiServerConfig(host=host, port=port), api.methods(),
                    admin_methods=api.admin_methods(), admin_token=self.admin_token,
                    binary_handler=api.handle_binary,
                )
                api_port = await nursery.start(server.run)
                log.info("node_started", api=f"ws://{host}:{api_port}/api/v1",
                         p2p=f"ws://{p2p_address}/p2p/v1",
                         authority=self.key.public in authorities)
                task_status.started(NodeInfo(api_port, self.node_id.hex(), chain.chain_id))
                try:
                    await trio.sleep_forever()
                finally:
                    log.info("node_stopping", height=chain.height)
