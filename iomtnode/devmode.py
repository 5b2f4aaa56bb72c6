"""``iomtnode dev``: a throwaway one-authority chain with simulated devices, in one process."""

from __future__ import annotations

import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import structlog
import trio

from .config import Config
from .home import init_home
from .node import Node, Services
from .service import run_until_signal
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
    """Run the dev chain and its devices until ``duration_s`` passes or SIGINT/SIGTERM."""
    await run_until_signal(partial(_dev, devices, rate, duration_s, api_listen))


async def _dev(devices: int, rate: float, duration_s: float, api_listen: str, *,
               task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with tempfile.TemporaryDirectory(prefix="iomtnode-dev-") as tmp:
        home = init_home(Path(tmp) / "node", chain_id="iomt-dev",
                         config=Config(api_listen=api_listen, p2p_listen="127.0.0.1:0"))
        node = Node(home, home.load_config())
        async with trio.open_nursery() as nursery:
            info = await nursery.start(node.run)
            task_status.started()
            url = f"ws://127.0.0.1:{info.api_port}/api/v1"
            print(f"dev chain {info.chain_id} at {url} (home {home.path}); Ctrl-C to stop",
                  flush=True)
            try:
                stats = await run_load(url, node.key, node.genesis.chain_id, devices=devices,
                                       rate=rate, duration_s=duration_s,
                                       on_progress=ProgressLine(info.services))
            finally:
                if sys.stderr.isatty():
                    sys.stderr.write("\n")
            summary = stats.summary()
            print(f"committed {summary['committed']} of {summary['submitted']} readings; "
                  f"latency ms p50 {summary['latency_ms']['p50']} "
                  f"p99 {summary['latency_ms']['p99']}", flush=True)
            nursery.cancel_scope.cancel()
