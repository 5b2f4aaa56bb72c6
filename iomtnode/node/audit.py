"""The node's audit service: records every call of a patient's records in the node's audit
log, and, on an authority's node, anchors the log on the ledger (docs/privacy.md, section 6).

Writing: :meth:`AuditService.record` queues one call and returns once its record is durable.
One task appends what is queued in batches, one fsync per batch (a worker thread, or inline
under a virtual clock), so concurrent readers share fsyncs instead of waiting for one each. A
log that cannot write refuses every later record (:class:`~iomtnode.audit.log.AuditLogError`),
and then the API serves no patient's records: ``AUDIT_UNAVAILABLE`` instead of an unrecorded
read. So does a log found damaged while the node runs (a record that fails its checksum when
it is read to be anchored or served): ``audit_log_damaged`` is logged once, nothing more is
anchored (an anchor of the damaged range cannot be made) and no more reads are served, while
the node goes on with everything else; the operator repairs the log (the node refuses to open
a log damaged before its tail, docs/privacy.md).

Anchoring (only while the node's key is an authority): at least every ``AUDIT_ANCHOR_S`` after
a record is written, or as soon as ``AUDIT_ANCHOR_RECORDS`` wait, the task signs an
``AuditAnchor`` of the records the ledger does not cover yet (at most ``MAX_AUDIT_RANGE``, the
most a client asks of one ``get_audit_log``) and queues it on admission's lane
for the node's own transactions. It learns from the ledger where the anchored log ends
(:meth:`~iomtnode.chain.chain.Chain.audit_anchor_next`), so a restart or an anchor lost on the
way changes nothing: an anchor that is refused, or not on the ledger within ``ANCHOR_RETRY_S``,
is logged with its reason and made again from where the ledger stands.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog
import trio

from ..admission.inbox import Admitted, InboxFullError
from ..api.jsonrpc import RpcError
from ..api.records import AUDIT_UNAVAILABLE
from ..audit.log import MAX_AUDIT_RANGE, AuditLog, AuditLogCorruptError, AuditLogError
from ..audit.record import AUDIT_ANCHOR_RECORDS, AUDIT_ANCHOR_S, AuditCall, range_root
from ..core.crypto import SigningKey
from ..core.errors import RuleError
from ..core.tx import AuditAnchor, sign_tx

log = structlog.get_logger(__name__)

AUDIT_QUEUE_CALLS = 1024  # calls waiting for their record; a reader waits beyond this
MAX_AUDIT_BATCH = 512  # calls appended with one fsync
ANCHOR_TICK_S = 1.0  # the anchoring task looks at the log and the ledger this often
ANCHOR_RETRY_S = 15.0  # an anchor not on the ledger after this is made again
T = TypeVar("T")


class AnchorChain(Protocol):
    """What the anchoring task reads of the chain."""

    @property
    def chain_id(self) -> str: ...

    def authorities(self) -> tuple[bytes, ...]: ...

    def audit_anchor_next(self, node: bytes) -> int: ...


@dataclass(slots=True)
class _Waiting:
    call: AuditCall
    done: trio.Event = field(default_factory=trio.Event)
    error: str = ""


@dataclass(slots=True)
class _Anchor:
    tx_id: bytes
    first: int
    end: int  # the anchored log's end once it is on the ledger
    at: float  # trio time it was queued
    refused: str = ""  # admission's reason, if it refused it


class AuditService:
    """See the module docstring. ``submit_own`` queues the node's own transaction on
    admission (``Admission.submit_nowait``); ``tx_status`` says what became of it."""

    def __init__(self, audit_log: AuditLog, key: SigningKey, chain: AnchorChain, *,
                 submit_own: Callable[[bytes, Callable[[Admitted], None]], None],
                 tx_status: Callable[[bytes], dict[str, Any]],
                 now_ms: Callable[[], int], inline: bool = False,
                 anchor_s: float = AUDIT_ANCHOR_S) -> None:
        self._log = audit_log
        self._anchor_s = anchor_s
        self._key = key
        self._chain = chain
        self._submit_own = submit_own
        self._tx_status = tx_status
        self._now_ms = now_ms
        self._inline = inline
        self._send, self._receive = trio.open_memory_channel[_Waiting](AUDIT_QUEUE_CALLS)
        self._oldest: float | None = None  # trio time of the oldest record not anchored
        self._enough = trio.Event()  # AUDIT_ANCHOR_RECORDS wait to be anchored
        self._anchored = 0  # where the anchored log ended at the last look at the ledger
        self._damaged = ""  # why the log cannot be read (a damaged record), once found

    @property
    def node_id(self) -> bytes:
        return self._key.public

    @property
    def next_index(self) -> int:
        """The index the next record gets (the records in the log)."""
        return self._log.next_index

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        if self._inline:
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args)

    # recording -----------------------------------------------------------------------

    async def record(self, *, callers: frozenset[bytes], stream: bytes, grant_tx: bytes,
                     method: str, code: int, tx_ids: Sequence[bytes]) -> None:
        """Append one record of a call and return once it is durable; ``RpcError``
        (``AUDIT_UNAVAILABLE``) if the log could not write it."""
        if self._damaged:
            raise self._unavailable(self._damaged)
        waiting = _Waiting(AuditCall(self._now_ms(), self.node_id, tuple(sorted(callers)),
                                     stream, grant_tx, method, code, tuple(tx_ids)))
        await self._send.send(waiting)
        await waiting.done.wait()
        if waiting.error:
            raise self._unavailable(waiting.error)

    @staticmethod
    def _unavailable(reason: str) -> RpcError:
        return RpcError(AUDIT_UNAVAILABLE, "this node cannot record reads in its audit log now, "
                        "so it serves no patient's records: ask another node", {"reason": reason})

    def _found_damaged(self, exc: AuditLogCorruptError) -> RpcError:
        """Note that the log is damaged (logged once); the error that refuses a call."""
        if not self._damaged:
            self._damaged = f"the audit log is damaged: {exc}"
            log.error("audit_log_damaged", reason=str(exc))
        return self._unavailable(self._damaged)

    async def _write(self) -> None:
        async for first in self._receive:
            batch = [first]
            while len(batch) < MAX_AUDIT_BATCH:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await self._io(self._log.append, [w.call for w in batch])
            except AuditLogError as exc:
                log.error("audit_records_not_written", calls=len(batch), reason=str(exc))
                for waiting in batch:
                    waiting.error = str(exc)
            else:
                if self._oldest is None:
                    self._oldest = trio.current_time()
            for waiting in batch:
                waiting.done.set()
            if self._log.next_index - self._anchored >= AUDIT_ANCHOR_RECORDS:
                self._enough.set()

    async def log_range(self, first: int, count: int, streams: frozenset[bytes]
                        ) -> tuple[list[bytes], dict[int, bytes]]:
        """The leaves of records ``first`` .. ``first + count - 1`` and the encoded records
        among them of ``streams``; fewer (at least one), from ``first`` on, when the rest
        would pass the log's read limit (:data:`~iomtnode.audit.log.MAX_AUDIT_READ_BYTES`):
        the leaves say how many. A range that runs past the log's end stops there (none when
        ``first`` is the end), so a reader learns where the log ends; ``AuditRangeError`` (a
        ValueError) for a ``first`` past the end; ``RpcError`` (``AUDIT_UNAVAILABLE``) once
        the log is found damaged."""
        if self._damaged:
            raise self._unavailable(self._damaged)
        try:
            return await self._io(self._range, first, count, streams)
        except AuditLogCorruptError as exc:
            raise self._found_damaged(exc) from None

    def _range(self, first: int, count: int, streams: frozenset[bytes]
               ) -> tuple[list[bytes], dict[int, bytes]]:
        end = self._log.next_index
        if first <= end:
            count = min(count, end - first)
        found = self._log.read_with_leaves(first, count)
        return ([leaf for _, leaf in found],
                {r.index: r.encode() for r, _ in found if r.stream in streams})

    # anchoring -----------------------------------------------------------------------

    async def _anchor_loop(self) -> None:
        pending: _Anchor | None = None
        authority = None
        while True:
            with trio.move_on_after(ANCHOR_TICK_S):
                await self._enough.wait()
            self._enough = trio.Event()
            is_authority = self.node_id in self._chain.authorities()
            if is_authority != authority:
                authority = is_authority
                log.info("audit_anchoring", anchoring=is_authority)
            if is_authority and not self._damaged:
                try:
                    pending = await self._anchor_step(pending, trio.current_time())
                except AuditLogCorruptError as exc:
                    self._found_damaged(exc)

    async def _anchor_step(self, pending: _Anchor | None, now: float) -> _Anchor | None:
        """One look at the log and the ledger: the anchor in flight afterwards."""
        anchored = self._anchored = self._chain.audit_anchor_next(self.node_id)
        end = self._log.next_index
        if pending is not None:
            if anchored >= pending.end:
                log.info("audit_log_anchored", first=pending.first, end=pending.end,
                         tx=pending.tx_id.hex())
                pending = None
            elif now - pending.at < ANCHOR_RETRY_S and not pending.refused:
                return pending
            else:
                log.warning("audit_anchor_retried", first=pending.first, end=pending.end,
                            reason=pending.refused or self._lost(pending))
                pending = None
                self._oldest = now - self._anchor_s  # due at once
        if anchored >= end:
            if anchored > end:
                log.error("audit_log_behind_anchors", records=end, anchored=anchored)
            return None
        if self._oldest is None:
            self._oldest = now  # records from before a restart
        if end - anchored < AUDIT_ANCHOR_RECORDS and now - self._oldest < self._anchor_s:
            return None
        count = min(end - anchored, MAX_AUDIT_RANGE)
        root = range_root(await self._io(self._log.leaves, anchored, count))
        tx = sign_tx(AuditAnchor(self.node_id, self.node_id, anchored, count, root),
                     self._key, self._chain.chain_id)
        anchor = _Anchor(tx.id, anchored, anchored + count, now)
        self._oldest = None if anchored + count == self._log.next_index else now

        def reply(result: Admitted) -> None:
            if isinstance(result, RuleError):
                anchor.refused = f"refused ({result.code}): {result}"
                log.warning("audit_anchor_failed", first=anchored, count=count,
                            code=result.code, reason=str(result))

        try:
            self._submit_own(tx.raw, reply)
        except InboxFullError as exc:
            anchor.refused = f"not queued: {exc}"
            log.warning("audit_anchor_failed", first=anchored, count=count, reason=str(exc))
        else:
            log.info("audit_anchor_submitted", first=anchored, count=count, tx=tx.id.hex())
        return anchor

    def _lost(self, anchor: _Anchor) -> str:
        """Why an anchor admission accepted is not on the ledger (what the mempool says)."""
        status = self._tx_status(anchor.tx_id)
        if status["state"] == "dropped":
            return f"dropped ({status['code']}): {status['reason']}"
        return f"{status['state']} after {ANCHOR_RETRY_S} s"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Write records and anchor the log until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write)
            nursery.start_soon(self._anchor_loop)
            task_status.started()
