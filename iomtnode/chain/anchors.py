"""The audit anchors on the ledger, per node (docs/privacy.md, section 6): where a node's
anchored log ends, and each anchored range with the transaction that anchored it."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.ledger import K_ANCHOR_RANGES, K_ANCHORS, State


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
