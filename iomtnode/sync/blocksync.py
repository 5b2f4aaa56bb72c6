"""Block sync: a node that is behind fetches whole blocks in ranges from several peers.

Peers' heights come from their handshake, their ``Status`` messages and the compact
blocks they relay. Whenever a peer is ahead by more than live relay can close (or for
longer than ``LAG_GRACE_S``), the node asks up to ``PARALLEL_PEERS`` peers for
consecutive ranges of ``RANGE_BLOCKS`` blocks at once, checks each block in full
(certificates against the authority set of its height, signatures, state rules) and
commits them in order, a range at a time in one synced write (a crash loses at most the
range being written, which is fetched again). While this thread decodes a round's ranges,
worker processes verify the signatures of what it decoded so far (see
:class:`~iomtnode.admission.verify.Verifier`). A peer that serves an invalid block is
penalised; one that does not answer in ``REQUEST_TIMEOUT_S`` is skipped for that round.
Once level, the node follows live relay again.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from ..chain.chain import Chain, InvalidBlockError
from ..chain.feed import BlockFeed
from ..chain.writer import ChainWriter
from ..core.block import (
    Block,
    Commit,
    MalformedBlockError,
    assemble_block,
    decode_commit,
    decode_header,
    split_block,
)
from ..core.tx import MalformedTxError, SignedTx, decode_tx
from ..p2p import score
from ..p2p.lru import BoundedSet
from ..p2p.messages import MAX_MESSAGE_BYTES
from ..p2p.peer import Peer
from ..p2p.router import PeerSet
from .messages import MAX_BLOCKS_PER_MESSAGE, Blocks, GetBlocks

log = structlog.get_logger(__name__)

RANGE_BLOCKS = 32  # blocks asked of one peer at once
PARALLEL_PEERS = 3  # peers asked at once, each for its own range
REQUEST_TIMEOUT_S = 10.0
LATE_ANSWERS = 256  # timed-out requests whose late answer is dropped without a penalty
LAG_GRACE_S = 1.0  # one block behind for this long: relay missed it, sync
RESPONSE_BUDGET_BYTES = MAX_MESSAGE_BYTES - 64 * 1024  # room for the envelope
VERIFY_PIECE = 1024  # transactions decoded, then handed to the verifier, at a time
CATCH_UPS_KEPT = 8  # catch-ups listed in status
RANGES_AHEAD = PARALLEL_PEERS  # decoded ranges waiting for their turn to be committed
DECODED_TXS_AHEAD = 32_768  # decoded transactions not committed yet (~1 KB each in memory);
# a block is decoded beyond it only when nothing else is held

_Decoded = tuple[list[tuple[Block, Commit]], Exception | None]  # blocks, why the rest did not


class _TxBudget:
    """Decoded transactions held until committed: at most ``limit``, except that one range
    alone may exceed it (its answer is bounded by the 4 MB message size). One taker (the
    decoding task), one giver (the committing one)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._freed = trio.Event()

    async def take(self, count: int, own: int = 0) -> None:
        """Take ``count`` for a block of a range that already holds ``own``: waits only
        for what other ranges hold (a range is handed on whole, so waiting for its own
        blocks would never end)."""
        while self.held > own and self.held + count > self.limit:
            self._freed = trio.Event()
            await self._freed.wait()
        self.held += count

    def give(self, count: int) -> None:
        self.held -= count
        self._freed.set()


@dataclass
class _Answer:
    """A range asked of ``peer_id``: its answer (None: not served in time) once arrived."""

    peer_id: bytes
    msg: Blocks | None = None
    arrived: trio.Event = field(default_factory=trio.Event)


@dataclass
class _Range:
    """Consecutive blocks from ``first`` served by ``peer_id``: decoded (up to a fault),
    and ``verified`` set once the signatures of what decoded are verified."""

    first: int
    peer_id: bytes
    count: int  # blocks served
    decoded: _Decoded = ([], None)
    verified: trio.Event = field(default_factory=trio.Event)


@dataclass(frozen=True, slots=True)
class SyncStats:
    """Block sync's figures at one moment (``status``, metrics)."""

    target: int  # the highest head a peer announced (0 before any did)
    catch_ups: tuple[dict[str, int | float], ...]  # the last ones (copies), oldest first


