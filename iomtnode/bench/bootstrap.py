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
    """Start a fresh node and time it from the moment its process is started to reaching
    node1's head height: the whole chain, including the process's own start (about a
    second; on a small chain the sync may be over before the API first answers, so the
    window cannot start later than the spawn).

    ``readings`` and ``non_readings`` count the chain's transactions (the others are device
    admissions); readings/s = readings in the chain / seconds.
    """
    source = net.names[0]
    head = (await net.status(source))["height"]
    reporter.begin(f"bootstrap, {head:,} blocks", total=head)
    t0 = time.monotonic()
    name = await net.add_node()
    status: dict[str, Any] = {"height": -1}
    with trio.move_on_after(timeout_s):
        async with open_client(net.node(name).api) as client:
            status = await client.call("status")
            while status["height"] < head:
                await trio.sleep(POLL_S)
                status = await client.call("status")
                reporter.advance(status["height"])
    seconds = time.monotonic() - t0
    if status["height"] < head:
        raise LocalnetTimeout(f"bootstrap: {name} reached height {status['height']} of {head} "
                              f"in {timeout_s} s; see {net.node(name).log}")
    synced_readings = status["committed_txs"] - non_readings
    rate = synced_readings / seconds if seconds > 0 else 0.0
    reporter.end(f"{rate:,.0f} readings/s")
    return {
        "node": name,
        "height": head,
        "seconds": round(seconds, 3),
        "readings": round(synced_readings),
        "readings_found": status["committed_txs"] - non_readings,
        "readings_per_s": round(rate),
    }
