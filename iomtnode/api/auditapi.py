"""The audit trail through the client API (docs/privacy.md, section 6): a patient checks
offline that the node's log of reads of their streams is whole.

- ``get_audit_log(node, first, count)`` (role ``STREAM``: a proven stream key or an
  authority's) returns every leaf of the range and, of the records, only those whose stream
  is one of the caller's proven keys. A leaf names its record's stream only to who knows it
  (its tag is keyed by the stream), so the leaves are safe to give a patient.
- ``get_audit_anchors(node, first, limit)`` (public: they are on the ledger) lists the node's
  anchored ranges, each with the receipt of the transaction that anchored it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio

from ..chain.anchors import AnchorRange
from ..core.crypto import KEY_BYTES
from .access import Authenticated, Role
from .jsonrpc import INVALID_PARAMS, RpcError
from .params import hex_param
from .records import NOT_FOUND, proven

MAX_AUDIT_LOG_RANGE = 4096  # records one get_audit_log asks for (an anchor covers at most this)
MAX_ANCHORS_PAGE = 16  # anchors one get_audit_anchors answers, each with its receipt

ROLES: dict[str, Role] = {
    "get_audit_log": Role.STREAM,  # leaves of everyone's records; full records: the caller's
    "get_audit_anchors": Role.PUBLIC,  # anchors are on the ledger
}


class AuditReader(Protocol):
    """The node's audit log as the API reads it (the node's audit service)."""

    @property
    def node_id(self) -> bytes: ...

    async def log_range(self, first: int, count: int, streams: frozenset[bytes]
                        ) -> tuple[list[bytes], dict[int, bytes]]:
        """The leaves of records ``first`` .. ``first + count - 1`` and the encoded records
        among them whose stream is one of ``streams``; ValueError for a range outside the
        log."""
        ...


class AnchorQueries(Protocol):
    """What the chain tells of audit anchors (a narrow view of the chain)."""

    def audit_anchors(self, node: bytes, first: int, limit: int) -> Sequence[AnchorRange]: ...

    def receipt(self, tx_id: bytes) -> dict[str, Any] | None: ...


def _index(name: str, value: Any, limit: int) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise RpcError(INVALID_PARAMS, f"{name} must be an integer in 0..{limit}")
    return value


class AuditApi:
    """The methods of this module (see its docstring)."""

    roles = ROLES

    def __init__(self, audit: AuditReader, chain: AnchorQueries) -> None:
        self._audit = audit
        self._chain = chain

    def methods(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {"get_audit_log": self.get_audit_log, "get_audit_anchors": self.get_audit_anchors}

    async def get_audit_log(self, node: str, first: int, count: int,
                            conn: Authenticated | None) -> dict[str, Any]:
        """``{leaves: [hex], records: {index: record hex}}`` of records ``first`` to ``first +
        count - 1`` (at most :data:`MAX_AUDIT_LOG_RANGE`) of this node's log (``node`` must be
        this node's id): every leaf, and the records of the caller's proven stream keys. An
        answer stops short (at least one record) at the log's read limit of 4 MiB of
        records: it covers ``len(leaves)`` records from ``first``; ask again from there."""
        node_id = hex_param("node", node, KEY_BYTES)
        start = _index("first", first, 2**64 - 1)
        size = _index("count", count, MAX_AUDIT_LOG_RANGE)
        if node_id != self._audit.node_id:
            raise RpcError(NOT_FOUND, "this node serves its own audit log only "
                           f"(node {self._audit.node_id.hex()}): ask that node")
        try:
            leaves, records = await self._audit.log_range(start, size, proven(conn))
        except ValueError as exc:
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        return {"leaves": [leaf.hex() for leaf in leaves],
                "records": {str(index): rec.hex() for index, rec in records.items()}}

    async def get_audit_anchors(self, node: str, first: int = 0,
                                limit: int = MAX_ANCHORS_PAGE) -> list[dict[str, Any]]:
        """``node``'s anchored ranges of its audit log from the one starting at record
        ``first`` (0: the first), at most ``limit`` (:data:`MAX_ANCHORS_PAGE`), each
        ``{first, count, root, tx_id, height, receipt}``; the next page starts at the last
        one's ``first + count``. Empty when no anchor starts at ``first``."""
        node_id = hex_param("node", node, KEY_BYTES)
        start = _index("first", first, 2**64 - 1)
        size = _index("limit", limit, MAX_ANCHORS_PAGE)
        found: list[dict[str, Any]] = []
        for anchor in self._chain.audit_anchors(node_id, start, size):
            await trio.lowlevel.checkpoint()  # a receipt reads its block: others run between
            found.append({"first": anchor.first, "count": anchor.count,
                          "root": anchor.root.hex(), "tx_id": anchor.tx_id.hex(),
                          "height": anchor.height, "receipt": self._chain.receipt(anchor.tx_id)})
        return found
