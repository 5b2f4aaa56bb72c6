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

from collections.abc import Callable
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
from ..p2p.messages import MAX_BLOCKS_PER_MESSAGE, MAX_MESSAGE_BYTES, Blocks, GetBlocks

log = structlog.get_logger(__name__)

RANGE_BLOCKS = 32  # blocks asked of one peer at once
PARALLEL_PEERS = 3  # peers asked at once, each for its own range
REQUEST_TIMEOUT_S = 10.0
LATE_ANSWERS = 256  # timed-out requests whose late answer is dropped without a penalty
LAG_GRACE_S = 1.0  # one block behind for this long: relay missed it, sync
RESPONSE_BUDGET_BYTES = MAX_MESSAGE_BYTES - 64 * 1024  # room for the envelope
VERIFY_PIECE = 1024  # transactions decoded, then handed to the verifier, at a time

_Decoded = tuple[list[tuple[Block, Commit]], Exception | None]  # blocks, why the rest did not


class BlockSync:
    def __init__(self, host: Any, chain: Chain, writer: ChainWriter, feed: BlockFeed,
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

    @property
    def target(self) -> int:
        return max(self.peer_heights.values(), default=0)

    def saw_height(self, peer_id: bytes, height: int) -> None:
        if height > self.peer_heights.get(peer_id, -1):
            self.peer_heights[peer_id] = height
        if height > self._chain.height:
            self._behind.set()

    def forget(self, peer_id: bytes) -> None:
        self.peer_heights.pop(peer_id, None)

    # serving -------------------------------------------------------------------------

    def on_get_blocks(self, peer: Any, msg: GetBlocks) -> None:
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

    def on_blocks(self, peer: Any, msg: Blocks) -> None:
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
            while self.target > self._chain.height:
                before = self._chain.height
                await self._round()
                if self._chain.height == before:
                    await trio.sleep(1.0)  # nobody served anything: back off a little
                    break

    async def _round(self) -> None:
        start = self._chain.height + 1
        ahead = sorted((h, p) for p, h in self.peer_heights.items() if h >= start)[::-1]
        plan: list[tuple[bytes, int, int]] = []
        for height, peer_id in ahead[:PARALLEL_PEERS]:
            if start > height:
                continue
            count = min(RANGE_BLOCKS, height - start + 1)
            plan.append((peer_id, start, count))
            start += count
        results: dict[int, tuple[bytes, Blocks | None]] = {}

        async def fetch(peer_id: bytes, first: int, count: int) -> None:
            results[first] = (peer_id, await self._request(peer_id, first, count))

        async with trio.open_nursery() as nursery:
            for peer_id, first, count in plan:
                nursery.start_soon(fetch, peer_id, first, count)
        # The ranges are decoded here while worker processes verify the signatures of what
        # was decoded so far (a piece at a time); then they are checked and committed in order.
        ranges: list[tuple[int, bytes, int, _Decoded]] = []
        async with trio.open_nursery() as verifying:
            for first in sorted(results):
                peer_id, msg = results[first]
                if msg is None or not msg.blocks:
                    # A peer that claimed this height but did not serve it is not asked
                    # again until it shows a new height; one that answered "nothing" lied.
                    claimed = self.peer_heights.pop(peer_id, None)
                    peer = self._host.get(peer_id)
                    if msg is not None and peer is not None:
                        self._host.penalize(peer, score.INVALID_MESSAGE,
                                            f"claimed height {claimed}, served no block {first}")
                    break
                ranges.append((first, peer_id, len(msg.blocks),
                               await self._decode(msg, verifying)))
        previous: bytes | None = None
        for first, peer_id, count, decoded in ranges:
            if previous is not None and not await self._fill(previous, first):
                return
            if first != self._chain.height + 1 or not await self._apply(peer_id, count, decoded):
                return
            previous = peer_id

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
                decoded = await self._decode(msg, verifying)
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
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            return await receive.receive()
        self._waiting.pop((peer_id, start), None)
        self._timed_out.add((peer_id, start))
        log.info("sync_request_timed_out", peer=peer_id.hex()[:16], start=start)
        return None

    async def _decode(self, msg: Blocks, verifying: trio.Nursery) -> _Decoded:
        """The blocks of a range up to the first that does not decode (and why). Each piece
        of :data:`VERIFY_PIECE` transactions is handed to the verifier (a task in
        ``verifying``) as soon as it is decoded."""
        blocks: list[tuple[Block, Commit]] = []
        for block_raw, commit_raw in msg.blocks:
            height = -1
            try:
                header_bytes, raws, last_bytes = split_block(block_raw)
                height = decode_header(header_bytes).height
                txs: list[SignedTx] = []
                for start in range(0, len(raws), VERIFY_PIECE):
                    piece = [decode_tx(raw) for raw in raws[start:start + VERIFY_PIECE]]
                    verifying.start_soon(self._writer.preverify, piece)
                    txs.extend(piece)
                    await trio.lowlevel.checkpoint()  # decoding a range takes a while
                last = decode_commit(last_bytes) if last_bytes else None
                blocks.append((assemble_block(header_bytes, tuple(txs), last),
                               decode_commit(commit_raw)))
            except MalformedTxError as exc:
                return blocks, MalformedBlockError(f"block {height}: {exc}")
            except MalformedBlockError as exc:
                return blocks, exc
        return blocks, None

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
