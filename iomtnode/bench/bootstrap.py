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
EPISODE_WAIT_S = 10.0  # from reaching the head to the catch-up's end (level with every peer)


async def measure_bootstrap(net: Localnet, *, readings: int, non_readings: int,
                            reporter: Reporter, timeout_s: float = BOOTSTRAP_TIMEOUT_S
                            ) -> dict[str, Any]:
    """Start a fresh node and wait until it reaches node1's head height; its rate is the
    readings of the chain over the seconds of its catch-up as the node itself timed it
    (``status`` ``catch_ups``: from its first block asked to the last committed, every
    signature verified and every block checked and applied). The time from the process's
    spawn is reported beside it: it adds the start of a Python process (imports, about a
    second), which is not syncing.

    ``readings`` and ``non_readings`` count the chain's transactions (the others are device
    admissions and their streams' epochs).
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
            from_spawn = time.monotonic() - t0
            with trio.move_on_after(EPISODE_WAIT_S):
                while not _from_genesis(status):  # the episode ends once level with every peer
                    await trio.sleep(POLL_S)
                    status = await client.call("status")
    if status["height"] < head:
        raise LocalnetTimeout(f"bootstrap: {name} reached height {status['height']} of {head} "
                              f"in {timeout_s} s; see {net.node(name).log}")
    episode = _from_genesis(status)
    if episode is None:
        raise LocalnetTimeout(f"bootstrap: {name} reached the head but reported no catch-up "
                              f"from height 0 within {EPISODE_WAIT_S} s; see {net.node(name).log}")
    synced_readings = status["committed_txs"] - non_readings
    seconds = float(episode["seconds"])
    rate = (episode["txs"] - non_readings) / seconds if seconds > 0 else 0.0
    reporter.end(f"{rate:,.0f} readings/s")
    return {
        "node": name,
        "height": head,
        "seconds": round(seconds, 3),
        "readings": readings,
        "readings_found": synced_readings,
        "readings_per_s": round(rate),
        "seconds_from_spawn": round(from_spawn, 3),
        "readings_per_s_from_spawn": round(synced_readings / from_spawn) if from_spawn else 0,
    }


def _from_genesis(status: dict[str, Any]) -> dict[str, Any] | None:
    """The fresh node's catch-up from height 0 (its first), once it has ended."""
    return next((e for e in status.get("catch_ups", []) if e["from_height"] == 0), None)
