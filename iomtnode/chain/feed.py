"""Fan-out of committed blocks to subscribers, without ever blocking the committer."""

from __future__ import annotations

import math

import structlog
import trio

from ..core.block import Block

log = structlog.get_logger(__name__)

SUBSCRIBER_QUEUE_BLOCKS = 256  # a subscriber this far behind is dropped, not waited for


class BlockFeed:
    """Publishes each committed block to every subscriber; lets tasks wait for a height."""

    def __init__(self, height: int) -> None:
        self.height = height
        self._subscribers: set[trio.MemorySendChannel[Block]] = set()
        self._changed = trio.Event()

    def publish(self, block: Block) -> None:
        self.height = block.height
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(block)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(channel)
                channel.close()
                log.warning("block_subscriber_dropped", reason="too slow or gone")
        self._changed.set()
        self._changed = trio.Event()

    def subscribe(self) -> trio.MemoryReceiveChannel[Block]:
        """A channel of every block committed from now on; closed if the reader falls behind."""
        send, receive = trio.open_memory_channel[Block](SUBSCRIBER_QUEUE_BLOCKS)
        self._subscribers.add(send)
        return receive

    async def wait_for_height(self, height: int, timeout_s: float = math.inf) -> bool:
        """Wait until ``height`` is committed; False if ``timeout_s`` passed first."""
        with trio.move_on_after(timeout_s):
            while self.height < height:
                await self._changed.wait()
            return True
        return False
