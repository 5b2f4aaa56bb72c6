"""A node: one trio nursery of services around one chain.

Services start in dependency order with ``await nursery.start(service.run)``: the
store and chain are opened first (synchronously; a held lock is a clear error), then
admission (it admits again what was pending when the node stopped), then
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog
import trio

from . import __version__
from .admission.inbox import Admitted, Inbox, InboxFullError
from .admission.mempool import Mempool
from .admission.service import Admission
from .admission.verify import Verifier
from .api.interfaces import NodeStatus
from .api.methods import ClientApi
from .api.server import ApiServer, ApiServerConfig
from .chain.chain import Chain
from .chain.feed import BlockFeed, each_block
from .chain.writer import ChainWriter
from .config import Config, parse_hostport
from .consensus.driver import Driver, DriverConfig, wall_clock_ms
from .consensus.held import WAL_FILE
from .consensus.machine import Params
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
from .core.tx import ReportEvidence, SignedTx, sign_tx
from .home import Home
from .metrics import NodeFigures
from .p2p.records import PeerRecord
from .p2p.service import P2PService
from .p2p.stats import P2PStats
from .p2p.transport import Transport
from .store import BlockStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Clock:
    """Where a node's time comes from.

    ``now_ms`` is the wall clock in ms (block timestamps, the mempool's time window, reading
    delays). Trio's own time (timeouts, pings, intervals) is the clock of the trio run, which
    a test may make virtual (``trio.testing.MockClock``, pytest-trio's ``autojump_clock``).
    ``virtual=True`` says it is: then blocking work (signature checks, LevelDB writes, the
    write-ahead record's fsync) runs on the trio thread instead of in worker threads and
    processes, because a virtual clock jumps ahead while a worker runs and would fire timeouts
    that real time never would. A virtual clock's node is slower per transaction: for tests.
    """

    now_ms: Callable[[], int] = wall_clock_ms
    virtual: bool = False


WALL_CLOCK = Clock()


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a started node tells its starter."""

    api_port: int
    node_id: str
    chain_id: str


class PeerAdminView:
    """The operator's levers over p2p, as the admin API sees them."""

    def __init__(self, p2p: P2PService) -> None:
        self._p2p = p2p

    def stats(self) -> P2PStats:
        return self._p2p.stats()

    def address_book(self) -> Mapping[bytes, PeerRecord]:
        return self._p2p.book.records

    def disconnect(self, node_id: bytes, reason: str) -> bool:
        return self._p2p.host.disconnect(node_id, reason)

    def ban(self, node_id: bytes, seconds: float, reason: str) -> None:
        self._p2p.host.ban(node_id, seconds, reason)

    def set_refused(self, node_ids: set[bytes]) -> None:
        self._p2p.host.set_refused(node_ids)

    async def move(self, address: str) -> str:
        return await self._p2p.move(address)


@dataclass(frozen=True, slots=True)
class StatusView:
    """``status``: every service's own figures, read at one moment."""

    node_id: bytes
    chain: Chain
    mempool: Mempool
    p2p: P2PService
    consensus: Driver
    figures: NodeFigures

    def status(self) -> NodeStatus:
        return NodeStatus(self.node_id, __version__, self.chain.stats(), self.mempool.stats(),
                          self.p2p.stats(), self.p2p.sync.stats(), self.consensus.stats(),
                          self.figures.stats())


class Node:
    def __init__(self, home: Home, config: Config, *,
                 clock: Clock = WALL_CLOCK,
                 transport: Transport | None = None,
                 consensus_params: Params | None = None) -> None:
        """``clock``: see :class:`Clock`. ``transport`` gives the streams of the p2p and the
        API listeners and of the p2p dials (default: TCP), e.g. a test's memory network."""
        home.check()
        self.home = home
        self.config = config
        self.key = home.load_key()
        self.genesis = home.load_genesis()
        self.admin_token = home.admin_token()
        self._now_ms = clock.now_ms
        self._clock = clock
        self._transport = transport
        self._consensus_params = consensus_params or Params(
            timeout_propose_s=config.timeout_propose_s,
            timeout_prevote_s=config.timeout_prevote_s,
            timeout_precommit_s=config.timeout_precommit_s,
            timeout_delta_s=config.timeout_delta_s, timeout_cap_s=config.timeout_cap_s)
        self.chain: Chain | None = None
        self.mempool: Mempool | None = None
        self.admission: Admission | None = None
        self.feed: BlockFeed | None = None
        self.writer: ChainWriter | None = None
        self.p2p: P2PService | None = None
        self.consensus: Driver | None = None
        # reading delays and the latest commit (status)
        self.figures = NodeFigures(started_at=time.time())

    @property
    def node_id(self) -> bytes:
        return self.key.public

    async def submit(self, raw: bytes, *, reading_only: bool = False) -> SignedTx:
        """Admit a client's transaction (see :meth:`Admission.submit`)."""
        assert self.admission is not None, "node not started"
        return await self.admission.submit(raw, reading_only=reading_only)

    async def submit_many(self, raws: Sequence[bytes], *, reading_only: bool = False
                          ) -> list[Admitted]:
        """Admit a client's batch (see :meth:`Admission.submit_many`)."""
        assert self.admission is not None, "node not started"
        return await self.admission.submit_many(raws, reading_only=reading_only)

    def report_evidence(self, evidence: Evidence) -> None:
        """Put an equivocation the consensus driver saw on the ledger: as an authority,
        sign an ``evidence`` transaction and submit it like any other (others that saw it
        too may report it first; the ledger keeps one record)."""
        if (self.chain is None or self.admission is None
                or self.key.public not in self.chain.authorities()):
            return  # only authorities report; an observer's status still lists it
        tx = sign_tx(ReportEvidence(self.key.public, evidence.encode()), self.key,
                     self.genesis.chain_id)
        authority = evidence.validator.hex()[:16]

        def reply(result: Admitted) -> None:
            if isinstance(result, RuleError):
                log.info("evidence_not_submitted", authority=authority,
                         height=evidence.height, reason=str(result))
            else:
                log.warning("evidence_submitted", authority=authority,
                            height=evidence.height, round=evidence.round, tx=tx.id.hex())

        try:
            self.admission.submit_nowait(tx.raw, reply)
        except InboxFullError as exc:
            log.info("evidence_not_submitted", authority=authority, height=evidence.height,
                     reason=str(exc))

    def _block_committed(self, block: Block, commit: Commit, source: bytes | None) -> None:
        assert self.chain is not None
        self.figures.committed(block, self.chain.committed_txs, self._now_ms())

    async def run(self, *, task_status: trio.TaskStatus[NodeInfo] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Run every service until cancelled. Reports :class:`NodeInfo` once serving."""
        clock = self._clock
        with BlockStore.open(self.home.data_path) as store, contextlib.ExitStack() as held:
            chain = self.chain = Chain(store, self.genesis)
            verifier = Verifier(chain.chain_id, inline=clock.virtual)
            self.mempool = Mempool(chain, now_ms=self._now_ms,
                                   max_txs=self.config.mempool_max_txs, verifier=verifier)
            self.feed = BlockFeed(chain.height)
            self.writer = ChainWriter(chain, self.feed, verifier, inline=clock.virtual)
            log.info("node_starting", node_id=self.node_id.hex()[:16],
                     chain_id=chain.chain_id, height=chain.height, version=__version__)
            async with trio.open_nursery() as nursery:
                authorities = chain.authorities()
                if chain.height == 0 and self.key.public not in authorities:
                    # joining a running network: it will sync the whole chain, so its
                    # verifying workers start now, while it connects, rather than when its
                    # first blocks arrive (their start takes a few hundred ms)
                    nursery.start_soon(self.writer.warm_verifier)
                inbox = Inbox()
                self.p2p = P2PService(self.config, self.key, chain, store, self.mempool,
                                      self.writer, self.feed, inbox,
                                      transport=self._transport)
                self.admission = Admission(self.mempool, inbox, self.p2p.gossip, self.feed,
                                           now_ms=self._now_ms,
                                           gossip_delay=self.figures.gossip_delay)
                self.feed.listen(each_block(self._block_committed))
                held.enter_context(SigningLock.acquire(self.home.path / SIGNING_LOCK_FILE))
                self.consensus = Driver(
                    chain, self.mempool, self.writer, self.p2p,
                    Signer(self.key, chain.chain_id,
                           SigningStateFile(self.home.path / SIGNING_STATE_FILE)),
                    DriverConfig(self.config.block_interval_s,
                                 self.config.empty_block_interval_s,
                                 self.config.max_block_txs, self._consensus_params,
                                 self.config.resend_interval_s,
                                 self.config.fresh_grace_s or None,
                                 inline_io=clock.virtual),
                    now_ms=self._now_ms,
                    peer_heads=lambda sync=self.p2p.sync: sync.peer_heights,
                    on_evidence=self.report_evidence,
                    inbox=inbox,
                    wal=SigningStateFile(self.home.path / WAL_FILE),
                )
                self.p2p.consensus = self.consensus
                await nursery.start(self.admission.run)  # re-admits what was pending
                await nursery.start(self.consensus.run)
                p2p_address = await nursery.start(self.p2p.run)
                host, port = parse_hostport(self.config.api_listen, "api_listen")
                api = ClientApi(
                    submitter=self.admission, chain=chain, txs=self.mempool, blocks=self.feed,
                    peers=PeerAdminView(self.p2p),
                    status=StatusView(self.node_id, chain, self.mempool, self.p2p,
                                      self.consensus, self.figures))
                server = ApiServer(
                    ApiServerConfig(host=host, port=port), api.methods(),
                    admin_methods=api.admin_methods(), admin_token=self.admin_token,
                    binary_handler=api.handle_binary, transport=self._transport,
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