class BlockSync:
    def __init__(self, host: PeerSet, chain: Chain, writer: ChainWriter, feed: BlockFeed,
                 verified: Callable[[Any], bool],
                 on_progress: Callable[[int, int], None] | None = None) -> None:
        self._host = host
        self._chain = chain
        self._writer = writer
        self._feed = feed
        self._verified = verified
        self._on_progress = on_progress
        self.peer_heights: dict[bytes, int] = {}
        self._waiting: dict[tuple[bytes, int], trio.MemorySendChannel[Blocks]] = {}
        self._timed_out = BoundedSet(LATE_ANSWERS)  # (peer, start) asked, not answered in time
        self._behind = trio.Event()
        # the last catch-ups (from a height to the peers' head, not counting live relay):
        # their heights, transactions and seconds, from the first block asked to the last
        # committed (in ``status``; the benchmark's bootstrap figure)
        self.catch_ups: deque[dict[str, int | float]] = deque(maxlen=CATCH_UPS_KEPT)

    @property
    def target(self) -> int:
        return max(self.peer_heights.values(), default=0)

    def stats(self) -> SyncStats:
        """Block sync's figures now."""
        return SyncStats(self.target, tuple(dict(c) for c in self.catch_ups))

    def saw_height(self, peer_id: bytes, height: int) -> None:
        if height > self.peer_heights.get(peer_id, -1):
            self.peer_heights[peer_id] = height
        if height > self._chain.height:
            self._behind.set()

    def forget(self, peer_id: bytes) -> None:
        self.peer_heights.pop(peer_id, None)

    # serving -------------------------------------------------------------------------

    def on_get_blocks(self, peer: Peer, msg: GetBlocks) -> None:
        """Answer with up to ``count`` blocks from ``start`` that we have (maybe none)."""
        count = min(msg.count, MAX_BLOCKS_PER_MESSAGE)
        items: list[list[bytes]] = []
        budget = RESPONSE_BUDGET_BYTES
        store = self._chain.store
        for height in range(msg.start, min(msg.start + count, self._chain.height + 1)):
            raw, commit = store.block_bytes(height), store.commit_bytes(height)
            if raw is None or commit is None:
                break
            budget -= len(raw) + len(commit) + 16
            if budget < 0 and items:
                break
            items.append([raw, commit])
        peer.send(Blocks(msg.start, items))

    def on_blocks(self, peer: Peer, msg: Blocks) -> None:
        channel = self._waiting.pop((peer.node_id, msg.start), None)
        if channel is None and (peer.node_id, msg.start) in self._timed_out:
            self._timed_out.discard((peer.node_id, msg.start))
            return  # a late answer (a busy peer, a long queue ahead of it): not a fault
        if channel is None:
            self._host.penalize(peer, score.UNREQUESTED, "blocks nobody asked for")
            return
        channel.send_nowait(msg)

    # fetching ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Catch up whenever a peer is ahead; never returns unless cancelled."""
        task_status.started()
        while True:
            await self._behind.wait()
            self._behind = trio.Event()
            # one block behind: live relay normally delivers it; give it a moment
            if self.target == self._chain.height + 1 and await self._feed.wait_for_height(
                    self.target, LAG_GRACE_S):
                continue
            started, height = trio.current_time(), self._chain.height
            txs = self._chain.committed_txs
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer.warm_verifier)
                while self.target > self._chain.height:
                    before = self._chain.height
                    await self._catch_up()
                    if self._chain.height == before:
                        await trio.sleep(1.0)  # nobody served anything: back off a little
                        break
            if self._chain.height > height:
                self._record(height, txs, trio.current_time() - started)

    def _record(self, height: int, txs: int, seconds: float) -> None:
        episode = {"from_height": height, "to_height": self._chain.height,
                   "txs": self._chain.committed_txs - txs, "seconds": round(seconds, 3)}
        self.catch_ups.append(episode)
        log.info("sync_caught_up", **episode,
                 txs_per_s=round(episode["txs"] / seconds) if seconds > 0 else None)

    async def _catch_up(self) -> None:
        """Fetch, decode, verify and commit ranges from the next height until level with
        the peers, or until a range is not served or holds a fault (after committing the
        blocks before it). Three stages overlap: the ranges ahead are fetched and decoded
        on this thread while worker processes verify their signatures, and each verified
        range is checked and committed in order (see :meth:`_produce`)."""
        ready, ranges = trio.open_memory_channel[_Range](RANGES_AHEAD)
        budget = _TxBudget(DECODED_TXS_AHEAD)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._produce, self._chain.height + 1, ready, nursery, budget)
            previous: bytes | None = None
            async with ranges:
                async for fetched in ranges:
                    await fetched.verified.wait()
                    if previous is not None and not await self._fill(previous, fetched.first):
                        break
                    applied = (fetched.first == self._chain.height + 1
                               and await self._apply(fetched.peer_id, fetched.count,
                                                     fetched.decoded))
                    budget.give(sum(len(block.txs) for block, _ in fetched.decoded[0]))
                    if not applied:
                        break
                    previous = fetched.peer_id
            nursery.cancel_scope.cancel()  # a fault, or level: nothing more is needed

    def _plan(self, start: int) -> list[tuple[bytes, int, int]]:
        """Consecutive ranges from ``start``, one per peer ahead (up to
        :data:`PARALLEL_PEERS`, highest first), the blocks shared evenly between them (so
        they serve, and this node decodes, in parallel), at most :data:`RANGE_BLOCKS` each."""
        ahead = sorted((h, p) for p, h in self.peer_heights.items() if h >= start)[::-1]
        ahead = ahead[:PARALLEL_PEERS]
        if not ahead:
            return []
        share = -(-(ahead[0][0] - start + 1) // len(ahead))
        plan: list[tuple[bytes, int, int]] = []
        for height, peer_id in ahead:
            if start > height:
                continue
            count = min(RANGE_BLOCKS, share, height - start + 1)
            plan.append((peer_id, start, count))
            start += count
        return plan

    async def _produce(self, start: int, ready: trio.MemorySendChannel[_Range],
                       verifying: trio.Nursery, budget: _TxBudget) -> None:
        """Rounds of ranges from ``start``: each round's ranges are asked of their peers at
        once, decoded in order as they arrive (while ``verifying`` verifies each piece in
        worker processes) and handed on; stops at the first range not served or not
        decoding, or once past every peer's height. ``budget`` bounds the decoded
        transactions held (:data:`DECODED_TXS_AHEAD`): the memory of a catch-up."""
        async with ready:
            while start <= self.target:
                plan = self._plan(start)
                answers = {first: _Answer(peer_id) for peer_id, first, _ in plan}
                for _, first, count in plan:
                    verifying.start_soon(self._fetch, answers[first], first, count)
                for _, first, _ in plan:
                    answer = answers.pop(first)
                    await answer.arrived.wait()
                    peer_id, msg = answer.peer_id, answer.msg
                    if msg is None or not msg.blocks:
                        # A peer that claimed this height but did not serve it is not asked
                        # again until it shows a new height; one that answered "nothing" lied.
                        claimed = self.peer_heights.pop(peer_id, None)
                        peer = self._host.get(peer_id)
                        if msg is not None and peer is not None:
                            self._host.penalize(
                                peer, score.INVALID_MESSAGE,
                                f"claimed height {claimed}, served no block {first}")
                        return
                    fetched = _Range(first, peer_id, len(msg.blocks))
                    fetched.decoded = await self._decode(msg, verifying, fetched.verified,
                                                         budget)
                    answer.msg = msg = None  # the range's bytes (up to 4 MB) are not needed
                    try:
                        await ready.send(fetched)
                    except trio.BrokenResourceError:
                        return  # the committer stopped (a fault): nothing more is wanted
                    if fetched.decoded[1] is not None:
                        return
                    start = first + fetched.count
                if not plan:
                    return

    async def _fetch(self, answer: _Answer, first: int, count: int) -> None:
        answer.msg = await self._request(answer.peer_id, first, count)
        answer.arrived.set()

    async def _fill(self, peer_id: bytes, until: int) -> bool:
        """Fetch, check and commit the heights below ``until`` that the range before it left
        out (its peer served fewer blocks than asked: its answer reached the size budget),
        from that peer; then the next range, already decoded and verified, still applies.
        True once the chain reaches ``until - 1``."""
        while self._chain.height + 1 < until:
            start = self._chain.height + 1
            msg = await self._request(peer_id, start, until - start)
            if msg is None or not msg.blocks:
                return False
            async with trio.open_nursery() as verifying:
                decoded = await self._decode(msg, verifying, trio.Event())
            if not await self._apply(peer_id, len(msg.blocks), decoded):
                return False
        return True

    async def _request(self, peer_id: bytes, start: int, count: int) -> Blocks | None:
        peer = self._host.get(peer_id)
        if peer is None:
            return None
        send, receive = trio.open_memory_channel[Blocks](1)
        self._waiting[(peer_id, start)] = send
        peer.send(GetBlocks(start, count))
        answered = False
        try:
            with trio.move_on_after(REQUEST_TIMEOUT_S):
                msg = await receive.receive()
                answered = True
                return msg
        finally:
            if not answered:  # timed out, or no longer wanted (cancelled): a late answer
                self._waiting.pop((peer_id, start), None)  # is dropped, not penalised
                self._timed_out.add((peer_id, start))
        log.info("sync_request_timed_out", peer=peer_id.hex()[:16], start=start)
        return None

    async def _decode(self, msg: Blocks, verifying: trio.Nursery, verified: trio.Event,
                      budget: _TxBudget | None = None) -> _Decoded:
        """The blocks of a range up to the first that does not decode (and why). Each piece
        of :data:`VERIFY_PIECE` transactions is handed to the verifier (in ``verifying``)
        as soon as it is decoded; ``verified`` is set once every piece is verified. Each
        block's transactions are taken from ``budget`` before they are decoded; the caller
        gives back those of the blocks returned once it is done with them."""
        pieces, to_verify = trio.open_memory_channel[list[SignedTx]](math.inf)
        verifying.start_soon(self._verify_pieces, to_verify, verified)
        blocks: list[tuple[Block, Commit]] = []
        taken = 0  # this range's own share of the budget so far
        async with pieces:
            for block_raw, commit_raw in msg.blocks:
                height, held = -1, 0
                try:
                    header_bytes, raws, last_bytes = split_block(block_raw)
                    height = decode_header(header_bytes).height
                    if budget is not None:
                        await budget.take(len(raws), own=taken)
                        held = len(raws)
                        taken += held
                    txs: list[SignedTx] = []
                    for start in range(0, len(raws), VERIFY_PIECE):
                        piece = [decode_tx(raw) for raw in raws[start:start + VERIFY_PIECE]]
                        pieces.send_nowait(piece)
                        txs.extend(piece)
                        await trio.lowlevel.checkpoint()  # decoding a range takes a while
                    last = decode_commit(last_bytes) if last_bytes else None
                    blocks.append((assemble_block(header_bytes, tuple(txs), last),
                                   decode_commit(commit_raw)))
                except (MalformedTxError, MalformedBlockError) as exc:
                    if budget is not None:
                        budget.give(held)  # not kept: only the blocks before it are
                    if isinstance(exc, MalformedTxError):
                        exc = MalformedBlockError(f"block {height}: {exc}")
                    return blocks, exc
        return blocks, None

    async def _verify_pieces(self, pieces: trio.MemoryReceiveChannel[list[SignedTx]],
                             verified: trio.Event) -> None:
        async with trio.open_nursery() as nursery, pieces:
            async for piece in pieces:
                nursery.start_soon(self._writer.preverify, piece)
        verified.set()

    async def _apply(self, peer_id: bytes, count: int, decoded: _Decoded) -> bool:
        """Check and commit a decoded range in one batch (see
        :meth:`ChainWriter.apply_many`); True if all ``count`` blocks were committed."""
        blocks, fault = decoded
        committed = 0
        try:
            committed = await self._writer.apply_many(blocks, peer_id, self._verified)
        except InvalidBlockError as exc:
            fault = exc
        if fault is not None:
            peer = self._host.get(peer_id)
            if peer is not None:
                self._host.penalize(peer, score.INVALID_BLOCK, f"sync block: {fault}")
        if committed and self._on_progress is not None:
            self._on_progress(self._chain.height, self.target)
        return fault is None and committed == count > 0
