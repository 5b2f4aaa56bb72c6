"""The audit anchors on the ledger, per node (docs/privacy.md, section 6): where a node's
anchored log ends, and each anchored range with the transaction that anchored it; and which
keys the ledger knows as streams (whose records a caller may read in an audit log)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.ledger import K_ANCHOR_RANGES, K_ANCHORS, NO_STREAM, State


@dataclass(frozen=True, slots=True)
class AnchorRange:
    """Records ``first`` to ``first + count - 1`` of a node's audit log, anchored by their
    Merkle ``root`` in transaction ``tx_id`` at ``height``."""

    first: int
    count: int
    root: bytes
    tx_id: bytes
    height: int


def anchor_next(state: State, node: bytes) -> int:
    """The index of ``node``'s first audit record no anchor covers (0: none anchored)."""
    record = state.get_value(K_ANCHORS + node)
    return 0 if record is None else int(record[1])


def anchor_ranges(state: State, node: bytes, first: int, limit: int) -> list[AnchorRange]:
    """``node``'s anchored ranges from the one starting at record ``first`` on, at most
    ``limit`` (none if no anchor starts there). Anchors are contiguous, so each is one read."""
    found: list[AnchorRange] = []
    while len(found) < limit:
        value = state.get_value(K_ANCHOR_RANGES + node + first.to_bytes(8, "big"))
        if value is None:
            break
        count, root, tx_id, height = value
        found.append(AnchorRange(first, count, root, tx_id, height))
        first += count
    return found


class AuditLedger:
    """The audit queries of :class:`~.chain.Chain` (a base class of it)."""

    def state(self) -> State:  # pragma: no cover - Chain's
        raise NotImplementedError

    def known_stream(self, key: bytes) -> bool:
        """Whether the ledger knows ``key`` as a stream: devices were admitted to it, it has
        announced an epoch, or it was erased."""
        state = self.state()
        return bool(state.stream_devices(key)) or state.stream(key) != NO_STREAM

    def audit_anchor_next(self, node: bytes) -> int:
        """The index of ``node``'s first audit record no anchor on the ledger covers."""
        return anchor_next(self.state(), node)

    def audit_anchors(self, node: bytes, first: int, limit: int) -> list[AnchorRange]:
        """``node``'s anchored audit ranges from the one at ``first``, at most ``limit``."""
        return anchor_ranges(self.state(), node, first, limit)
