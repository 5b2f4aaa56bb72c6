"""The client API's subscriptions: committed blocks (resumable) and transactions' statuses.

``subscribe_blocks(since_height?)`` pushes a ``block`` notification per committed block
(header fields and ``tx_ids``), every block once, in order. With ``since_height`` it first
replays the stored blocks from there (inclusive) to the head, then goes live without a gap
or a repeat at the seam: the live queue is opened at a known height and the replay stops
just below it. Without, it starts after the head (blocks committed between the call and its
task's start are replayed: the queue is opened by the task, so one never started holds none).
The replay reads the store a block at a time, counts each :data:`REPLAY_STEP_BLOCKS`
blocks (a step) as one request against the connection's rate limit, and sends at the
client's reading pace
(:meth:`~.connection.Connection.notify_paced`): a long replay holds one block in memory and
costs its reader the reading. A replay far from the head holds no live queue; it opens one
within a step of the head.

``subscribe_tx_status(ids)`` pushes a ``tx_status`` notification (what ``get_tx_status``
says) for each id as it is committed or dropped by this node; ids already decided are told
at once. It ends when every id is told (:mod:`.txwatch` says how decisions are learned).

Every subscription ends with ``subscription_ended`` ``{subscription, reason, ...}``: for
blocks with ``last_height``, the height of the last block sent (resubscribe with
``since_height = last_height + 1``), when the subscriber fell :data:`SUBSCRIBER_QUEUE_BLOCKS`
blocks behind the live feed, or when the node shuts down (sent if the client has read
everything before it); for transactions when all are told (``told``), or at shutdown with
the ``untold`` ids.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import structlog
import trio

from ..chain.feed import SUBSCRIBER_QUEUE_BLOCKS
from ..core.block import Block
from .access import Role
from .interfaces import BlockSubscriptions, TxStatusQueries
from .jsonrpc import INVALID_PARAMS, RpcError
from .methods import STATUS_CHUNK, block_to_json
from .params import hex_param
from .txwatch import DECIDED, TxWatch

if TYPE_CHECKING:
    from .connection import Connection

log = structlog.get_logger(__name__)

FIRST_HEIGHT = 0  # the store keeps every block from the genesis block (height 0) on
REPLAY_STEP_BLOCKS = 16  # blocks of a replay step: one request in the rate limit each step
MAX_TX_STATUS_IDS = 1_000  # ids one subscribe_tx_status watches (each held until decided)
MAX_WATCHED_IDS = 100_000  # ids the node watches for all its clients (~200 bytes each)
MAX_WATCHED_IDS_PER_ADDRESS = 10_000  # ... for the clients of one address (an IPv6 /64):
# one client cannot hold them all (with ids never decided) and deny the feature to the others
SINCE_HEIGHT_OUT_OF_RANGE = -32030  # since_height below what the store holds, or past head + 1
TOO_MANY_TX_IDS = -32031  # subscribe_tx_status with more than MAX_TX_STATUS_IDS ids
WATCH_FULL = -32032  # the node watches MAX_WATCHED_IDS ids already: try again later
FELL_BEHIND = (f"fell behind: {SUBSCRIBER_QUEUE_BLOCKS} blocks committed and not yet sent; "
               "resubscribe with since_height = last_height + 1")
ALL_TOLD = "every transaction's status was told"

ROLES: dict[str, Role] = {
    "subscribe_blocks": Role.PUBLIC,  # what every peer of the chain holds
    "subscribe_tx_status": Role.PUBLIC,  # as get_tx_status
}


class BlockSource(Protocol):
    def block_at(self, height: int) -> Block:
        """The committed block at ``height``; KeyError if there is none."""
        ...


class SubscriptionsApi:
    """The subscription methods (a :class:`~.interfaces.MethodGroup`): blocks from the commit
    feed and the store, transactions' statuses from the :class:`~.txwatch.TxWatch`."""

    roles: Mapping[str, Role] = ROLES

    def __init__(self, blocks: BlockSubscriptions, chain: BlockSource, txs: TxStatusQueries,
                 watch: TxWatch) -> None:
        self._blocks = blocks
        self._chain = chain
        self._txs = txs
        self._watch = watch

    def methods(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {"subscribe_blocks": self.subscribe_blocks,
                "subscribe_tx_status": self.subscribe_tx_status}

    async def subscribe_blocks(self, conn: Connection, since_height: int | None = None) -> str:
        """A ``block`` notification per committed block from ``since_height`` (default: the
        next block), every one once and in order; see the module docstring. A connection
        holds a few subscriptions at most (``TOO_MANY_SUBSCRIPTIONS`` beyond)."""
        head = self._blocks.height
        if since_height is None:
            since_height = head + 1
        elif type(since_height) is not int:
            raise RpcError(INVALID_PARAMS, "since_height must be an integer")
        elif not FIRST_HEIGHT <= since_height <= head + 1:
            raise RpcError(SINCE_HEIGHT_OUT_OF_RANGE,
                           f"since_height {since_height} is outside the blocks this node "
                           f"holds: from {FIRST_HEIGHT} to its head {head}, or {head + 1} "
                           "for the next block", {"first_height": FIRST_HEIGHT, "head": head})
        conn.check_subscription_room()  # before the feed holds a queue for it
        subscription = BlockSubscription(conn, self._blocks, self._chain, since_height)
        conn.start_subscription(subscription.run, last_words=subscription.last_words)
        return "blocks"

    async def subscribe_tx_status(self, conn: Connection, ids: list[str]) -> str:
        """A ``tx_status`` notification for each of ``ids`` (at most
        :data:`MAX_TX_STATUS_IDS`; :data:`MAX_WATCHED_IDS_PER_ADDRESS` for the running
        subscriptions of one address, :data:`MAX_WATCHED_IDS` for the whole node) once it is
        committed or dropped; those already decided at once; then ``subscription_ended``."""
        if not isinstance(ids, list) or not ids:
            raise RpcError(INVALID_PARAMS, "ids must be a non-empty array of hex ids")
        if len(ids) > MAX_TX_STATUS_IDS:
            raise RpcError(TOO_MANY_TX_IDS, f"at most {MAX_TX_STATUS_IDS} ids per "
                           "subscription; subscribe again for the rest",
                           {"limit": MAX_TX_STATUS_IDS})
        tx_ids = list(dict.fromkeys(hex_param(f"ids[{i}]", item, 32)
                                    for i, item in enumerate(ids)))
        full = self._watch_full(conn.address, len(tx_ids))
        if full is not None:
            raise full
        conn.check_subscription_room()
        untold = set(tx_ids)

        async def tell() -> None:
            full = self._watch_full(conn.address, len(tx_ids))  # again: a batch's requests
            if full is not None:  # were all checked before the first of them watched
                log.info("tx_status_subscription_refused", reason=full.message)
                await conn.notify_paced("subscription_ended", last_words(full.message))
                return
            with self._watch.watching(tx_ids, conn.address) as decided:
                for start in range(0, len(tx_ids), STATUS_CHUNK):  # what is decided already
                    await trio.lowlevel.checkpoint()
                    for tx_id in tx_ids[start:start + STATUS_CHUNK]:
                        status = self._txs.tx_status(tx_id)
                        if status["state"] in DECIDED and tx_id in untold:
                            if not await conn.notify_paced("tx_status", status):
                                return
                            untold.discard(tx_id)  # told once queued (last words say so)
                while untold:  # the rest, as the watch learns of them
                    status = await decided.receive()
                    tx_id = bytes.fromhex(status["id"])
                    if tx_id in untold:
                        if not await conn.notify_paced("tx_status", status):
                            return
                        untold.discard(tx_id)
            await conn.notify_paced("subscription_ended", {
                "subscription": "tx_status", "reason": ALL_TOLD, "told": len(tx_ids)})

        def last_words(reason: str) -> dict[str, Any]:
            return {"subscription": "tx_status", "reason": reason,
                    "untold": [tx_id.hex() for tx_id in tx_ids if tx_id in untold]}

        conn.start_subscription(tell, last_words=last_words)
        return "tx_status"

    def _watch_full(self, address: str, count: int) -> RpcError | None:
        """Why ``count`` more ids for a client at ``address`` would be too many, or None."""
        watched, mine = self._watch.watched, self._watch.watched_by(address)
        if watched + count > MAX_WATCHED_IDS:
            return RpcError(WATCH_FULL, f"this node watches {watched} ids for its clients, "
                            f"and at most {MAX_WATCHED_IDS}; try again later, or ask "
                            "get_tx_status", {"limit": MAX_WATCHED_IDS})
        if mine + count > MAX_WATCHED_IDS_PER_ADDRESS:
            return RpcError(WATCH_FULL, f"this node watches {mine} ids for the clients at "
                            f"{address}, and at most {MAX_WATCHED_IDS_PER_ADDRESS} for one "
                            "address; wait for some to be told, or ask get_tx_status",
                            {"limit": MAX_WATCHED_IDS_PER_ADDRESS, "per": "address"})
        return None


class BlockSubscription:
    """One client's blocks from ``next_height`` on: the replay, the seam, the live feed."""

    def __init__(self, conn: Connection, feed: BlockSubscriptions, chain: BlockSource,
                 next_height: int) -> None:
        self._conn = conn
        self._feed = feed
        self._chain = chain
        self.next_height = next_height  # the next block to send
        self._live: trio.MemoryReceiveChannel[Block] | None = None  # opened by run(): a
        self._live_from = 0  # task that never starts (its connection closed) holds none

    def last_words(self, reason: str) -> dict[str, Any]:
        """The ``subscription_ended`` params: ``last_height`` is the last block sent."""
        return {"subscription": "blocks", "reason": reason,
                "last_height": self.next_height - 1}

    def _open_live(self) -> None:
        self._live = self._feed.subscribe()  # from the block after the height read next:
        self._live_from = self._feed.height + 1  # no commit can run in between

    async def _send(self, block: Block) -> bool:
        if not await self._conn.notify_paced("block", block_to_json(block, full=False)):
            return False
        self.next_height = block.height + 1
        return True

    async def _replay(self, below: int) -> bool:
        """Send the stored blocks from ``next_height`` up to ``below`` (exclusive), a step
        at a time."""
        while self.next_height < below:
            await self._conn.admit_request(1)  # a step costs its reader a request
            step_end = min(below, self.next_height + REPLAY_STEP_BLOCKS)
            for height in range(self.next_height, step_end):
                if not await self._send(self._chain.block_at(height)):
                    return False
        return True

    async def run(self) -> None:
        """Replay, then follow the feed until it drops this subscriber (then say so)."""
        while self._live is None:  # far behind: a step of the store at a time, no queue held
            far = self._feed.height + 1 - REPLAY_STEP_BLOCKS
            if self.next_height >= far:
                self._open_live()
            elif not await self._replay(far):
                return
        with self._live:
            if not await self._replay(self._live_from):  # the last blocks before the seam
                return
            async for block in self._live:
                if block.height >= self.next_height and not await self._send(block):
                    return
        # the feed dropped this subscriber: it fell a queue's worth of blocks behind
        await self._conn.notify_paced("subscription_ended", self.last_words(FELL_BEHIND))
