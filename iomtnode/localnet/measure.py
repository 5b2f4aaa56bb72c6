"""What the chaos runner measures on a live localnet, for the pure checks in ``invariants``.

:class:`ChainScan` reads every node's blocks once (hash and transaction ids per height),
adding only new heights on each pass; :func:`time_to_new_height` and
:func:`time_to_converge` time recovery; :func:`dropped_reports` asks the node a client
submitted to which of its accepted ids it dropped; :func:`accepted_ids` reads the
simulator's ``--record`` file.

Error handling: a node that does not answer is left out of that pass (its blocks are read
on the next); every wait has a deadline and ends in ``None`` (not in time), never hangs.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import structlog
import trio

from ..client import ApiError
from . import rpc
from .layout import LocalnetError
from .rpc import NodeUnreachable, gather

log = structlog.get_logger(__name__)

POLL_S = 0.25  # between status polls while timing a recovery
STATUS_TIMEOUT_S = 2.0
BLOCK_READ_S = 0.2  # deadline allowance per block read, on top of a fixed 10 s
STATUS_IDS_PER_CALL = 500  # ids per get_tx_status call (a request stays well under 1 MB)
METHOD_NOT_FOUND = -32601  # JSON-RPC: a node without get_tx_status reports no drops


class Net(Protocol):
    """What the observers need of a :class:`~iomtnode.localnet.net.Localnet`."""

    def node(self, name: str) -> Any: ...

    async def status(self, name: str, *, timeout_s: float = ...) -> dict[str, Any]: ...

    async def call(self, name: str, method: str, *, timeout_s: float = ...,
                   **params: Any) -> Any: ...


class ChainScan:
    """Every node's blocks as read so far: ``hashes[node][height]`` and ``counts[node][id]``
    (how many of that node's blocks hold the transaction id)."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[int, str]] = {}
        self.counts: dict[str, Counter[str]] = {}

    async def update(self, net: Net, names: Sequence[str]) -> list[str]:
        """Read the blocks each node of ``names`` has gained; return the nodes that did not
        answer (their blocks are read on a later pass)."""
        found = await gather({n: partial(self._read_node, net, n) for n in names})
        return sorted(n for n, r in found.items() if r is not None)

    async def _read_node(self, net: Net, name: str) -> None:
        status = await net.status(name, timeout_s=STATUS_TIMEOUT_S)
        hashes = self.hashes.setdefault(name, {})
        counts = self.counts.setdefault(name, Counter())
        todo = list(range(len(hashes), int(status["height"]) + 1))
        if todo:
            for height, block in zip(todo, await read_blocks(net, name, todo), strict=True):
                hashes[height] = block["hash"]
                counts.update(tx["id"] for tx in block["txs"])


async def read_blocks(net: Net, name: str, heights: Sequence[int]) -> list[dict[str, Any]]:
    """``get_block`` of each of ``heights`` on ``name``, over one connection."""
    return await rpc.blocks(net.node(name).endpoint, heights,
                            timeout_s=10.0 + len(heights) * BLOCK_READ_S)


def accepted_ids(record: Path) -> list[str]:
    """The ids in a simulator ``--record`` file (one hex id a line; a torn last line of a
    killed simulator is skipped)."""
    try:
        text = record.read_text()
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if len(line) == 64]


async def dropped_reports(net: Net, name: str, ids: Sequence[str]) -> dict[str, str]:
    """Of ``ids``, those that ``name`` reports dropped, with the reason it gives: asks
    ``get_tx_status`` (``[{id, state, code?, reason?}]``) in batches. A node without the
    method has reported nothing dropped."""
    dropped: dict[str, str] = {}
    for i in range(0, len(ids), STATUS_IDS_PER_CALL):
        try:
            answer = await net.call(name, "get_tx_status", ids=list(ids[i:i + STATUS_IDS_PER_CALL]),
                                    timeout_s=10.0)
        except ApiError as exc:
            if exc.code == METHOD_NOT_FOUND:
                return {}
            raise
        for entry in answer:
            if entry.get("state") == "dropped":
                dropped[entry["id"]] = str(entry.get("reason") or entry.get("code") or "dropped")
    return dropped


async def heights(net: Net, names: Sequence[str]) -> dict[str, int]:
    """The heights of the nodes of ``names`` that answer now."""
    found = await gather({n: partial(net.status, n, timeout_s=STATUS_TIMEOUT_S) for n in names})
    return {n: int(s["height"]) for n, s in found.items() if isinstance(s, dict)}


async def time_to_new_height(net: Net, names: Sequence[str], *, wait_s: float
                             ) -> float | None:
    """Seconds until each node of ``names`` has finalized a height above the one it had
    when called; None if one did not within ``wait_s``."""
    start = trio.current_time()
    base: dict[str, int] = {}
    done: set[str] = set()
    with trio.move_on_after(wait_s):
        while True:
            for name, height in (await heights(net, [n for n in names if n not in done])).items():
                if name not in base:
                    base[name] = height
                elif height > base[name]:
                    done.add(name)
            if len(done) == len(names):
                return trio.current_time() - start
            await trio.sleep(POLL_S)
    return None


async def time_to_converge(net: Net, names: Sequence[str], *, wait_s: float) -> float | None:
    """Seconds until every node of ``names`` is at or above the highest head any of them
    had when called; None if not within ``wait_s``."""
    start = trio.current_time()
    target: int | None = None
    with trio.move_on_after(wait_s):
        while True:
            now = await heights(net, names)
            if target is None and now:
                target = max(now.values())
            if target is not None and len(now) == len(names) and min(now.values()) >= target:
                return trio.current_time() - start
            await trio.sleep(POLL_S)
    return None


async def resources(net: Any, names: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """``net.resources(name)`` of each node ({pid, fds, rss_bytes, peers,
    remote_addresses}), or ``{"error": why}`` for a node that could not be measured."""
    found: dict[str, Mapping[str, Any]] = {}
    for name in names:
        try:
            measured = net.resources(name)
            found[name] = await measured if inspect.isawaitable(measured) else measured
        except (LocalnetError, ApiError, NodeUnreachable, OSError) as exc:
            found[name] = {"error": str(exc)}
    return found
