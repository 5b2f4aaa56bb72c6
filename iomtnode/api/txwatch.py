"""Who waits to hear what became of which transactions: the index behind
``subscribe_tx_status``, told by the commit feed and by the mempool's drops.

A transaction is decided when it is committed (``{id, state: "committed", height}``) or
dropped by this node (``{id, state: "dropped", height, code, reason}``, as the node recorded
it): the same status ``get_tx_status`` gives. Nothing is polled: a commit looks up each of
its transactions in the index, a drop looks up the dropped ids.

Cost on the commit path: with no subscription watching, one check of an empty dict per commit
and per drop. With some, one dict lookup per committed transaction (a block holds at most
``max_block_txs``) and per dropped one, and a queued status per watcher of a decided id;
never a pass over the watched ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import trio

from ..chain.feed import Committed
from ..store.txlog import Drop

DECIDED = frozenset({"committed", "dropped"})  # a status that will not change here again

Status = dict[str, Any]


class TxWatch:
    """Subscriptions' watched ids, each told once when its transaction is decided.

    ``tx_status``: what ``get_tx_status`` says of an id (the mempool's); a drop is told as
    the status it reads then. Give :meth:`committed` to the commit feed as a listener and
    :meth:`dropped` to the mempool's drop listeners."""

    def __init__(self, tx_status: Callable[[bytes], Status]) -> None:
        self._tx_status = tx_status
        self._watchers: dict[bytes, list[trio.MemorySendChannel[Status]]] = {}
        self._watched = 0  # ids held by the running watches, each watch's counted
        self._owned: dict[str, int] = {}  # ... by owner (only owners holding some)

    @property
    def watched(self) -> int:
        """Ids the running watches hold, counted once per watch (what they cost: an id two
        subscriptions wait for counts twice), until each watch ends."""
        return self._watched

    def watched_by(self, owner: str) -> int:
        """As :attr:`watched`, for the watches of ``owner``."""
        return self._owned.get(owner, 0)

    @contextmanager
    def watching(self, tx_ids: Sequence[bytes], owner: str
                 ) -> Iterator[trio.MemoryReceiveChannel[Status]]:
        """Watch ``tx_ids`` (distinct) for ``owner`` while the block runs: each one's decision
        arrives once on the channel yielded (it holds them all, so the committer never
        waits). They count for ``owner`` (:meth:`watched_by`) until the block ends."""
        send, receive = trio.open_memory_channel[Status](max(1, len(tx_ids)))
        for tx_id in tx_ids:
            self._watchers.setdefault(tx_id, []).append(send)
        self._watched += len(tx_ids)
        self._owned[owner] = self._owned.get(owner, 0) + len(tx_ids)
        try:
            yield receive
        finally:
            self._watched -= len(tx_ids)
            self._owned[owner] -= len(tx_ids)
            if not self._owned[owner]:
                del self._owned[owner]
            for tx_id in tx_ids:
                senders = self._watchers.get(tx_id)
                if senders is not None and send in senders:
                    senders.remove(send)
                    if not senders:
                        del self._watchers[tx_id]

    def committed(self, committed: Sequence[Committed]) -> None:
        """The commit feed's listener: tell the watchers of each committed transaction."""
        if not self._watchers:
            return
        for done in committed:
            height = done.block.height
            for tx in done.block.txs:
                senders = self._watchers.pop(tx.id, None)
                if senders:
                    status = {"id": tx.id.hex(), "state": "committed", "height": height}
                    for send in senders:
                        send.send_nowait(status)  # room for every watched id: never full

    def dropped(self, drops: Sequence[Drop]) -> None:
        """The mempool's drop listener (after the drops are recorded): tell the watchers of
        each dropped transaction what ``get_tx_status`` now says of it."""
        if not self._watchers:
            return
        for drop in drops:
            if drop.tx_id not in self._watchers:
                continue
            status = self._tx_status(drop.tx_id)
            if status["state"] in DECIDED:
                for send in self._watchers.pop(drop.tx_id):
                    send.send_nowait(status)
