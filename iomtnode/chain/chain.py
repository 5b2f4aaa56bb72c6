"""The chain: typed blocks, state and receipts over the bytes-level block store.

Synchronous and free of trio: the node calls it from its tasks (block commits from a
worker thread, since they fsync). Every commit is one atomic store write of the block,
its certificate, its indices, its state changes and the head pointer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from ..core import codec
from ..core.block import (
    MAX_BLOCK_BYTES,
    Block,
    Commit,
    InvalidCommitError,
    MalformedBlockError,
    authorities_hash,
    block_parts,
    decode_block,
    decode_commit,
    make_block,
)
from ..core.crypto import BadSignatureError
from ..core.errors import RuleError
from ..core.genesis import Genesis
from ..core.ledger import K_EVIDENCE, K_VOTES, BlockContext, Device, State
from ..core.state import (
    ACTIVE,
    apply,
    authorities_at,
    begin_block,
    decode_evidence_record,
    genesis_state,
)
from ..core.tx import SignedTx
from ..store import BlockStore, StagedStore
from .anchors import AuditLedger
from .erasure import ErasureJob
from .receipts import receipt_of
from .rules import META_RULES, RULES_RECORD, bring_rules_up_to_date
from .streamstore import StreamStore
from .trees import ReceiptTrees

log = structlog.get_logger(__name__)

META_GENESIS = "genesis_hash"
K_TX_TOTAL = b"n"  # state key: transactions committed so far (a state key no rule uses)
BLOCK_OVERHEAD_BYTES = 64 * 1024  # header, certificate and framing of a block, generously
TX_OVERHEAD_BYTES = 5  # msgpack bin header of one transaction inside a block


class WrongChainError(RuntimeError):
    """The store holds another chain than the genesis given."""


class InvalidBlockError(ValueError):
    """A received block (or its certificate) that this chain cannot accept; says why."""


@dataclass(frozen=True, slots=True)
class ChainStats:
    """The chain's figures at one moment (``status``, metrics)."""

    chain_id: str
    genesis_hash: bytes
    height: int  # of the head; every block here is final (committed with its certificate)
    head_hash: bytes
    head_time_ms: int
    authorities: tuple[bytes, ...]
    authorities_with_evidence: tuple[bytes, ...]  # sorted; equivocations on the ledger
    committed_txs: int  # transactions in every block so far


@dataclass(frozen=True, slots=True)
class BuiltBlock:
    """A block made from candidate transactions, with the state changes it commits."""

    block: Block
    changes: dict[bytes, bytes | None]
    rejected: list[tuple[SignedTx, RuleError]]


def _signers(commit: Commit | None) -> tuple[bytes, ...]:
    return () if commit is None else tuple(a for a, _ in commit.signatures)


