"""A connection with a stand-in client socket whose reading pace a test sets, and a chain of
blocks a test commits on a real commit feed: what the subscription tests drive."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio

from iomtnode.api.connection import Connection, ConnectionLimits
from iomtnode.chain.feed import BlockFeed, Committed
from iomtnode.core.block import Block, Commit, make_block
from iomtnode.core.tx import SignedTx

from ..core.helpers import pub

LIMITS = ConnectionLimits(outbox_messages=8, idle_timeout_s=600.0)  # a small outbox: pacing


class Reader:
    """The client's end: takes one message per ``every_s`` (virtual time) while reading;
    ``paused`` stops it (its socket buffers are full)."""

    def __init__(self, every_s: float = 0.001) -> None:
        self.every_s = every_s
        self.paused = False
        self._resumed = trio.Event()
        self._changed = trio.Event()
        self.received: list[dict[str, Any]] = []

    def pause(self) -> None:
        self.paused = True
        self._resumed = trio.Event()

    def resume(self) -> None:
        self.paused = False
        self._resumed.set()

    async def send_message(self, message: str | bytes) -> None:
        while self.paused:
            await self._resumed.wait()
        await trio.sleep(self.every_s)
        self.received.append(json.loads(message))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, done: Callable[[], bool], timeout_s: float = 600.0) -> None:
        """Wait until ``done()`` holds after a message read (virtual time under
        autojump_clock)."""
        with trio.fail_after(timeout_s):
            while not done():
                await self._changed.wait()

    def notes(self, method: str) -> list[dict[str, Any]]:
        return [m["params"] for m in self.received if m.get("method") == method]

    def heights(self) -> list[int]:
        return [p["height"] for p in self.notes("block")]


class Blocks:
    """A chain of blocks (``block_at``, as the store serves them) committed on a real feed."""

    def __init__(self, height: int) -> None:
        self.blocks: list[Block] = []
        parent = b"\x00" * 32
        for h in range(height + 1):
            parent = self._make(h, parent).hash
        self.feed = BlockFeed(height)

    def _make(self, height: int, parent: bytes, txs: tuple[SignedTx, ...] = ()) -> Block:
        block = make_block(height=height, time_ms=1_000 + height, parent=parent,
                           proposer=pub("A"), txs=txs, authorities=(pub("A"),),
                           last_commit=None)
        self.blocks.append(block)
        return block

    def block_at(self, height: int) -> Block:
        if not 0 <= height < len(self.blocks):
            raise KeyError(f"no block at height {height}")
        return self.blocks[height]

    @property
    def height(self) -> int:
        return len(self.blocks) - 1

    def commit(self, txs: tuple[SignedTx, ...] = ()) -> Block:
        """Store the next block, then publish it (as the chain writer does)."""
        block = self._make(self.height + 1, self.blocks[-1].hash, txs)
        self.feed.publish([Committed(block, Commit(block.height, 0, block.hash, ()), None)])
        return block


async def open_connection(nursery: trio.Nursery, reader: Reader,
                          limits: ConnectionLimits = LIMITS, *, remote: str = "127.0.0.1:1"
                          ) -> Connection:
    """A running connection (its writer to ``reader``, its idle watch) from ``remote`` whose
    methods a test calls directly; closed when the nursery is cancelled."""
    scope = trio.CancelScope()
    conn = Connection(1, remote, limits, scope)
    started = trio.Event()

    async def run() -> None:
        async def read() -> None:
            started.set()
            await trio.sleep_forever()

        with scope:
            await conn.run(reader, read)  # type: ignore[arg-type]

    nursery.start_soon(run)
    await started.wait()
    return conn
