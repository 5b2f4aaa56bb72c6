"""What the API and consensus see of the node's services: narrow adapters, built complete."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from .. import __version__
from ..admission.inbox import Admitted, InboxFullError
from ..admission.service import Admission
from ..api.interfaces import NodeStatus
from ..chain.chain import Chain
from ..consensus.driver import Driver
from ..core.crypto import SigningKey
from ..core.errors import RuleError
from ..core.evidence import Evidence
from ..core.tx import ReportEvidence, sign_tx
from ..metrics import NodeFigures
from ..p2p.records import PeerRecord
from ..p2p.router import Router
from ..p2p.stats import P2PStats
from ..sync.blocksync import BlockSync

log = structlog.get_logger(__name__)


class PeerAdminView:
    """The operator's levers over p2p, as the admin API sees them."""

    def __init__(self, router: Router) -> None:
        self._router = router

    def stats(self) -> P2PStats:
        return self._router.stats()

    def address_book(self) -> Mapping[bytes, PeerRecord]:
        return self._router.book.records

    def disconnect(self, node_id: bytes, reason: str) -> bool:
        return self._router.disconnect(node_id, reason)

    def ban(self, node_id: bytes, seconds: float, reason: str) -> None:
        self._router.host.ban(node_id, seconds, reason)

    def set_refused(self, node_ids: set[bytes]) -> None:
        self._router.host.set_refused(node_ids)

    async def move(self, address: str) -> str:
        return await self._router.move(address)


@dataclass(frozen=True, slots=True)
class StatusView:
    """``status``: every service's own figures, read at one moment."""

    node_id: bytes
    chain: Chain
    admission: Admission
    router: Router
    sync: BlockSync
    consensus: Driver
    figures: NodeFigures

    def status(self) -> NodeStatus:
        return NodeStatus(self.node_id, __version__, self.chain.stats(), self.admission.stats(),
                          self.router.stats(), self.sync.stats(), self.consensus.stats(),
                          self.figures.stats())


@dataclass(frozen=True, slots=True)
class EvidenceReporter:
    """Puts an equivocation the consensus driver saw on the ledger: as an authority, signs
    an ``evidence`` transaction and queues it on admission's lane for the node's own
    transactions, which never waits and which full peers' and clients' lanes do not hold
    back (others that saw it too may report it first; the ledger keeps one record)."""

    key: SigningKey
    chain: Chain
    admission: Admission

    def __call__(self, evidence: Evidence) -> None:
        if self.key.public not in self.chain.authorities():
            return  # only authorities report; an observer's status still lists it
        tx = sign_tx(ReportEvidence(self.key.public, evidence.encode()), self.key,
                     self.chain.chain_id)
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
