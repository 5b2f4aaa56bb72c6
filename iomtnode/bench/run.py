"""The benchmark run: a localnet of real node processes, a separate load process, phases.

1. ceiling: ed25519 verifications/s on one core, measured first; the localnet ceiling is
   that x usable cores / nodes (every node verifies every reading once).
2. fixed rate (default 1,000/s): latency (submit to commit at the submitting node, and
   reading time to commit / to arrival by gossip at every node), wire bytes, CPU.
3. saturation: an offered rate above the ceiling; throughput is the steady-state rate at
   which the *slowest* node commits readings (delivered to every node).
The load process signs every reading before its timed phase (``simulate --presign``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import trio

from ..localnet import Localnet
from ..sim.vitals import make_devices
from .machine import disk_bytes, ed25519_verify_rate, proc_usage, usable_cores

log = structlog.get_logger(__name__)

SAMPLE_EVERY_S = 0.5  # node status polling during a phase
DELIVERY_WAIT_S = 30.0  # after the load, how long followers may take to catch up
LOAD_DEVICES = 64
NODE_ENV = {"IOMTNODE_BLOCK_INTERVAL_S": "0.25", "IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "5"}


@dataclass
class Phase:
    offered_rate: float
    duration_s: float
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)

    def steady_rate(self, name: str) -> float:
        """Readings/s committed by ``name`` from the first sample that shows this phase's
        readings arriving to the first that shows all of them (ramp-up excluded)."""
        points = [(t, c[name]) for t, c in self.samples if name in c]
        if len(points) < 3:
            return 0.0
        # the phase's first LOAD_DEVICES transactions are admissions, before presigning
        base, final = points[0][1] + LOAD_DEVICES, points[-1][1]
        first = next((p for p in points if p[1] > base), None)
        last = next((p for p in points if p[1] == final), None)
        if first is None or last is None or last[0] <= first[0]:
            return 0.0
        return (last[1] - first[1]) / (last[0] - first[0])


async def _node_snapshot(net: Localnet) -> dict[str, Any]:
    snap: dict[str, Any] = {}
    for name in net.names:
        status = await net.status(name)
        peers = await net.admin(name, "admin_peers")
        proc = net.node(name).proc
        usage = proc_usage(proc.pid) if proc else None
        snap[name] = {
            "committed": status["committed_txs"],
            "height": status["height"],
            "bytes_out": sum(c["bytes_out"] for c in peers["counters"].values()),
            "cpu_s": usage.cpu_s if usage else 0.0,
            "rss_mb": usage.rss_peak_mb if usage else 0.0,
            "commit_delay_ms": status["commit_delay_ms"],
            "gossip_delay_ms": status["gossip_delay_ms"],
        }
    return snap


async def _run_phase(net: Localnet, phase: Phase, seed: int,
                     on_progress: Callable[[str], None]) -> None:
    node1 = net.node(net.names[0])
    phase.before = await _node_snapshot(net)
    done = trio.Event()

    async def sample() -> None:
        while not done.is_set():
            counts = {n: (await net.status(n))["committed_txs"] for n in net.names}
            phase.samples.append((time.monotonic(), counts))
            on_progress(f"offered {phase.offered_rate:.0f}/s: committed "
                        + " ".join(f"{n}={c}" for n, c in counts.items()))
            with trio.move_on_after(SAMPLE_EVERY_S):
                await done.wait()

    cmd = [sys.executable, "-m", "iomtnode", "--log-level", "warning", "simulate",
           "--api", node1.api, "--home", str(node1.home), "--devices", str(LOAD_DEVICES),
           "--rate", str(phase.offered_rate), "--duration", str(phase.duration_s),
           "--seed", str(seed), "--presign", "--json"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        result = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True,
                                        check=False)
        with trio.move_on_after(DELIVERY_WAIT_S):  # until every node has every reading
            while len(set(phase.samples[-1][1].values())) > 1:  # noqa: ASYNC110 - polls
                await trio.sleep(SAMPLE_EVERY_S)
        done.set()
    if result.returncode != 0:
        raise RuntimeError(f"load process failed: {result.stderr.decode()[-2000:]}")
    phase.load = json.loads(result.stdout)
    phase.after = await _node_snapshot(net)


def reading_size() -> int:
    device = make_devices(1, seed=1)[0]
    return len(device.next_reading("iomt-localnet", int(time.time() * 1000)).raw)


def summarize(nodes: int, ceiling_1core: float, cores: int, fixed: Phase, sat: Phase,
              size: int, disk: int) -> dict[str, Any]:
    ceiling = ceiling_1core * cores / nodes
    throughput = min(sat.steady_rate(n) for n in sat.after)
    readings = fixed.load["committed"] or 1
    delta = {n: {k: fixed.after[n][k] - fixed.before[n][k]
                 for k in ("bytes_out", "cpu_s", "committed")} for n in fixed.after}
    wire = sum(d["bytes_out"] for d in delta.values()) / readings / nodes
    followers = list(fixed.after)[1:]
    return {
        "nodes": nodes,
        "cores": cores,
        "verify_per_s_one_core": round(ceiling_1core),
        "ceiling_readings_per_s": round(ceiling),
        "throughput_readings_per_s": round(throughput),
        "efficiency": round(throughput / ceiling, 3),
        "offered_rate": fixed.offered_rate,
        "latency_ms": fixed.load["latency_ms"],
        "follower_commit_delay_ms": {n: fixed.after[n]["commit_delay_ms"] for n in followers},
        "follower_gossip_delay_ms": {n: fixed.after[n]["gossip_delay_ms"] for n in followers},
        "cpu_s_per_reading": round(sum(d["cpu_s"] for d in delta.values()) / readings, 6),
        "reading_bytes": size,
        "wire_bytes_per_reading_per_node": round(wire, 1),
        "wire_ratio": round(wire / size, 3),
        "rss_mb_max": round(max(s["rss_mb"] for s in sat.after.values()), 1),
        "disk_bytes_per_reading": round(disk / max(1, max(
            s["committed"] for s in sat.after.values()))),
        "saturation": {"offered_rate": sat.offered_rate, "load": sat.load,
                       "per_node_readings_per_s": {n: round(sat.steady_rate(n))
                                                   for n in sat.after}},
        "fixed_rate_load": fixed.load,
    }


async def run_bench(*, nodes: int, duration_s: float, rate: float, out_dir: Path | None,
                    on_progress: Callable[[str], None]) -> dict[str, Any]:
    cores = usable_cores()
    one_core = ed25519_verify_rate()
    on_progress(f"ceiling: {one_core:,.0f} verifications/s on one core, {cores} cores")
    with tempfile.TemporaryDirectory(prefix="iomtnode-bench-") as tmp:
        path = (out_dir or Path(tmp)) / "localnet"
        async with Localnet.start(nodes, path=path, env=NODE_ENV) as net:
            await net.wait_for_height(1, timeout_s=60)
            fixed = Phase(rate, duration_s)
            await _run_phase(net, fixed, 1, on_progress)
            sat_rate = round(one_core * cores / nodes * 1.5)
            sat = Phase(sat_rate, duration_s)
            await _run_phase(net, sat, 2, on_progress)
            disk = disk_bytes(Path(net.node(net.names[0]).home) / "data")
        return summarize(nodes, one_core, cores, fixed, sat, reading_size(), disk)