class Chain(StreamStore, AuditLedger):
    """Typed access to one chain's blocks and state in a :class:`BlockStore` (and to the
    patients' streams: :class:`~.streamstore.StreamStore`; audit anchors:
    :class:`~.anchors.AuditLedger`)."""

    def __init__(self, store: BlockStore, genesis: Genesis) -> None:
        self.store = store
        self.genesis = genesis
        self._device_streams: dict[bytes, bytes] = {}  # device -> stream, for the index
        self.receipt_trees = ReceiptTrees()  # recent blocks' Merkle trees, for receipts
        stored = store.get_meta(META_GENESIS)
        if stored is not None and stored != genesis.hash:
            raise WrongChainError(
                f"the data directory holds chain {stored.hex()[:16]}, but the genesis file "
                f"is {genesis.hash.hex()[:16]}: use the genesis this home was made with"
            )
        if store.head() is not None and (refusal := bring_rules_up_to_date(store)) is not None:
            raise WrongChainError(refusal)
        if store.head() is None:
            block = genesis.block()
            store.put_meta(META_GENESIS, genesis.hash)
            store.put_meta(META_RULES, RULES_RECORD)
            store.commit_block(
                height=0, block_hash=block.hash, block_bytes=block.encode(), commit_bytes=b"",
                tx_ids=[], state_changes=genesis_state(genesis),
            )
            log.info("genesis_committed", chain_id=genesis.chain_id,
                     genesis_hash=genesis.hash.hex())
        head = store.head()
        assert head is not None
        self._head_height, self._head_hash = head
        try:
            self._head_header = self.block_at(self._head_height).header  # checked whole
        except MalformedBlockError as exc:
            raise WrongChainError(
                f"the data directory's head block does not decode ({exc}); it was written by "
                "another version of iomtnode: move data/ aside and let the node resync"
            ) from None
        total = store.get_state(K_TX_TOTAL)
        self.committed_txs = int.from_bytes(total, "big") if total else 0
        self._erasures = ErasureJob(store)
        self._erasures.wake()  # an erasure a stop interrupted resumes

    # reads ---------------------------------------------------------------------------

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    @property
    def height(self) -> int:
        return self._head_height

    @property
    def head(self) -> Block:
        """The head block, read and decoded from the store (only its header is kept)."""
        return self.block_at(self._head_height)

    @property
    def head_hash(self) -> bytes:
        return self._head_hash

    def state(self) -> State:
        """A fresh overlay over the committed state."""
        return State(self.store.get_state)

    def authorities(self) -> tuple[bytes, ...]:
        return self.state().authorities()

    def block_at(self, height: int) -> Block:
        return decode_block(self._block_bytes(height))

    def block_parts_at(self, height: int) -> tuple[bytes, list[bytes]]:
        """The header bytes and undecoded transactions of the block at ``height`` (or KeyError)."""
        return block_parts(self._block_bytes(height))

    def height_of(self, block_hash: bytes) -> int:
        """The height of the committed block ``block_hash``; KeyError if there is none."""
        height = self.store.block_height(block_hash)
        if height is None:
            raise KeyError(f"no block with hash {block_hash.hex()}")
        return height

    def block_tx_bytes(self, block_hash: bytes) -> list[bytes]:
        """The raw transactions of the block ``block_hash`` (KeyError if none), undecoded."""
        return self.block_parts_at(self.height_of(block_hash))[1]

    def _block_bytes(self, height: int) -> bytes:
        raw = self.store.block_bytes(height)
        if raw is None:
            raise KeyError(f"no block at height {height}")
        return raw

    def commit_at(self, height: int) -> Commit | None:
        raw = self.store.commit_bytes(height)
        return decode_commit(raw) if raw else None

    def device(self, key: bytes) -> tuple[Device, int] | None:
        state = self.state()
        device = state.device(key)
        return None if device is None else (device, state.last_seq(key))

    def participant(self, key: bytes) -> bool:
        """Whether the ledger knows ``key`` now: an authority, an active device, or the
        stream of an active device (a key nobody admitted is none of them)."""
        state = self.state()
        if key in state.authorities() or state.stream_devices(key):
            return True
        device = state.device(key)
        return device is not None and device.status == ACTIVE

    def authority_report(self) -> dict[str, Any]:
        """The authorities with when each last certified a block and whether it counts as
        online for governance, the scheduled changes and the votes not yet passed."""
        state = self.state()
        online = state.online(self._head_height + 1)
        with_evidence = {e["authority"] for e in self.evidence()}
        pending = []
        for key, voters in self.store.iter_state(K_VOTES):
            pending.append({"subject": key[1:33].hex(), "add": key[33:] == b"\x01",
                            "voters": [v.hex() for v in codec.decode(voters)]})
        return {
            "authorities": [{
                "key": a.hex(), "last_certified": state.last_certified(a),
                "online": a in online, "evidence": a.hex() in with_evidence,
            } for a in state.authorities()],
            "scheduled": [{"height": h, "subject": s.hex(), "add": add}
                          for h, s, add in state.scheduled_changes()],
            "pending_votes": pending,
        }

    def evidence(self) -> list[dict[str, Any]]:
        """Every equivocation on the ledger (authority, height, round, type, reporter)."""
        return [decode_evidence_record(k, v) for k, v in self.store.iter_state(K_EVIDENCE)]

    def stats(self) -> ChainStats:
        """The chain's figures now (reads the ledger's evidence: a few store reads)."""
        return ChainStats(
            chain_id=self.chain_id, genesis_hash=self.genesis.hash, height=self._head_height,
            head_hash=self._head_hash, head_time_ms=self._head_header.time_ms,
            authorities=self.authorities(),
            authorities_with_evidence=tuple(sorted(
                {bytes.fromhex(e["authority"]) for e in self.evidence()})),
            committed_txs=self.committed_txs)

    def receipt(self, tx_id: bytes) -> dict[str, Any] | None:
        """A receipt for a committed transaction, or None if it is not (yet) committed."""
        return receipt_of(self, tx_id)

    # writes --------------------------------------------------------------------------

    def build(self, txs: Iterable[SignedTx], proposer: bytes, now_ms: int) -> BuiltBlock:
        """Make the next block from ``txs`` (already signature-checked), dropping rule breakers."""
        height = self._head_height + 1
        time_ms = max(now_ms, self._head_header.time_ms + 1)
        last_commit = self.commit_at(self._head_height)
        ctx = BlockContext(height, time_ms, self.genesis, _signers(last_commit))
        state = self.state()
        begin_block(state, ctx)
        accepted: list[SignedTx] = []
        rejected: list[tuple[SignedTx, RuleError]] = []
        room = MAX_BLOCK_BYTES - BLOCK_OVERHEAD_BYTES
        for tx in txs:
            room -= len(tx.raw) + TX_OVERHEAD_BYTES
            if room < 0:
                break  # the rest waits for the next block
            try:
                apply(state, tx, ctx)
            except RuleError as exc:
                rejected.append((tx, exc))
            else:
                accepted.append(tx)
        block = make_block(
            height=height, time_ms=time_ms, parent=self._head_hash, proposer=proposer,
            txs=tuple(accepted), authorities=state.authorities(), last_commit=last_commit,
            next_authorities=authorities_at(state, height + 1),
        )
        return BuiltBlock(block, state.changes(), rejected)

    def next_authorities(self) -> tuple[bytes, ...]:
        """The authorities that must certify the next block (the changes scheduled for its
        height applied): the validators of the next height's consensus."""
        return authorities_at(self.state(), self._head_height + 1)

    def check(self, block: Block, commit: Commit,
              verified: Callable[[SignedTx], bool] = lambda tx: False) -> BuiltBlock:
        """Check a received block and its certificate as the next block of this chain.

        Cheapest checks first: height, parent, time, authority set, certificates, then
        each transaction's signature (skipped for those ``verified`` says were checked on
        this node already, byte for byte) and the state rules. Returns the state changes to commit.
        Raises :class:`InvalidBlockError` with the reason.
        """
        return self._check_next(block, commit, verified)

    def check_proposal(self, block: Block,
                       verified: Callable[[SignedTx], bool] = lambda tx: False) -> BuiltBlock:
        """Check a proposed block as the next block of this chain, before it has a certificate.

        The same checks as :meth:`check` (height, parent, time, authority set and proposer,
        the parent's certificate against the parent's authorities, signatures, rules) but
        none for a certificate of the block itself: consensus is deciding that. Returns the
        state changes to commit once it is decided; raises :class:`InvalidBlockError`.
        """
        return self._check_next(block, None, verified)

    def _check_next(self, block: Block, commit: Commit | None,
                    verified: Callable[[SignedTx], bool]) -> BuiltBlock:
        """:meth:`check`, and :meth:`check_proposal` when ``commit`` is None."""
        h = block.header
        height = self._head_height + 1
        if h.height != height:
            raise InvalidBlockError(f"block {h.height} is not the next height {height}")
        if h.parent != self._head_hash:
            raise InvalidBlockError(f"block {h.height} does not extend this chain's head")
        if h.time_ms <= self._head_header.time_ms:
            raise InvalidBlockError(f"block {h.height} is not later than its parent")
        ctx = BlockContext(height, h.time_ms, self.genesis, _signers(block.last_commit))
        parent_authorities = self.authorities()
        state = self.state()
        begin_block(state, ctx)
        authorities = state.authorities()
        if h.authorities_hash != authorities_hash(authorities):
            raise InvalidBlockError(f"block {h.height} names another authority set")
        if h.proposer not in authorities:
            raise InvalidBlockError(f"block {h.height} was proposed by a non-authority")
        if commit is not None and (commit.height != h.height or commit.block_hash != block.hash):
            raise InvalidBlockError(f"the certificate is not for block {h.height}")
        try:
            if commit is not None:
                commit.verify(authorities, self.chain_id)
            if self._head_height >= 1:
                if block.last_commit is None:
                    raise InvalidCommitError("the parent's certificate is missing")
                if block.last_commit.block_hash != self._head_hash:
                    raise InvalidCommitError("the parent's certificate is for another block")
                block.last_commit.verify(parent_authorities, self.chain_id)
        except InvalidCommitError as exc:
            raise InvalidBlockError(f"block {h.height}: {exc}") from None
        for tx in block.txs:
            if not verified(tx):
                try:
                    tx.verify(self.chain_id)
                except BadSignatureError as exc:
                    raise InvalidBlockError(f"block {h.height}: tx {tx.id.hex()[:16]}: {exc}"
                                            ) from None
            try:
                apply(state, tx, ctx)
            except RuleError as exc:
                raise InvalidBlockError(f"block {h.height}: tx {tx.id.hex()[:16]}: {exc}"
                                        ) from None
        if h.next_authorities_hash != authorities_hash(authorities_at(state, height + 1)):
            raise InvalidBlockError(f"block {h.height} names another next authority set")
        return BuiltBlock(block, state.changes(), [])

    def commit(self, built: BuiltBlock, commit: Commit) -> None:
        """Store ``built`` with its certificate as the new head (one atomic, synced write)."""
        self.take_head(built.block, self.write(built, commit))

    def write(self, built: BuiltBlock, commit: Commit) -> int:
        """Store ``built`` with its certificate (one atomic, synced write; safe in a worker
        thread) without taking it as this chain's head: :meth:`take_head` does, with the
        total of committed transactions this returns. The
        :class:`~iomtnode.chain.writer.ChainWriter` takes it on the event loop, in the same
        step as it tells the mempool and consensus, so no task sees the new head with the
        old mempool."""
        block = built.block
        total = self.committed_txs + len(block.txs)
        indexed = self._index(block, built.changes)
        self.store.commit_block(
            height=block.height, block_hash=block.hash,
            block_bytes=block.encode(), commit_bytes=commit.encode(),
            tx_ids=[tx.id for tx in block.txs],
            state_changes={**built.changes, K_TX_TOTAL: total.to_bytes(8, "big")},
            index=indexed.index,
        )
        if indexed.erasures:
            self._erasures.wake()  # (a staged chain's wakes it after the flush: adopt)
        return total

    def take_head(self, block: Block, committed_txs: int) -> None:
        """Take ``block``, just written by :meth:`write`, as the head."""
        self._head_height, self._head_hash = block.height, block.hash
        self._head_header = block.header
        self.committed_txs = committed_txs

    def staged(self) -> Chain:
        """A copy of this chain whose commits stay in memory (a :class:`StagedStore`) until
        ``staged.store.flush()`` writes them in one synced batch; then :meth:`adopt` it."""
        staged = copy.copy(self)
        staged.store = StagedStore(self.store)  # type: ignore[assignment]
        return staged

    def adopt(self, staged: Chain) -> None:
        """Take the head of ``staged`` (made by :meth:`staged`) once its blocks are flushed."""
        assert self.store.head() == staged.store.head(), "flush the staged blocks first"
        self._head_height, self._head_hash = staged._head_height, staged._head_hash
        self._head_header, self.committed_txs = staged._head_header, staged.committed_txs
        self._erasures.wake()
