"""The live table of ``localnet up`` and the one-shot table of ``localnet status``.

Rows come from :meth:`Localnet.snapshot`; readings/s is the change of each node's
``committed_txs`` between two snapshots (blank until a node reports that field twice).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .net import Localnet

REFRESH_S = 1.0
PLAIN_EVERY_S = 10.0  # without a terminal, print the table this often instead of redrawing
PLAIN_WIDTH = 160  # columns when stderr is a file or pipe (rich would assume 80)
STATE_STYLE = {"up": "green", "paused": "yellow", "down": "red"}


class RateMeter:
    """Readings per second per node from successive ``committed_txs`` counts."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def update(self, name: str, committed: int | None, now: float) -> float | None:
        if committed is None:
            self._last.pop(name, None)
            return None
        previous = self._last.get(name)
        self._last[name] = (now, committed)
        if previous is None or now <= previous[0] or committed < previous[1]:
            return None  # first sample, or the node restarted and counts anew
        return (committed - previous[1]) / (now - previous[0])


def row_values(row: dict[str, Any], rate: float | None) -> list[str]:
    """The cells of one node: node, status, height, final, peers, readings/s, pid, api, p2p."""
    status = row.get("status") or {}
    peers = status.get("peers")

    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    return [
        row["name"] + ("*" if row.get("authority") else ""), row["state"],
        cell(status.get("height")), cell(status.get("finalized_height")),
        cell(len(peers) if isinstance(peers, list) else None),
        "-" if rate is None else f"{rate:.0f}", cell(row.get("pid")), row["api"], row["p2p"],
    ]


HEADERS = ["node", "status", "height", "final", "peers", "readings/s", "pid", "api", "p2p"]


def render(rows: Sequence[dict[str, Any]], rates: dict[str, float | None],
           title: str = "") -> Table:
    table = Table(title=title or None, caption="* authority", title_justify="left")
    for header in HEADERS:
        table.add_column(header, justify="right" if header in (
            "height", "final", "peers", "readings/s", "pid") else "left")
    for row in rows:
        values = row_values(row, rates.get(row["name"]))
        values[1] = f"[{STATE_STYLE.get(row['state'], 'white')}]{values[1]}[/]"
        table.add_row(*values)
    return table


async def show_live(net: Localnet, *, refresh_s: float = REFRESH_S) -> None:
    """Redraw the table on stderr every ``refresh_s`` until cancelled (never returns)."""
    console = Console(stderr=True, width=None if sys.stderr.isatty() else PLAIN_WIDTH)
    meter = RateMeter()
    title = f"localnet {net.manifest.dir} ({net.manifest.chain_id}) - Ctrl-C stops it"

    async def table() -> Table:
        net.refresh_from_disk()  # `localnet chaos` may have restarted or moved a node
        rows = await net.snapshot()
        now = time.monotonic()
        rates = {r["name"]: meter.update(r["name"], (r.get("status") or {}).get(
            "committed_txs"), now) for r in rows}
        return render(rows, rates, title)

    if not sys.stderr.isatty():
        last = -PLAIN_EVERY_S
        while True:
            rendered = await table()
            if time.monotonic() - last >= PLAIN_EVERY_S:
                console.print(rendered)
                last = time.monotonic()
            await trio.sleep(refresh_s)
    with Live(await table(), console=console, auto_refresh=False) as live:
        while True:
            await trio.sleep(refresh_s)
            live.update(await table(), refresh=True)
