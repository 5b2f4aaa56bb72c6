"""Block sync: a node that is behind fetches whole blocks in ranges from several peers.

Peers' claims come from their handshake, their ``Status`` messages and the compact blocks
they relay; :class:`~.planner.SyncPlanner` decides what to sync to and which peer is asked
for which range (a claim that no other peer supports is not chased first; one a peer did
not serve is dropped and not believed again for a while). Whenever the goal is ahead by
more than live relay can close (or for longer than ``LAG_GRACE_S``), the node asks up to
:data:`~.planner.PARALLEL_PEERS` peers for consecutive ranges at once, checks each block
in full (certificates against the authority set of its height, signatures, state rules)
and commits them in order, a range at a time in one synced write (a crash loses at most
the range being written, which is fetched again). While this thread decodes a round's
ranges, worker processes verify the signatures of what it decoded so far (see
:class:`~.signatures.SyncVerifier`).

A peer that claimed a height and does not serve it is penalised and its claim dropped:
no answer in ``REQUEST_TIMEOUT_S`` costs :data:`UNSERVED_TIMEOUT_POINTS`, an answer
without the first block asked :data:`~iomtnode.p2p.score.INVALID_MESSAGE`, a block that
does not check :data:`~iomtnode.p2p.score.INVALID_BLOCK`; the range is then asked of
another peer. Once level, the node follows live relay again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import structlog
import trio

from ..chain.chain import Chain, InvalidBlockError
from ..chain.feed import BlockFeed
from ..chain.writer import ChainWriter
from ..core.governance import authorities_at
from ..p2p import score
from ..p2p.discovery import wall_clock_ms
from ..p2p.lru import BoundedSet
from ..p2p.messages import MAX_MESSAGE_BYTES
from ..p2p.peer import Peer
from ..p2p.ratelimit import Rate, RequestLimits
from ..p2p.router import PeerSet
from .decoding import DECODED_TXS_AHEAD, CertificateCut, Decoded, TxBudget, decode_range
from .messages import GET_BLOCKS_RATE, MAX_BLOCKS_PER_MESSAGE, Blocks, GetBlocks
from .planner import PARALLEL_PEERS, Assignment, SyncPlanner
from .progress import SyncStats
from .signatures import RangeSignatures, SyncVerifier

log = structlog.get_logger(__name__)

# what a request answers when the connection it went on closed first (its peer is not blamed)
CONNECTION_LOST: Final = Blocks(0, [])

REQUEST_TIMEOUT_S = 10.0
UNSERVED_TIMEOUT_POINTS = 10  # penalty (see p2p.score) for a claimed range not served in
# time: an honest peer that was merely slow has it forgiven in 10 s
LATE_ANSWERS = 256  # timed-out requests whose late answer is dropped without a penalty
LAG_GRACE_S = 1.0  # one block behind for this long: relay missed it, sync
RESPONSE_BUDGET_BYTES = MAX_MESSAGE_BYTES - 64 * 1024  # room for the envelope
CATCH_UPS_KEPT = 8  # catch-ups listed in status
RANGES_AHEAD = PARALLEL_PEERS  # decoded ranges waiting for their turn to be committed
NO_PROGRESS_PAUSE_S = 1.0  # a catch-up that committed nothing waits this long to retry
# GetBlocks sent to one peer: its own rate, with half its burst, so requests bunched on the
# way (up to 2 s of them) still find tokens there. A catch-up of small blocks from one peer
# can verify ranges faster than that rate allows; a request the peer drops for its rate
# would cost a 10 s timeout and the peer's claim for a minute.
REQUEST_PACE = Rate(GET_BLOCKS_RATE.per_s, GET_BLOCKS_RATE.burst / 2)  # requests/s; burst


@dataclass
class _Answer:
    """A range asked of ``peer_id``: its answer (None: not served in time) once arrived."""

    peer_id: bytes
    msg: Blocks | None = None
    arrived: trio.Event = field(default_factory=trio.Event)


@dataclass
class _Range:
    """Consecutive blocks from ``first`` served by ``peer_id``: decoded (up to a fault),
    and ``verified`` set once the signatures of what decoded are verified (those that
    passed in ``signatures``)."""

    first: int
    peer_id: bytes
    count: int  # blocks served
    decoded: Decoded = ([], None)
    verified: trio.Event = field(default_factory=trio.Event)
    signatures: RangeSignatures = field(default_factory=RangeSignatures)


class BlockSync:
    """Serves ranges to peers and catches up from them (module doc). ``now_ms`` is the
    node's wall clock (claims are judged plausible against the chain's age). ``verified``:
    the transactions verified here before; what it syncs, its :class:`SyncVerifier` checks."""

    def __init__(self, host: PeerSet, chain: Chain, writer: ChainWriter, feed: BlockFeed,
                 verified: Callable[[Any], bool],
                 on_progress: Callable[[int, int], None] | None = None, *,
                 now_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._host = host
        self._chain = chain
        self._writer = writer
        self._feed = feed
        self._verified = verified
        self.signatures = SyncVerifier(chain.chain_id, inline=writer.inline)
        self._certify = (chain.chain_id, lambda height: authorities_at(chain.state(), height))
        self._on_progress = on_progress
        self._now_ms = now_ms
        self.planner = SyncPlanner(chain.genesis.time_ms)
        # (peer, start) -> the connection the request went on, and where its answer goes
        self._waiting: dict[tuple[bytes, int], tuple[Peer, trio.MemorySendChannel[Blocks]]] = {}
        self._timed_out = BoundedSet(LATE_ANSWERS)  # (peer, start) asked, not answered in time
        self._behind = trio.Event()
        self._pace = RequestLimits(trio.current_time, {GetBlocks: REQUEST_PACE})  # by node id
        # the last catch-ups (from a height to the peers' head, not counting live relay):
        # their heights, transactions and seconds, from the first block asked to the last
        # committed (in ``status``; the benchmark's bootstrap figure)
        self.catch_ups: deque[dict[str, int | float]] = deque(maxlen=CATCH_UPS_KEPT)
        self.synced_blocks = 0  # committed by catch-up since the start

    @property
    def peer_heights(self) -> dict[bytes, int]:
        """The heights connected peers claim, as they claim them (not all believed)."""
        return self.planner.claims

    @property
    def target(self) -> int:
        return self.planner.goal(self._chain.height, self._now_ms()).height

    def stats(self) -> SyncStats:
        """Block sync's figures now."""
        return SyncStats(self.target, tuple(dict(c) for c in self.catch_ups),
                         self.synced_blocks, self.signatures.verified_count)

    def saw_height(self, peer_id: bytes, height: int) -> None:
        self.planner.claimed(peer_id, height)
        believed = self.planner.believed(peer_id, self._now_ms())
        if believed is not None and believed > self._chain.height:
            self._behind.set()

    def forget(self, peer_id: bytes) -> None:
        self.planner.forget(peer_id)
        self._pace.forget(peer_id)

    def connection_lost(self, peer: Peer) -> None:
        """``peer``'s connection closed (or was replaced by a new one from the same node):
        the requests sent on it will not be answered, so they end now, without counting
        against the node (its claim stands; the range is asked again)."""
        for key, (sent_on, channel) in list(self._waiting.items()):
            if sent_on is peer:
                del self._waiting[key]
                channel.close()

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
        waiting = self._waiting.pop((peer.node_id, msg.start), None)
        if waiting is None and (peer.node_id, msg.start) in self._timed_out:
            self._timed_out.discard((peer.node_id, msg.start))
            return  # a late answer (a busy peer, a long queue ahead of it): not a fault
        if waiting is None:
            self._host.penalize(peer, score.UNREQUESTED, "blocks nobody asked for")
            return
        waiting[1].send_nowait(msg)

    # fetching ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Catch up whenever a believed claim is ahead; never returns unless cancelled."""
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
                await nursery.start(self.signatures.warm, self._writer.warm_verifier)
                while self.target > self._chain.height:
                    before = self._chain.height
                    await self._catch_up()
                    if self._chain.height == before:  # the peers asked did not serve:
                        await trio.sleep(NO_PROGRESS_PAUSE_S)  # their claims are dropped;
                        self._behind.set()  # look again at what is left
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
        the goal, or until no peer serves a range or a range holds a fault (after
        committing the blocks before it). Three stages overlap: the ranges ahead are
        fetched and decoded on this thread while worker processes verify their
        signatures, and each verified range is checked and committed in order (see
        :meth:`_produce`)."""
        ready, ranges = trio.open_memory_channel[_Range](RANGES_AHEAD)
        budget = TxBudget(DECODED_TXS_AHEAD)
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
                                                     fetched.decoded, fetched.signatures))
                    budget.give(sum(len(block.txs) for block, _ in fetched.decoded[0]))
                    if not applied:
                        break
                    previous = fetched.peer_id
            nursery.cancel_scope.cancel()  # a fault, or level: nothing more is needed

    async def _produce(self, start: int, ready: trio.MemorySendChannel[_Range],
                       verifying: trio.Nursery, budget: TxBudget) -> None:
        """Rounds of ranges from ``start`` as the planner assigns them: each round's ranges
        are asked of their peers at once, decoded in order as they arrive (while
        ``verifying`` verifies each piece in worker processes) and handed on; a range not
        served is asked of another peer (:meth:`_served`). Stops when no peer serves a
        range, at the first range not decoding, or once past the goal. ``budget`` bounds
        the decoded transactions held (:data:`DECODED_TXS_AHEAD`): the memory of a
        catch-up."""
        async with ready:
            while True:
                plan = self.planner.plan(start, self._chain.height, self._now_ms())
                if not plan:
                    return
                answers = {a.first: self._ask(a, verifying) for a in plan}
                for assigned in plan:
                    answer = await self._served(answers.pop(assigned.first), assigned,
                                                verifying)
                    if answer is None or answer.msg is None:
                        return
                    msg = answer.msg
                    fetched = _Range(assigned.first, answer.peer_id, len(msg.blocks))
                    verify = partial(self.signatures.verify, into=fetched.signatures)
                    fetched.decoded = await decode_range(msg, verify, verifying,
                                                         fetched.verified, self._certify,
                                                         budget)
                    answer.msg = msg = None  # the range's bytes (up to 4 MB) are not needed
                    try:
                        await ready.send(fetched)
                    except trio.BrokenResourceError:
                        return  # the committer stopped (a fault): nothing more is wanted
                    if fetched.decoded[1] is not None:
                        return
                    start = assigned.first + fetched.count

    def _ask(self, assigned: Assignment, nursery: trio.Nursery) -> _Answer:
        """Ask ``assigned.peer_id`` for its range in ``nursery``; its answer, to come."""
        answer = _Answer(assigned.peer_id)

        async def fetch() -> None:
            answer.msg = await self._request(assigned.peer_id, assigned.first, assigned.count)
            answer.arrived.set()

        nursery.start_soon(fetch)
        return answer

    async def _served(self, answer: _Answer, assigned: Assignment, nursery: trio.Nursery
                      ) -> _Answer | None:
        """The answer to ``assigned`` with at least its first block: from its peer, else
        (that peer penalised and its claim dropped) from the next peer the planner gives
        the range to. None once no peer is left to ask."""
        while True:
            await answer.arrived.wait()
            if answer.msg is not None and answer.msg.blocks:
                return answer
            if answer.msg is not CONNECTION_LOST:
                self._unserved(answer.peer_id, assigned.first, answer.msg)
            plan = self.planner.plan(assigned.first, self._chain.height, self._now_ms(),
                                     last=assigned.first + assigned.count - 1, parallel=1)
            if not plan:
                return None
            answer = self._ask(plan[0], nursery)

    def _unserved(self, peer_id: bytes, first: int, msg: Blocks | None) -> None:
        """``peer_id`` was asked for blocks from ``first`` within its claim and answered
        ``msg`` without any (None: not in time): penalised, its claim dropped."""
        claimed = self.planner.unserved(peer_id, first, self._now_ms())
        peer = self._host.get(peer_id)
        what = ("disconnected" if peer is None else "timed out" if msg is None
                else "served no block")
        log.info("sync_claim_dropped", peer=peer_id.hex()[:16], claimed=claimed, first=first,
                 reason=what)
        if peer is not None:
            points = UNSERVED_TIMEOUT_POINTS if msg is None else score.INVALID_MESSAGE
            self._host.penalize(peer, points,
                                f"sync claim not served: claimed {claimed}, {what} at {first}")

    async def _fill(self, peer_id: bytes, until: int) -> bool:
        """Fetch, check and commit the heights below ``until`` that the range before it left
        out (its peer served fewer blocks than asked: its answer reached the size budget),
        from that peer; then the next range, already decoded and verified, still applies.
        True once the chain reaches ``until - 1``."""
        while self._chain.height + 1 < until:
            start = self._chain.height + 1
            msg = await self._request(peer_id, start, until - start)
            if msg is None or not msg.blocks:
                if msg is not CONNECTION_LOST:
                    self._unserved(peer_id, start, msg)
                return False
            signatures = RangeSignatures()
            async with trio.open_nursery() as verifying:
                decoded = await decode_range(
                    msg, partial(self.signatures.verify, into=signatures), verifying,
                    trio.Event(), self._certify)
            if not await self._apply(peer_id, len(msg.blocks), decoded, signatures):
                return False
        return True

    async def _request(self, peer_id: bytes, start: int, count: int) -> Blocks | None:
        peer = self._host.get(peer_id)
        while peer is not None and (wait := self._pace.take_or_wait(peer_id, GetBlocks)) > 0:
            await trio.sleep(wait)  # within the rate the peer serves at (REQUEST_PACE)
            peer = self._host.get(peer_id)
        if peer is None:
            return None
        send, receive = trio.open_memory_channel[Blocks](1)
        self._waiting[(peer_id, start)] = (peer, send)
        peer.send(GetBlocks(start, count))
        answered = False
        try:
            with trio.move_on_after(REQUEST_TIMEOUT_S):
                try:
                    msg = await receive.receive()
                except trio.EndOfChannel:  # its connection closed: see connection_lost
                    answered = True
                    log.info("sync_request_lost", peer=peer_id.hex()[:16], start=start)
                    return CONNECTION_LOST
                answered = True
                return msg
        finally:
            if not answered:  # timed out, or no longer wanted (cancelled): a late answer
                self._waiting.pop((peer_id, start), None)  # is dropped, not penalised
                self._timed_out.add((peer_id, start))
        log.info("sync_request_timed_out", peer=peer_id.hex()[:16], start=start)
        return None

    async def _apply(self, peer_id: bytes, count: int, decoded: Decoded,
                     signatures: RangeSignatures) -> bool:
        """Check and commit a decoded range in one batch (see
        :meth:`ChainWriter.apply_many`), its ``signatures`` verified; True if all ``count``
        blocks were committed. A fault (a bad signature too) costs the peer
        :data:`~iomtnode.p2p.score.INVALID_BLOCK` and its claim."""
        blocks, fault = decoded
        committed = 0
        try:
            committed = await self._writer.apply_many(blocks, peer_id,
                                                      signatures.widen(self._verified))
        except InvalidBlockError as exc:
            fault = exc
        if committed:
            self.planner.served(peer_id, committed)
            self.synced_blocks += committed
        if isinstance(fault, CertificateCut) and not fault.forged(self._chain.height,
                                                                  self._certify[1]):
            log.info("sync_range_cut", peer=peer_id.hex()[:16], reason=str(fault))
            return False  # authorities changed inside the ranges: asked again from there
        if fault is not None:
            self.planner.unserved(peer_id, self._chain.height + 1, self._now_ms())
            peer = self._host.get(peer_id)
            if peer is not None:
                self._host.penalize(peer, score.INVALID_BLOCK, f"sync block: {fault}")
        if committed and self._on_progress is not None:
            self._on_progress(self._chain.height, self.target)
        return fault is None and committed == count > 0
