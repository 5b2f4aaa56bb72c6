"""Admission: the one way a transaction gets into this node's mempool.

Clients (the API), the node itself (its evidence reports) and peers (the tx gossip
reactor, :mod:`.gossip`) put raw transactions on one inbox (:mod:`.inbox`) with their
source. One task, :meth:`Admission.run`, takes a step at a time: the node's own queued
transactions, then at most one chunk (:data:`~.batch.CHUNK`) of the clients', then peers'
to fill the step to whole chunks (at most one chunk of them), each source in its arrival
order: so neither clients nor peers wait behind more than one chunk of the other's. It
admits a step a chunk at a time, letting other tasks run after each: each transaction
decoded here, once; the cheap checks on the trio thread; the signatures not verified on
this node yet in worker threads (:class:`~.verify.Verifier`, one hop per chunk, every
source's transactions in the same hop); then the state rules in order (:mod:`.batch`).
Then, per source:

- a client's admitted transactions are made durable (:meth:`Mempool.keep
  <.mempool.Mempool.keep>`, one write per chunk) before the reply, which gives per
  transaction the admitted one or the RuleError that refused it; then they are pushed to
  every peer (:meth:`TxGossip.local <.gossip.TxGossip.local>`);
- a peer's transactions are screened by the gossip reactor first (seen, copies), and the
  outcome is handed back to it (relay, penalties, refusals that time may undo).

The mempool follows the chain: the service subscribes it to the commit feed
(:class:`~iomtnode.chain.feed.BlockFeed`). Consensus and block relay follow the inbox's
progress (:class:`~.inbox.Progress`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog
import trio
import trio.lowlevel

from ..chain.feed import BlockFeed, Committed
from ..core import errors as e
from ..core.tx import MalformedTxError, Reading, SignedTx, decode_tx
from ..metrics import LatencyWindow
from ..p2p.peer import Peer
from .batch import CHUNK, admit_chunk
from .gossip import TxGossip
from .inbox import Admitted, FromClient, FromPeer, Inbox, Item, Step
from .mempool import Mempool

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AdmissionStats:
    """Admission's figures at one moment (``status``, metrics)."""

    pending_txs: int  # transactions in the mempool
    dropped_txs: int  # accepted and then dropped, ever (each with its reason: tx_status)
    signatures_verified: int  # transaction signatures checked: about one per transaction
    inbox_queued: int  # transactions waiting in the inbox, from every source
    peer_backlog: int  # peers' transactions queued and not handled yet
    mempool_max_txs: int  # the mempool's bound
    # since the start: transactions that reached admission by source ("client": the API and
    # the node's own; "peer"), the refused by reason (:func:`reason_name`: a rule's error,
    # a small fixed set), and the accepted then dropped by reason
    received_txs: Mapping[str, int]
    rejected_txs: Mapping[str, int]
    dropped_by_reason: Mapping[str, int]


def reason_name(kind: type[Exception]) -> str:
    """A refusal's name for counting: its error class's name in snake_case, without
    ``Error`` (and ``Rule``): ``StaleSequenceError`` -> ``stale_sequence``."""
    name = kind.__name__.removesuffix("Error").removesuffix("Rule") or "rule"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _rule_reasons() -> tuple[str, ...]:
    """Every chain rule's :func:`reason_name`, sorted: what a refusal or a drop is counted as
    (the base ``RuleError`` is never raised itself)."""
    names: set[str] = set()
    todo = list(e.RuleError.__subclasses__())
    while todo:
        rule = todo.pop()
        names.add(reason_name(rule))
        todo += rule.__subclasses__()
    return tuple(sorted(names))


REASONS = _rule_reasons()


def _by_name(counts: Mapping[type[Exception], int]) -> dict[str, int]:
    named: dict[str, int] = {}
    for kind, count in counts.items():
        name = reason_name(kind)
        named[name] = named.get(name, 0) + count
    return named


