"""Assembling compact blocks: the one way a block that travels without its transactions'
bytes is made whole, for proposals (consensus) and for relayed final blocks (sync).

A compact block is a header, the ids of its transactions and the parent's certificate.
Gossip put the transactions in every mempool already, so the receiver fills them in by id
(the mempool holds the exact signed transaction, its signature verified once). It asks for
the ones it lacks with :class:`~.messages.GetBlockTxs` (block hash and indexes, at most
:data:`~iomtnode.core.block.MAX_IDS_PER_MESSAGE` a message) from a peer that sent it the
compact block; a node that holds the block answers with :class:`~.messages.BlockTxs`
(:class:`.blocktxs.BlockTxsReactor`). The block is then assembled with
:func:`~iomtnode.core.block.assemble_block`, which checks the transaction count and root
against the header.

Bounds and failures of a fetch (:class:`Assembler`):

- at most :data:`PENDING_BLOCKS` blocks wait for transactions; beyond, the oldest is dropped;
- the source asked is replaced by the next peer that sent the same compact block when it
  has not answered in full within :data:`ASK_TIMEOUT_S`, answers that it does not hold the
  block, or sends anything but the transactions asked for (that costs it
  :data:`~iomtnode.p2p.score.INVALID_MESSAGE`);
- a transaction missing from the mempool is often only queued for admission (a peer pushed
  it just before the block, and a loaded node admits behind its reader): while the
  admission inbox holds transactions received before the block, the fetch waits, at most
  :data:`HOLD_S`, until they are admitted, then looks again and asks only for what is still
  missing (asking would make a peer send, and this node decode, every one twice). With
  ``hold_txs``, it waits only if at most that many are queued (more could not be admitted
  in that time);
- after :data:`PENDING_TIMEOUT_S` the block is dropped (``on_drop`` is told);
- an answer may repeat what is filled already with the same bytes (a source asked again
  answers its earlier request too); the block is made whole once nothing is missing;
- an id covers a transaction's body only, so when the transactions do not give the
  header's root and more than one source sent them, those fetched are verified: a source
  that sent a forged one is charged :data:`~iomtnode.p2p.score.BAD_SIGNATURE`, never asked
  again, and what it sent is fetched from the others; else mempool copies (other
  signature bytes) are fetched again; else the ids were wrong and the block is dropped,
  its compact block's sender charged ``bad_ids_points`` if it sent all those fetched.

The assembler does no I/O of its own and never blocks: its owner feeds it answers and calls
:meth:`Assembler.tick` by :meth:`Assembler.deadline`, or waits for the inbox itself and
calls :meth:`Assembler.release`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import structlog
import trio

from ..core.block import MAX_IDS_PER_MESSAGE, Block, Commit, MalformedBlockError, assemble_block
from ..core.crypto import BadSignatureError
from ..core.tx import MalformedTxError, SignedTx, decode_tx
from ..p2p import score
from .inbox import Progress
from .messages import BlockTxs, GetBlockTxs

log = structlog.get_logger(__name__)

PENDING_BLOCKS = 8  # blocks waiting for transactions; beyond, the oldest goes
ASK_TIMEOUT_S = 1.0  # a source that has not answered in full by then: ask the next one
PENDING_TIMEOUT_S = 5.0  # a block still incomplete by then is dropped
HOLD_S = 0.25  # how long missing transactions may be waited for from the admission inbox


class Compact(Protocol):
    """A block in compact form (a compact proposal or a compact final block)."""

    @property
    def header(self) -> bytes: ...

    @property
    def tx_ids(self) -> list[bytes]: ...

    @property
    def last_commit(self) -> bytes: ...


class Waiter(Protocol):
    """What waits for a block: the peer it came from, its compact form, its key (unique
    per waiter; a fetch is found by it) and the height (for the logs)."""

    @property
    def peer_id(self) -> bytes: ...

    @property
    def msg(self) -> Compact: ...

    @property
    def key(self) -> bytes: ...

    @property
    def height(self) -> int: ...


W = TypeVar("W", bound=Waiter)


@dataclass(slots=True)
class _Fetch(Generic[W]):
    msg: Compact  # the compact block whose ids are used
    origin: bytes  # the peer it came from
    last_commit: Commit | None
    txs: list[SignedTx | None]
    waiting: list[W]
    expires: float
    from_mempool: bool  # some transactions came from the mempool
    sources: list[bytes] = field(default_factory=list)  # peers that sent this compact form
    tried: set[bytes] = field(default_factory=set)
    bad: set[bytes] = field(default_factory=set)  # sources that sent a forged transaction
    supplied: dict[bytes, list[int]] = field(default_factory=dict)  # peer -> indexes fetched
    asked: bytes | None = None
    asked_for: set[int] = field(default_factory=set)
    ask_until: float = math.inf
    hold_mark: int | None = None  # waiting for the inbox to pass this mark...
    hold_until: float = math.inf  # ... until then at most


class Assembler(Generic[W]):
    """Fill compact blocks' transactions from the mempool (``lookup(id)``) and fetch the
    missing ones from peers (module doc): ``send(peer_id, request)`` (False: not
    connected), ``penalize(peer_id, points, reason)``. ``on_drop(waiter)`` is told of each
    waiter given up (timed out, evicted, or with wrong ids). ``verify(tx)`` raises
    BadSignatureError for a forged transaction. ``what`` names the blocks in logs and
    penalty reasons ("proposal", "block")."""

    def __init__(self, lookup: Callable[[bytes], SignedTx | None],
                 send: Callable[[bytes, GetBlockTxs], bool],
                 penalize: Callable[[bytes, int, str], None],
                 on_drop: Callable[[W], None], inbox: Progress | None = None, *,
                 verify: Callable[[SignedTx], None],
                 what: str, bad_ids_points: int = score.INVALID_MESSAGE,
                 hold_txs: int | None = None) -> None:
        self._lookup = lookup
        self._verify = verify
        self._send = send
        self._penalize = penalize
        self._on_drop = on_drop
        self._inbox = inbox
        self._what = what
        self._bad_ids_points = bad_ids_points
        self._hold_txs = hold_txs
        self._fetches: dict[bytes, _Fetch[W]] = {}  # block hash -> fetch, oldest first
        self._keys: dict[bytes, bytes] = {}  # waiter key -> block hash

    def __len__(self) -> int:
        return len(self._fetches)

    def fill(self, block_hash: bytes, waiter: W, last_commit: Commit | None) -> Block | None:
        """The block ``block_hash`` of ``waiter`` if the mempool holds all its transactions
        (or raises MalformedBlockError: count or certificate not those of the header); else
        None, and the missing ones are being waited for or fetched."""
        fetch = self._fetches.get(block_hash)
        if fetch is not None:  # another waiter for a block being fetched (re-proposal)
            fetch.waiting.append(waiter)
            self._keys[waiter.key] = block_hash
            self.add_source(waiter.key, waiter.peer_id, waiter.msg)
            return None
        msg = waiter.msg
        txs = [self._lookup(tx_id) for tx_id in msg.tx_ids]
        other_bytes = False
        if all(tx is not None for tx in txs):
            try:
                return assemble_block(msg.header, tuple(t for t in txs if t is not None),
                                      last_commit)
            except MalformedBlockError:
                if not txs:
                    raise
                txs = [None] * len(txs)  # copies with other bytes: fetch them all
                other_bytes = True  # ... at once: the inbox cannot help
        now = trio.current_time()
        fetch = _Fetch(msg, waiter.peer_id, last_commit, txs, [waiter],
                       now + PENDING_TIMEOUT_S, any(tx is not None for tx in txs),
                       [waiter.peer_id])
        while len(self._fetches) >= PENDING_BLOCKS:
            self._drop(next(iter(self._fetches)), "too many pending")
        self._fetches[block_hash] = fetch
        self._keys[waiter.key] = block_hash
        log.debug("block_txs_missing", what=self._what, height=waiter.height,
                  missing=txs.count(None), txs=len(txs))
        if not other_bytes and self._should_hold():
            assert self._inbox is not None
            mark = self._inbox.mark()
            if not self._inbox.admitted(mark):
                fetch.hold_mark, fetch.hold_until = mark, now + HOLD_S
                return None
        self._ask(block_hash, fetch, now)
        return None

    def _should_hold(self) -> bool:
        inbox = self._inbox
        if inbox is None:
            return False
        return self._hold_txs is None or 0 < inbox.backlog() <= self._hold_txs

    @property
    def holding(self) -> bool:
        """Whether a fetch waits for the inbox."""
        return any(f.hold_mark is not None for f in self._fetches.values())

    def held(self, block_hash: bytes) -> int | None:
        """The inbox mark the fetch of ``block_hash`` waits for (None: it does not wait)."""
        fetch = self._fetches.get(block_hash)
        return None if fetch is None else fetch.hold_mark

    def release(self, block_hash: bytes) -> tuple[Block, list[W]] | None:
        """End the wait for the inbox of the fetch of ``block_hash``, if it waits: take what
        the mempool now holds; the block and its waiters if that makes it whole, else the
        rest is asked for."""
        fetch = self._fetches.get(block_hash)
        if fetch is None or fetch.hold_mark is None:
            return None
        return self._release(block_hash, fetch, trio.current_time())

    def _release(self, block_hash: bytes, fetch: _Fetch[W], now: float
                 ) -> tuple[Block, list[W]] | None:
        fetch.hold_mark, fetch.hold_until = None, math.inf
        for index, tx_id in enumerate(fetch.msg.tx_ids):
            if fetch.txs[index] is None and (tx := self._lookup(tx_id)) is not None:
                fetch.txs[index] = tx
                fetch.from_mempool = True
        if any(tx is None for tx in fetch.txs):
            self._ask(block_hash, fetch, now)
            return None
        block = self._complete(block_hash, fetch, now)
        return None if block is None else (block, fetch.waiting)

    def pending(self, key: bytes) -> bool:
        """Whether the waiter with ``key`` waits for transactions."""
        return key in self._keys

    def expects(self, peer_id: bytes, block_hash: bytes) -> bool:
        """Whether transactions of ``block_hash`` were asked of ``peer_id``."""
        fetch = self._fetches.get(block_hash)
        return fetch is not None and fetch.asked == peer_id

    def add_source(self, key: bytes, peer_id: bytes, msg: Compact) -> None:
        """``peer_id`` sent a copy of the pending ``key``: ask it too, if it sent the same
        ids and nobody is being asked."""
        block_hash = self._keys.get(key, b"")
        fetch = self._fetches.get(block_hash)
        if fetch is None or peer_id in fetch.sources or msg.tx_ids != fetch.msg.tx_ids or (
                msg.last_commit != fetch.msg.last_commit):
            return
        fetch.sources.append(peer_id)
        if fetch.asked is None and fetch.hold_mark is None:
            self._ask(block_hash, fetch, trio.current_time())

    def on_txs(self, peer_id: bytes, msg: BlockTxs) -> tuple[Block, list[W]] | None:
        """Take an answer; the block and its waiters once it is whole."""
        fetch = self._fetches.get(msg.block_hash)
        if fetch is None or fetch.asked != peer_id:
            return None  # late (answered by another, or given up): harmless
        now = trio.current_time()
        if not msg.indexes:  # it does not hold the block
            self._ask(msg.block_hash, fetch, now)
            return None
        wrong = self._take(peer_id, fetch, msg)
        if wrong is not None:
            self._penalize(peer_id, score.INVALID_MESSAGE, f"{self._what} txs: {wrong}")
            if None in fetch.txs:
                self._ask(msg.block_hash, fetch, now)
                return None
        elif fetch.asked_for:
            return None  # more answers to come
        block = self._complete(msg.block_hash, fetch, now)  # nothing missing: at once
        if block is None:
            return None
        log.debug("block_txs_fetched", what=self._what, height=block.height,
                  txs=len(block.txs), source=peer_id.hex()[:16])
        return block, fetch.waiting

    def _complete(self, block_hash: bytes, fetch: _Fetch[W], now: float) -> Block | None:
        """The block of a fetch whose transactions are all at hand (the fetch is done);
        else None: forged transactions or mempool copies with other bytes are fetched
        again, or the ids were not the block's and it is dropped (module doc)."""
        txs = tuple(t for t in fetch.txs if t is not None)
        try:
            block = assemble_block(fetch.msg.header, txs, fetch.last_commit)
        except MalformedBlockError as exc:
            mixed = not {peer for peer, got in fetch.supplied.items() if got} <= {fetch.origin}
            if mixed and self._forged(fetch):  # an id covers the body only
                fetch.tried.clear()
                self._ask(block_hash, fetch, now)
                return None
            if fetch.from_mempool:  # a mempool copy has other bytes: fetch them all
                fetch.from_mempool = False
                fetch.txs = [None] * len(fetch.txs)
                fetch.supplied.clear()
                fetch.tried.clear()
                self._ask(block_hash, fetch, now)
                return None
            if not mixed:
                self._penalize(fetch.origin, self._bad_ids_points,
                               f"compact {self._what}: ids not those of the block: {exc}")
            self._drop(block_hash, "ids not those of the block")
            return None
        self._forget(block_hash)
        return block

    def _forged(self, fetch: _Fetch[W]) -> bool:
        """Whether a source sent a forged transaction (penalised, not asked again)."""
        found = False
        for peer_id, indexes in list(fetch.supplied.items()):
            try:
                for index in indexes:
                    self._verify(fetch.txs[index])  # type: ignore[arg-type]  # fetched
            except BadSignatureError as exc:
                self._penalize(peer_id, score.BAD_SIGNATURE, f"{self._what} txs: {exc}")
                fetch.bad.add(peer_id)
                for index in fetch.supplied.pop(peer_id):
                    fetch.txs[index] = None
                found = True
        return found

    def _take(self, peer_id: bytes, fetch: _Fetch[W], msg: BlockTxs) -> str | None:
        """Fill in the answered transactions (an index filled already with the same bytes
        is skipped: module doc); what is wrong with the answer, if anything."""
        if len(msg.indexes) != len(msg.txs):
            return "as many indexes as transactions are needed"
        supplied = fetch.supplied.setdefault(peer_id, [])
        for index, raw in zip(msg.indexes, msg.txs, strict=True):
            if index not in fetch.asked_for:
                held = fetch.txs[index] if 0 <= index < len(fetch.txs) else None
                if held is not None and held.raw == raw:
                    continue
                return f"index {index} was not asked for"
            try:
                tx = decode_tx(raw)
            except MalformedTxError as exc:
                return str(exc)
            if tx.id != fetch.msg.tx_ids[index]:
                return f"the transaction at {index} is not the one asked for"
            fetch.txs[index] = tx
            fetch.asked_for.discard(index)
            supplied.append(index)
        return None

    def _ask(self, block_hash: bytes, fetch: _Fetch[W], now: float) -> None:
        """Ask the next untried source for every missing transaction."""
        fetch.asked, fetch.asked_for, fetch.ask_until = None, set(), math.inf
        missing = [i for i, tx in enumerate(fetch.txs) if tx is None]
        if not missing:
            return
        for peer_id in fetch.sources:
            if peer_id in fetch.tried or peer_id in fetch.bad:
                continue
            fetch.tried.add(peer_id)
            fetch.asked, fetch.asked_for = peer_id, set(missing)  # before an answer can come
            fetch.ask_until = now + ASK_TIMEOUT_S
            if all(self._send(peer_id,
                              GetBlockTxs(block_hash, missing[i:i + MAX_IDS_PER_MESSAGE]))
                   for i in range(0, len(missing), MAX_IDS_PER_MESSAGE)):
                return
            fetch.asked, fetch.asked_for, fetch.ask_until = None, set(), math.inf

    def deadline(self) -> float:
        """When :meth:`tick` has something to do (trio clock)."""
        return min((min(f.expires, f.ask_until, f.hold_until) for f in self._fetches.values()),
                   default=math.inf)

    def tick(self, now: float) -> list[tuple[Block, list[W]]]:
        """Drop the blocks waited for too long; ask the next source where one is slow; end
        the waits for the inbox that are over. Returns the blocks that the mempool made
        whole meanwhile, each with its waiters."""
        whole = []
        for block_hash, fetch in list(self._fetches.items()):
            if now >= fetch.expires:
                self._drop(block_hash, "timed out")
            elif fetch.hold_mark is not None:
                assert self._inbox is not None, "only an inbox makes a fetch wait"
                over = now >= fetch.hold_until or self._inbox.admitted(fetch.hold_mark)
                if over and (done := self._release(block_hash, fetch, now)) is not None:
                    whole.append(done)
            elif now >= fetch.ask_until:
                self._ask(block_hash, fetch, now)
        return whole

    def clear(self) -> None:
        """Forget every fetch (a new height)."""
        self._fetches.clear()
        self._keys.clear()

    def _forget(self, block_hash: bytes) -> _Fetch[W]:
        fetch = self._fetches.pop(block_hash)
        for waiter in fetch.waiting:
            self._keys.pop(waiter.key, None)
        return fetch

    def _drop(self, block_hash: bytes, why: str) -> None:
        fetch = self._forget(block_hash)
        log.info("block_txs_given_up", what=self._what, height=fetch.waiting[0].height,
                 reason=why, missing=fetch.txs.count(None), sources=len(fetch.sources))
        for waiter in fetch.waiting:
            self._on_drop(waiter)

