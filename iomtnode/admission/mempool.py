"""The mempool: admitted transactions waiting for a block, bounded, checked once.

Admission runs the cheap checks first (size, decode, duplicate id, and the state's rules on
the signer: a known, active device or a key with the right to sign that kind, and a reading's
sequence number inside its device's window), then verifies the signature (once per
transaction and node, through the :class:`~.verify.Verifier`, which remembers what passed),
then the state rules against the committed state plus every pending transaction, so the pool
only holds transactions that fit together in order. A transaction from a key without the
right to sign it, or a replayed reading, costs a few lookups and never a verification.

Synchronous; :func:`iomtnode.admission.batch.admit_chunk` admits a chunk with its
signatures verified in worker threads, for the admission service (:mod:`.service`). The
pool follows the chain through the commit feed (:meth:`Mempool.committed`): the chain
never calls it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from ..chain.chain import Chain
from ..chain.feed import Committed
from ..core import errors as e
from ..core import window
from ..core.block import Block
from ..core.crypto import BadSignatureError
from ..core.ledger import BlockContext, State
from ..core.state import apply, begin_block, check_signer
from ..core.tx import (
    MalformedTxError,
    Reading,
    SidecarError,
    SignedTx,
    UnpaddedSidecarError,
    decode_tx,
)
from ..store.txlog import Drop
from .verify import Verifier

log = structlog.get_logger(__name__)

DEFAULT_MAX_TXS = 50_000  # pending transactions; more are refused with MempoolFullError


class Mempool:
    """Pending transactions in arrival order, valid on top of the committed state."""

    def __init__(self, chain: Chain, *, now_ms: Callable[[], int],
                 max_txs: int = DEFAULT_MAX_TXS, verifier: Verifier | None = None) -> None:
        self._chain = chain
        self._now_ms = now_ms
        self.max_txs = max_txs
        self.verifier = verifier or Verifier(chain.chain_id)
        self._txs: dict[bytes, SignedTx] = {}
        self._txlog = chain.store.txlog
        self._sidecars = chain.store.sidecars
        # pending class 1 or 2 readings -> their blob's commitment: the upload is kept while
        # the reading waits (:meth:`~iomtnode.store.sidecars.Sidecars.claim`)
        self._claims: dict[bytes, bytes] = {}
        self._drop_listeners: list[Callable[[Sequence[Drop]], None]] = []
        self._state, self._ctx = self._fresh_state()
        # accepted transactions dropped since the start, by their error's class (metrics)
        self.drops: dict[type[e.RuleError], int] = {}

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self._txs

    def _fresh_state(self) -> tuple[State, BlockContext]:
        ctx = BlockContext(self._chain.height + 1, self._now_ms(), self._chain.genesis)
        state = self._chain.state()
        begin_block(state, ctx)
        return state, ctx

    def _check_room(self) -> None:
        if len(self._txs) >= self.max_txs:
            raise e.MempoolFullError(
                f"mempool holds {self.max_txs} transactions; retry after the next block"
            )

    def add(self, raw: bytes, *, reading_only: bool = False) -> SignedTx:
        """Admit one transaction from untrusted bytes, or raise the precise RuleError.

        With ``reading_only``, anything but a :class:`Reading` is refused.
        """
        self._check_room()
        return self.add_tx(self.decode(raw, reading_only=reading_only))

    @staticmethod
    def decode(raw: bytes, *, reading_only: bool = False) -> SignedTx:
        """Decode untrusted bytes (signature not checked) or raise MalformedTxRuleError."""
        try:
            tx = decode_tx(raw, complete=True)
        except UnpaddedSidecarError as exc:
            raise e.UnpaddedPayloadError(str(exc)) from None
        except SidecarError as exc:
            raise e.CommitmentMismatchError(str(exc)) from None
        except MalformedTxError as exc:
            raise e.MalformedTxRuleError(str(exc)) from None
        if reading_only and not isinstance(tx.body, Reading):
            raise e.MalformedTxRuleError(f"expected a reading, got a {tx.kind_name}")
        return tx

    def require_blob(self, tx: SignedTx) -> None:
        """A client's class 1 or 2 reading is admitted only once this node holds its blob
        (uploaded first with ``put_blob``), so the blob is on at least one node when the
        reading commits; one relayed by a peer is not asked this: the peer held the blob,
        and nodes that commit the reading without it fetch it (:mod:`iomtnode.sync.blobs`)."""
        body = tx.body
        if type(body) is Reading and body.size_class and not self._chain.holds_blob(
                body.commitment):
            raise e.BlobNotUploadedError(
                f"blob not uploaded: a size class {body.size_class} reading is admitted once "
                f"this node holds its blob {body.commitment.hex()[:16]} (put_blob first)")

    def precheck(self, tx: SignedTx) -> None:
        """The checks that come before the signature: room, pending already, the signer's
        right in the pending state (:func:`~iomtnode.core.state.check_signer`), a reading's
        sequence number, committed already. Each is a lookup, so a transaction that would
        be refused anyway costs no signature verification.

        A reading whose sequence number is unused in its device's window in the pending
        state cannot be in a block, so the store is not asked (it would be once per
        transaction, and a reading is nearly every transaction a node admits): a committed
        reading is marked in the committed state's window, and the pending state is the
        committed one plus the pending transactions, so there it is marked too, or has
        fallen below the window. Numbered above the highest is the usual, cheapest case.
        A used or too old number not in a block is refused with the window's reason."""
        self._check_pending(tx)
        body = tx.body
        state = self._state
        if type(body) is Reading:
            check_signer(state, body)
            record = state.seq_record(body.device)
            size = self._ctx.genesis.replay_window
            if window.fresh(record, body.seq, size):  # above the highest: the usual case
                return
            self._check_committed(tx)
            window.use(record, body.seq, size)  # raises: the number is used or too old
            return
        self._check_committed(tx)  # a committed one is refused as such, whoever signed it
        check_signer(state, body)

    def _check_committed(self, tx: SignedTx) -> None:
        location = self._chain.store.tx_location(tx.id)
        if location is not None:
            raise e.DuplicateTxError(
                f"transaction {tx.id.hex()[:16]} is already in block {location[0]}"
            )

    def _check_pending(self, tx: SignedTx) -> None:
        self._check_room()
        if tx.id in self._txs:
            raise e.DuplicateTxError(f"transaction {tx.id.hex()[:16]} is already pending")

    def add_tx(self, tx: SignedTx, *, prechecked: bool = False) -> SignedTx:
        """Admit a decoded transaction; see :meth:`add`. Its signature is verified here
        unless the verifier passed this exact transaction before.

        ``prechecked``: :meth:`precheck` passed, then the signature was verified (other
        tasks ran since): room and pending are checked again, but not the store, since a
        block that committed the transaction meanwhile makes the state rules refuse it (a
        reading by its sequence number, every other kind by its effect or its id)."""
        if prechecked:  # and its signature verified by the caller (admit_chunk)
            self._check_pending(tx)
        else:
            self.precheck(tx)
            try:
                self.verifier.verify_now(tx)
            except BadSignatureError as exc:
                raise bad_signature(tx, exc) from None
        now = self._now_ms()
        if now != self._ctx.time_ms:
            self._ctx = BlockContext(self._ctx.height, now, self._ctx.genesis)
        apply(self._state, tx, self._ctx)  # raises the rule's error; state untouched then
        self._txs[tx.id] = tx
        body = tx.body
        if type(body) is Reading and body.size_class:
            self._claims[tx.id] = body.commitment
            self._sidecars.claim((body.commitment,))
        return tx

    def get(self, tx_id: bytes) -> SignedTx | None:
        return self._txs.get(tx_id)

    def verified(self, tx: SignedTx) -> bool:
        """Whether this exact transaction (same bytes) was verified on this node: it is
        pending here, or the verifier passed it."""
        held = self._txs.get(tx.id)
        return (held is not None and held.raw == tx.raw) or tx in self.verifier

    def oldest(self, limit: int) -> list[SignedTx]:
        """Up to ``limit`` pending transactions in arrival order (they stay pending)."""
        return list(itertools.islice(self._txs.values(), limit))

    def pending(self, limit: int) -> list[SignedTx]:
        """Up to ``limit`` pending transactions (they stay pending), for a block: in arrival
        order, except that each device's readings are in sequence order (see
        :func:`in_sequence_order`)."""
        return in_sequence_order(self.oldest(limit))

    def _is_prefix(self, txs: Sequence[SignedTx]) -> bool:
        """Whether ``txs`` are the oldest pending transactions, byte for byte, in order."""
        if len(txs) > len(self._txs):
            return False
        return all(map(_same_bytes, txs, self._txs.values()))

    def committed(self, committed: Sequence[Committed]) -> None:
        """The commit feed's listener: drop the committed blocks' transactions, re-check
        the rest (:meth:`blocks_committed`), and let the verifier forget them."""
        blocks = [done.block for done in committed]
        self.blocks_committed(blocks)
        for block in blocks:
            self.verifier.forget(block.txs)

    def blocks_committed(self, blocks: Sequence[Block]) -> None:
        """Drop the consecutive blocks' transactions and re-check the rest against the new
        state (one re-check for all).

        When the blocks hold exactly the oldest pending transactions in pending order (a
        node's mempool and the proposer's usually agree) and no authority change is
        scheduled (the start of the next block changes nothing then), the rest need no
        re-check: the pending state was the committed state plus those transactions, then
        the rest, in this order, so it still is. Only the next block's height changes."""
        committed = [tx for block in blocks for tx in block.txs]
        if not self._state.scheduled_changes() and self._is_prefix(committed):
            for tx in committed:
                del self._txs[tx.id]
            self._release(committed)
            self._ctx = BlockContext(self._chain.height + 1, self._now_ms(),
                                     self._chain.genesis)
            return
        for tx in committed:
            self._txs.pop(tx.id, None)
        self._release(committed)
        self._recheck()

    def _release(self, txs: Sequence[SignedTx]) -> None:
        """The blob claims of ``txs`` (no longer pending) go back."""
        if self._claims:
            gone = [c for tx in txs if (c := self._claims.pop(tx.id, None)) is not None]
            if gone:
                self._sidecars.release(gone)

    def _recheck(self) -> None:
        """Apply every pending transaction again, in order, on the committed state; drop
        (and record) those that no longer apply."""
        self._state, self._ctx = self._fresh_state()
        survivors: dict[bytes, SignedTx] = {}
        dropped: list[tuple[SignedTx, e.RuleError]] = []
        for tx_id, tx in self._txs.items():
            try:
                apply(self._state, tx, self._ctx)
            except e.RuleError as exc:
                dropped.append((tx, exc))
            else:
                survivors[tx_id] = tx
        self._txs = survivors
        self._release([tx for tx, _ in dropped])
        self._record_drops([(tx.id, exc) for tx, exc in dropped])

    def drop(self, refused: Sequence[tuple[SignedTx, e.RuleError]]) -> None:
        """Drop pending transactions that a block being built refused (recorded, logged),
        then re-check the rest: the pending state held the refused ones' effects."""
        gone = [(tx, exc) for tx, exc in refused if self._txs.pop(tx.id, None) is not None]
        if gone:
            self._release([tx for tx, _ in gone])
            self._record_drops([(tx.id, exc) for tx, exc in gone])
            self._recheck()

    def listen_drops(self, listener: Callable[[Sequence[Drop]], None]) -> None:
        """Call ``listener(drops)`` after each batch of drops is recorded, from now on (the
        API's transaction status subscriptions); it must not block."""
        self._drop_listeners.append(listener)

    def _record_drops(self, dropped: Sequence[tuple[bytes, e.RuleError]]) -> None:
        """Tell of accepted transactions that will never be committed here: a warning
        each, and the durable record that ``get_tx_status`` and ``get_receipt`` read."""
        if not dropped:
            return
        height = self._chain.height
        drops = self.drops
        for tx_id, exc in dropped:
            drops[type(exc)] = drops.get(type(exc), 0) + 1
            # a warning for what this node acknowledged to a client (its pending entry is
            # kept until committed or dropped); a peer's transaction may well be committed
            # by the proposer that holds it
            client = self._txlog.is_pending(tx_id)
            (log.warning if client else log.info)(
                "tx_dropped", tx=tx_id.hex(), code=exc.code, reason=str(exc), client=client)
        drops = [Drop(tx_id, exc.code, str(exc), height) for tx_id, exc in dropped]
        self._txlog.record_drops(drops)
        for listener in self._drop_listeners:
            listener(drops)

    def readmit(self) -> tuple[int, int]:
        """Admit again the transactions this node accepted and had not committed when it
        last stopped (see :class:`~iomtnode.store.txlog.TxLog`), in the order they were
        accepted; those no longer valid are dropped with the reason. Returns how many were
        admitted and how many dropped. Call once, on an empty mempool, before serving."""
        committed: list[bytes] = []
        dropped: list[tuple[bytes, e.RuleError]] = []
        admitted = 0
        for tx_id, raw in list(self._txlog.pending()):
            if self._chain.store.tx_location(tx_id) is not None:
                committed.append(tx_id)  # its block's batch lost the race to its entry
                continue
            try:
                self.add(raw)
            except e.RuleError as exc:
                dropped.append((tx_id, exc))
            else:
                admitted += 1
        self._txlog.forget(committed)
        self._record_drops(dropped)
        return admitted, len(dropped)

    def tx_status(self, tx_id: bytes) -> dict[str, Any]:
        """What this node knows of ``tx_id``: ``{id, state}`` with ``state`` one of
        committed (with ``height``), pending, dropped (with ``code``, ``reason`` and the
        ``height`` it was dropped at) or unknown (never accepted here, or its drop record
        was forgotten: see :data:`~iomtnode.store.txlog.MAX_DROP_RECORDS`)."""
        location = self._chain.store.tx_location(tx_id)
        if location is not None:
            return {"id": tx_id.hex(), "state": "committed", "height": location[0]}
        if tx_id in self._txs:
            return {"id": tx_id.hex(), "state": "pending"}
        drop = self._txlog.dropped(tx_id)
        if drop is not None:
            return {"id": tx_id.hex(), "state": "dropped", "height": drop.height,
                    "code": drop.code, "reason": drop.reason}
        return {"id": tx_id.hex(), "state": "unknown"}

    @property
    def dropped_total(self) -> int:
        """Accepted transactions this node has dropped, ever (kept over restarts)."""
        return self._txlog.dropped_total

    def keep(self, txs: Sequence[SignedTx]) -> None:
        """Make admitted transactions durable before they are acknowledged (one write),
        so a restart re-admits them (see :meth:`readmit`)."""
        self._txlog.keep([(tx.id, tx.raw) for tx in txs])