class Admission:
    """Owns the mempool (with its verifier) and the inbox; admits from clients and peers.

    ``gossip_delay`` gets, per reading admitted from a peer, the time since its timestamp
    (reading clock to here: same-host clocks make it the gossip delay); ``delivery_delay``,
    per transaction admitted from a peer's push of its clients' transactions, the time since
    that peer admitted them (its stamp: the hop from its admission to this one's)."""

    def __init__(self, mempool: Mempool, inbox: Inbox, gossip: TxGossip, feed: BlockFeed, *,
                 now_ms: Callable[[], int], gossip_delay: LatencyWindow,
                 delivery_delay: LatencyWindow) -> None:
        self.mempool = mempool
        self.inbox = inbox
        self._gossip = gossip
        self._now_ms = now_ms
        self._gossip_delay = gossip_delay
        self._delivery_delay = delivery_delay
        # figures (plain ints: counted per chunk, or per refusal only)
        self._received_clients = 0
        self._received_peers = 0
        self._rejected: dict[type[Exception], int] = {}
        feed.listen(self._committed)

    def _committed(self, committed: Sequence[Committed]) -> None:
        self.mempool.committed(committed)  # first: the gossip's probes look the ids up
        self._gossip.committed(tx.id for done in committed for tx in done.block.txs)

    def stats(self) -> AdmissionStats:
        mempool = self.mempool
        return AdmissionStats(len(mempool), mempool.dropped_total,
                              mempool.verifier.verified_count, self.inbox.queued,
                              self.inbox.backlog(), mempool.max_txs,
                              {"client": self._received_clients, "peer": self._received_peers},
                              _by_name(self._rejected), _by_name(mempool.drops))

    def _refused(self, kind: type[Exception]) -> None:
        self._rejected[kind] = self._rejected.get(kind, 0) + 1

    # clients ---------------------------------------------------------------------------

    async def submit(self, raw: bytes, *, reading_only: bool = False) -> SignedTx:
        """Admit a client's transaction and keep it (a restart re-admits it) before
        returning it, then push it to the peers; raises the precise RuleError on refusal.
        With ``reading_only``, anything but a reading is refused."""
        [result] = await self.submit_many([raw], reading_only=reading_only)
        if isinstance(result, e.RuleError):
            raise result
        return result

    async def submit_many(self, raws: Sequence[bytes], *, reading_only: bool = False
                          ) -> list[Admitted]:
        """Admit a client's batch in order; returns, per transaction, the admitted one
        (durable already) or the RuleError that refused it. Waits while the inbox's lane for
        clients is full; a large batch is admitted a chunk per step, between chunks of peers'."""
        if not raws:
            return []
        replies: list[list[Admitted]] = []
        done = trio.Event()

        def reply(results: list[Admitted]) -> None:
            replies.append(results)
            done.set()

        await self.inbox.put(FromClient(raws, reading_only, reply))
        await done.wait()
        return replies[0]

    def submit_nowait(self, raw: bytes, reply: Callable[[Admitted], None]) -> None:
        """Queue the node's own transaction (never waits, and a full inbox does not hold
        it back: it has a lane of its own): ``reply`` gets the outcome. Raises
        :class:`~.inbox.InboxFullError` only when that lane is full."""
        self.inbox.put_own(FromClient([raw], False, lambda results: reply(results[0])))

    # the admission task ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Admit again what this node accepted and had not committed when it last stopped
        (before reporting started), then admit what the inbox gets until cancelled."""
        readmitted, dropped = self.mempool.readmit()
        if readmitted or dropped:
            log.info("pending_txs_readmitted", admitted=readmitted, dropped=dropped)
        task_status.started()
        while True:
            await self._admit(await self.inbox.take(CHUNK))

    async def _admit(self, step: Step) -> None:
        for start in range(0, len(step), CHUNK):
            chunk = step[start:start + CHUNK] if len(step) > CHUNK else step
            await self._admit_chunk(chunk)
            from_peers = sum(1 for item, _ in chunk if type(item) is FromPeer)
            self.inbox.handled(from_peers)
            self._received_peers += from_peers
            self._received_clients += len(chunk) - from_peers
            # others run between chunks even when a chunk needed no verification hop
            # (duplicates, malformed, a full mempool): the hop is its only other yield
            await trio.lowlevel.checkpoint()

    async def _admit_chunk(self, chunk: list[tuple[Item, bytes]]) -> None:
        slots: list[Admitted | None] = [None] * len(chunk)  # clients' results, by position
        txs: list[SignedTx] = []  # to admit, in order
        owners: list[int] = []  # ... each one's position in ``chunk``
        gossip = self._gossip
        in_chunk: set[bytes] = set()
        for i, (item, raw) in enumerate(chunk):  # the one decode of a received transaction
            if type(item) is FromPeer:
                try:
                    tx = decode_tx(raw, complete=True)
                except MalformedTxError as exc:
                    gossip.malformed(item.peer, exc)
                    self._refused(e.MalformedTxRuleError)
                    continue
                if not gossip.screen(item.peer, tx, in_chunk):
                    continue
            else:
                try:
                    tx = Mempool.decode(raw, reading_only=item.reading_only)
                    self.mempool.require_blob(tx)
                except e.RuleError as exc:
                    slots[i] = exc
                    self._refused(type(exc))
                    continue
            txs.append(tx)
            owners.append(i)
        results = await admit_chunk(self.mempool, txs) if txs else []
        relayed: list[tuple[Peer, SignedTx]] = []
        relayed_results: list[Admitted] = []
        stamps: list[int] = []  # each relayed one's push stamp (0: none)
        kept: list[SignedTx] = []
        for i, tx, result in zip(owners, txs, results, strict=True):
            item = chunk[i][0]
            if type(item) is FromPeer:
                relayed.append((item.peer, tx))
                relayed_results.append(result)
                stamps.append(item.admitted_ms)
            else:
                slots[i] = result
                if isinstance(result, SignedTx):
                    kept.append(result)
                else:
                    self._refused(type(result))
        if relayed:
            self._from_peers(relayed, relayed_results, stamps)
        if kept:
            self.mempool.keep(kept)  # durable before they are acknowledged
            gossip.local(kept)
        self._reply(chunk, slots)

    def _from_peers(self, relayed: list[tuple[Peer, SignedTx]], results: list[Admitted],
                    stamps: list[int]) -> None:
        self._gossip.relay(relayed, results)
        now = self._now_ms()
        for result, stamp in zip(results, stamps, strict=True):
            if isinstance(result, SignedTx):
                if stamp:
                    self._delivery_delay.add(now - stamp)
                if isinstance(result.body, Reading):
                    self._gossip_delay.add(now - result.body.ts_ms)
            else:
                self._refused(type(result))

    @staticmethod
    def _reply(chunk: list[tuple[Item, bytes]], slots: list[Admitted | None]) -> None:
        """Give clients their results; reply to each whose last transaction was here."""
        for (item, _), slot in zip(chunk, slots, strict=True):
            if type(item) is FromClient:
                assert slot is not None, "every client transaction gets a result"
                item.results.append(slot)
                if len(item.results) == len(item.raws):
                    item.reply(item.results)
