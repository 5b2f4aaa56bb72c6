"""A node: one trio nursery of services around one chain (see the package doc)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import structlog
import trio

from .. import __version__
from ..api.tls import load_api_tls
from ..audit.log import AuditLog
from ..config import Config
from ..consensus.machine import Params
from ..consensus.signing import SIGNING_LOCK_FILE, SigningLock
from ..home import Home
from ..p2p.transport import Transport
from ..store import BlockStore
from .clock import WALL_CLOCK, Clock
from .services import Services, Setup, build

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a started node tells its starter: where its API listens, and its services."""

    api_port: int
    node_id: str
    chain_id: str
    services: Services


class Node:
    """A node's home and settings; :meth:`run` builds its services and runs them.

    ``clock``: see :class:`Clock`. ``transport`` gives the streams of the p2p and the API
    listeners and of the p2p dials, and secures the p2p ones (default: TLS 1.3 over TCP for
    p2p, TCP for the API), e.g. a test's memory network.
    """

    def __init__(self, home: Home, config: Config, *, clock: Clock = WALL_CLOCK,
                 transport: Transport | None = None,
                 consensus_params: Params | None = None) -> None:
        home.check()
        self.home = home
        self.config = config
        self.key = home.load_key()
        self.genesis = home.load_genesis()
        self.admin_token = home.admin_token()
        # relative paths are in the home; a file that cannot be used is an ApiTlsError now
        api_tls = (load_api_tls(home.path / config.api_tls_cert, home.path / config.api_tls_key)
                   if config.api_tls_cert else None)
        self._setup = Setup(
            home, config, self.key, self.genesis, self.admin_token, clock, transport, api_tls,
            consensus_params or Params(
                timeout_propose_s=config.timeout_propose_s,
                timeout_prevote_s=config.timeout_prevote_s,
                timeout_precommit_s=config.timeout_precommit_s,
                timeout_delta_s=config.timeout_delta_s, timeout_cap_s=config.timeout_cap_s))

    @property
    def _api_scheme(self) -> str:
        return "ws" if self._setup.api_tls is None else "wss"

    @property
    def node_id(self) -> bytes:
        return self.key.public

    async def run(self, *, task_status: trio.TaskStatus[NodeInfo] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Build every service and run them until cancelled; reports :class:`NodeInfo`
        once the API serves.

        Resource handling: the store is opened first (a held lock is a clear error), then
        the signing lock ``HOME/signing.lock`` (a second process signing with this home
        refuses to start), then the audit log ``HOME/audit/`` (held by one process too); on
        the way out every service cleans up and the store and the log are closed, so the last
        committed block and every record the API waited for are on disk.
        """
        with BlockStore.open(self.home.data_path) as store, \
                SigningLock.acquire(self.home.path / SIGNING_LOCK_FILE), \
                AuditLog(self.home.audit_path) as audit_log:
            services = build(self._setup, store, audit_log)
            chain = services.chain
            authorities = chain.authorities()
            log.info("node_starting", node_id=self.node_id.hex()[:16],
                     chain_id=chain.chain_id, height=chain.height, version=__version__)
            async with trio.open_nursery() as nursery:
                if chain.height == 0 and self.key.public not in authorities:
                    # joining a running network: it will sync the whole chain, so its
                    # verifying workers start now, while it connects, rather than when its
                    # first blocks arrive (their start takes a few hundred ms)
                    nursery.start_soon(services.writer.warm_verifier)
                await nursery.start(services.admission.run)  # re-admits what was pending
                await nursery.start(services.audit.run)
                await nursery.start(services.consensus.run)
                await nursery.start(services.gossip.run)
                await nursery.start(services.reconcile.run)
                await nursery.start(services.sync.run)
                await nursery.start(services.relay.run)
                await nursery.start(services.blobs.run)
                p2p_address = await nursery.start(services.p2p.run)
                api_port = await nursery.start(services.api.run)
                if services.metrics is not None:
                    await nursery.start(services.metrics.run)
                host = services.api.config.host
                log.info("node_started", api=f"{self._api_scheme}://{host}:{api_port}/api/v1",
                         p2p=f"wss://{p2p_address}/p2p/v1",
                         authority=self.key.public in authorities)
                if self._setup.api_tls is None and not _loopback(host):
                    log.warning("api_not_encrypted", api_listen=self.config.api_listen,
                                reason="clients' data and the admin token cross the network "
                                       "in clear", fix="set api_tls_cert and api_tls_key")
                task_status.started(NodeInfo(api_port, self.node_id.hex(), chain.chain_id,
                                             services))
                try:
                    await trio.sleep_forever()
                finally:
                    log.info("node_stopping", height=chain.height)


def _loopback(host: str) -> bool:
    """Whether ``host`` (an IP, bracketed or not, or a name) reaches this machine only."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"