def in_sequence_order(txs: list[SignedTx]) -> list[SignedTx]:
    """``txs`` with each device's readings sorted by sequence number, in the places its
    readings held (every other transaction keeps its place); ``txs`` itself when every
    device's readings are in order already, as they nearly always are.

    Readings admitted out of order (a gateway's backlog after a partition) are valid in
    either order inside the window, and a block in sequence order keeps the window moving
    forward only; the mempool's fast path after a commit needs the block in pending order,
    so a block is reordered only when it must be. Readings of different epochs are not
    swapped (they are sorted by epoch first): each is valid only on its side of the epoch
    announcement between them, and in pending order a device's earlier epochs come first."""
    highest: dict[bytes, int] = {}
    disordered: set[bytes] = set()
    for tx in txs:
        body = tx.body
        if type(body) is Reading:
            if body.seq < highest.get(body.device, 0):
                disordered.add(body.device)
            else:
                highest[body.device] = body.seq
    if not disordered:
        return txs
    places: dict[bytes, list[int]] = {}
    for i, tx in enumerate(txs):
        body = tx.body
        if type(body) is Reading and body.device in disordered:
            places.setdefault(body.device, []).append(i)
    out = list(txs)
    for where in places.values():
        ordered = sorted((txs[i] for i in where), key=_epoch_seq)
        for i, tx in zip(where, ordered, strict=True):
            out[i] = tx
    return out


def _epoch_seq(tx: SignedTx) -> tuple[int, int]:
    assert isinstance(tx.body, Reading)
    return tx.body.epoch, tx.body.seq


def _same_bytes(a: SignedTx, b: SignedTx) -> bool:
    return a is b or a.raw == b.raw


def bad_signature(tx: SignedTx, exc: BadSignatureError) -> e.BadSignatureRuleError:
    return e.BadSignatureRuleError(f"{exc} (signer {tx.body.signer.hex()[:16]})")
