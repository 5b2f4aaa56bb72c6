"""The commit feed: each commit told to its listeners and subscribers, never blocking the
committer.

The :class:`~iomtnode.chain.writer.ChainWriter` publishes every commit here, once per
commit: one block, or the consecutive blocks of a synced range (see
:meth:`~iomtnode.chain.writer.ChainWriter.apply_many`). Two kinds of readers:

- listeners (:meth:`BlockFeed.listen`): called in the committing task with the whole
  commit, in the order they subscribed, before anything else runs; they must not block.
  The mempool drops what was committed this way, consensus moves to the next height,
  block relay announces the new head.
- subscribers (:meth:`BlockFeed.subscribe`): a bounded channel of blocks (the API's
  subscriptions); one that falls behind is dropped, not waited for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
import trio

from ..core.block import Block, Commit

log = structlog.get_logger(__name__)

SUBSCRIBER_QUEUE_BLOCKS = 256  # a subscriber this far behind is dropped, not waited for


@dataclass(frozen=True, slots=True)
class Committed:
    """One committed block, its certificate, and the peer it came from (None: made here)."""

    block: Block
    commit: Commit
    source: bytes | None


CommitListener = Callable[[Sequence[Committed]], None]  # one commit: one or more blocks


def each_block(listener: Callable[[Block, Commit, bytes | None], None]) -> CommitListener:
    """A listener that wants ``listener(block, commit, source)`` once per block, in order."""
    def listen(committed: Sequence[Committed]) -> None:
        for done in committed:
            listener(done.block, done.commit, done.source)
    return listen


class BlockFeed:
    """Tells listeners and subscribers of every commit; lets tasks wait for a height."""

    def __init__(self, height: int) -> None:
        self.height = height
        self._listeners: list[CommitListener] = []
        self._subscribers: set[trio.MemorySendChannel[Block]] = set()
        self._changed = trio.Event()

    def listen(self, listener: CommitListener) -> None:
        """Call ``listener(committed)`` after every commit from now on (see module doc)."""
        self._listeners.append(listener)

    def publish(self, committed: Sequence[Committed]) -> None:
        """One commit: the new height, then the listeners, then the subscribers' blocks."""
        self.height = committed[-1].block.height
        for listener in self._listeners:
            listener(committed)
        for channel in list(self._subscribers):
            try:
                for done in committed:
                    channel.send_nowait(done.block)
            except trio.WouldBlock:  # a fault of the reader's: its subscription says so too
                self._drop(channel)
                log.warning("block_subscriber_dropped", height=self.height,
                            reason=f"fell behind: {SUBSCRIBER_QUEUE_BLOCKS} blocks not read")
            except (trio.BrokenResourceError, trio.ClosedResourceError):  # the reader left
                self._drop(channel)  # (a client closed its subscription): no fault
                log.debug("block_subscriber_left")
        self._changed.set()
        self._changed = trio.Event()

    def _drop(self, channel: trio.MemorySendChannel[Block]) -> None:
        self._subscribers.discard(channel)
        channel.close()

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
