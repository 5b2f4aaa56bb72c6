"""Equivocations the consensus machine found among checked votes.

:class:`EvidenceLog` logs each (``equivocation_detected``), keeps the newest
:data:`MAX_EVIDENCE` for status, and hands each once (by evidence hash) to a hook (the node
submits it to the ledger).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from ..core.evidence import Evidence
from ..p2p.lru import BoundedSet

log = structlog.get_logger(__name__)

MAX_EVIDENCE = 64  # equivocations kept for status
EVIDENCE_HASHES = 4096  # equivocations already reported (the hook is called once per hash)


class EvidenceLog:
    """Equivocations seen (module doc); ``hook(evidence)`` is called once per equivocation
    and must not block."""

    def __init__(self, hook: Callable[[Evidence], None] | None = None) -> None:
        self._hook = hook
        self._kept: deque[dict[str, Any]] = deque(maxlen=MAX_EVIDENCE)
        self._hashes = BoundedSet(EVIDENCE_HASHES)

    @property
    def entries(self) -> list[dict[str, Any]]:
        """The newest equivocations, oldest first (authority, height, round, type, hash)."""
        return list(self._kept)

    def report(self, evidence: Evidence) -> None:
        if not self._hashes.add(evidence.hash):
            return
        log.warning("equivocation_detected", authority=evidence.validator.hex(),
                    height=evidence.height, round=evidence.round, type=evidence.type.name)
        self._kept.append({
            "authority": evidence.validator.hex(), "height": evidence.height,
            "round": evidence.round, "type": evidence.type.name.lower(),
            "hash": evidence.hash.hex(),
        })
        if self._hook is not None:
            try:
                self._hook(evidence)
            except Exception:  # a failing hook must not stop consensus
                log.exception("evidence_hook_failed", hash=evidence.hash.hex()[:16])
