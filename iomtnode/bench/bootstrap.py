"""Bootstrap: a fresh node (empty home, same genesis, not an authority) syncs the chain the
run made from the other nodes; how many readings/s it verifies and applies."""

from __future__ import annotations

import time
from typing import Any

import trio

from ..client import open_client
from ..localnet import Localnet, LocalnetTimeout
from .progress import Reporter

POLL_S = 0.05
BOOTSTRAP_TIMEOUT_S = 180.0


async def measure_bootstrap(net: Localnet, *, readings: int, non_readings: int,
                            reporter: Reporter, timeout_s: float = BOOTSTRAP_TIMEOUT_S
                            ) -> dict[str, Any]:
    """Start a fresh node and time it from its API first answering (its p2p service starts
    just before the API, so sync has barely begun) to reaching node1's head height.

    ``readings`` and ``non_readings`` count the chain's transactions (the others are device
    admissions); readings/s = transactions synced in that window / seconds, scaled by the
    readings' share of the chain's transactions.
    """
    source = net.names[0]
    head = (await net.status(source))["height"]
    reporter.begin(f"bootstrap, {head:,} blocks", total=head)
    name = await net.add_node()
    first: dict[str, Any] = {}
    status: dict[str, Any] = {"height": -1}
    t0 = time.monotonic()
    with trio.move_on_after(timeout_s):
        async with open_client(net.node(name).api) as client:
            first = status = await client.call("status")
            t0 = time.monotonic()
            while status["height"] < head:
                await trio.sleep(POLL_S)
                status = await client.call("status")
                reporter.advance(status["height"])
    seconds = time.monotonic() - t0
    if status["height"] < head:
        raise LocalnetTimeout(f"bootstrap: {name} reached height {status['height']} of {head} "
                              f"in {timeout_s} s; see {net.node(name).log}")
    synced_txs = status["committed_txs"] - first["committed_txs"]
    total_txs = readings + non_readings
    synced_readings = synced_txs * readings / total_txs if total_txs else 0.0
    rate = synced_readings / seconds if seconds > 0 else 0.0
    reporter.end(f"{rate:,.0f} readings/s")
    return {
        "node": name,
        "height": head,
        "seconds": round(seconds, 3),
        "height_at_start": first["height"],
        "readings": round(synced_readings),
        "readings_found": status["committed_txs"] - non_readings,
        "readings_per_s": round(rate),
    }
