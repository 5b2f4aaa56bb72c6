"""``iomtnode dev``: a throwaway one-authority chain with simulated devices, in one process."""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
import trio

from .config import Config
from .home import init_home
from .node import Node, Services
from .sim.load import LoadStats, run_load

log = structlog.get_logger(__name__)

PROGRESS_INTERVAL_S = 1.0


class ProgressLine:
    """One status line, redrawn in place on a terminal (a plain line per interval otherwise)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.last = 0.0
        self.last_committed = 0
        self.tty = sys.stderr.isatty()

    def __call__(self, stats: LoadStats) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_INTERVAL_S:
            return
        rate = (stats.committed - self.last_committed) / max(now - self.last, 1e-9)
        self.last, self.last_committed = now, stats.committed
        height = self.services.chain.height
        p50 = stats.percentile(0.5)
        line = (f"height {height:>6} | committed {stats.committed:>8} | {rate:7.0f} readings/s"
                f" | rejected {stats.rejected} | mempool {len(self.services.mempool):>5}"
                f" | p50 {p50 if p50 is not None else '-'} ms")
        if self.tty:
            sys.stderr.write("\r" + line + "\x1b[K")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


async def run_dev(devices: int, rate: float, duration_s: float, api_listen: str) -> None:
    """Run the dev chain and its devices until ``duration_s`` passes or SIGINT/SIGTERM, then
    print what ran (see :func:`_dev`)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        await _dev(devices, rate, duration_s, api_listen, signals)


async def _dev(devices: int, rate: float, duration_s: float, api_listen: str,
               signals: AsyncIterator[int] | None = None, *,
               task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """The dev chain: a node in a temporary home, and ``devices`` streaming readings.

    The first of ``signals`` (Ctrl-C) stops the devices as the end of ``duration_s`` does:
    the readings sent are followed until committed, the summary is printed, then the node
    shuts down cleanly and the home is removed. A second one stops the node at once,
    without the summary."""
    stop = trio.Event()  # set by the first signal: the devices stop sending
    stopped_by: list[str] = []
    with tempfile.TemporaryDirectory(prefix="iomtnode-dev-") as tmp:
        home = init_home(Path(tmp) / "node", chain_id="iomt-dev",
                         config=Config(api_listen=api_listen, p2p_listen="127.0.0.1:0"))
        node = Node(home, home.load_config())
        async with trio.open_nursery() as nursery:
            if signals is not None:
                nursery.start_soon(_stop_on_signals, signals, stop, nursery.cancel_scope,
                                   stopped_by)
            info = await nursery.start(node.run)
            task_status.started()
            url = f"ws://127.0.0.1:{info.api_port}/api/v1"
            print(f"dev chain {info.chain_id} at {url} (home {home.path}); Ctrl-C to stop",
                  flush=True)
            try:
                stats = await run_load(url, node.key, node.genesis.chain_id, devices=devices,
                                       rate=rate, duration_s=duration_s,
                                       on_progress=ProgressLine(info.services), stop=stop)
            finally:
                if sys.stderr.isatty():
                    sys.stderr.write("\n")
            ended = f"stopped by {stopped_by[0]} after" if stopped_by else "ran"
            print(f"{ended} {time.monotonic() - stats.started:.1f} s: {devices} devices at "
                  f"{rate:g} readings/s on dev chain {info.chain_id}, height "
                  f"{info.services.chain.height}\n{_committed(stats)}\nhome {home.path}, "
                  "removed on exit", flush=True)
            nursery.cancel_scope.cancel()


def _committed(stats: LoadStats) -> str:
    """The readings' line of the summary: committed of submitted, and their latency."""
    summary = stats.summary()
    waiting = summary["accepted"] - summary["committed"] - summary["dropped"]
    return (f"committed {summary['committed']} of {summary['submitted']} readings"
            + (f" ({waiting} not yet committed)" if waiting > 0 else "")
            + f"; latency ms p50 {summary['latency_ms']['p50']} "
              f"p99 {summary['latency_ms']['p99']}")


async def _stop_on_signals(signals: AsyncIterator[int], stop: trio.Event,
                           everything: trio.CancelScope, stopped_by: list[str]) -> None:
    """The first signal sets ``stop`` (and is named in ``stopped_by``), the second cancels
    ``everything``."""
    async for signum in signals:
        name = signal.Signals(signum).name
        log.info("signal_received", signal=name)
        if stop.is_set():
            everything.cancel()
            return
        stopped_by.append(name)
        stop.set()
