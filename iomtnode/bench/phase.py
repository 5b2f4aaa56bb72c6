"""One timed phase: a separate load process (``simulate --presign``) against node1 while the
nodes are sampled, then a wait until every node holds every accepted reading."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from ..localnet import Localnet
from .machine import proc_usage, tree_cpu_s
from .plan import PhaseSpec
from .progress import Reporter

SAMPLE_EVERY_S = 0.5  # node status polling during a phase
DELIVERY_WAIT_S = 30.0  # after the load, how long the nodes may take to commit everything
# a phase's first transactions, per device, before its readings: the device's admission and
# its stream's first epoch (a stream's devices are refused until it announces one)
SETUP_TXS_PER_DEVICE = 2


@dataclass
class Phase:
    spec: PhaseSpec
    devices: int  # admitted by this phase's load process (new devices: its own seed)
    seed: int
    # (seconds, committed transactions per node, per node that reports it the point just
    # after its latest commit: (seconds on its wall clock, committed transactions))
    samples: list[tuple[float, dict[str, int], dict[str, tuple[float, int]]]] = field(
        default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)  # `simulate --json` output
    wall_s: float = 0.0  # the whole phase: load process start to every node caught up
    catch_up_s: float = 0.0  # from the load process's exit to every node caught up

    @property
    def setup_txs(self) -> int:
        """Transactions of this phase that are not readings (admissions and epochs)."""
        return self.devices * SETUP_TXS_PER_DEVICE

    def steady_rate(self, name: str) -> float:
        """Readings/s committed by ``name`` from the first sample that shows this phase's
        readings arriving to the first that shows all of them (ramp-up excluded).

        The points are the node's own: its count just after its latest commit, and when
        that was, when every sample has one. A sample's own time is up to SAMPLE_EVERY_S
        after the node reached its count, which over a phase of a few seconds would move
        the rate by several percent (and the throughput, the slowest node's rate, would
        take the lowest of those errors)."""
        if self.samples and all(name in last for _, _, last in self.samples):
            points = [last[name] for _, _, last in self.samples]
        else:
            points = [(t, c[name]) for t, c, _ in self.samples if name in c]
        if len(points) < 3:
            return 0.0
        # the phase's first transactions are its devices' admissions and epochs
        base, final = points[0][1] + self.setup_txs, points[-1][1]
        first = next((p for p in points if p[1] > base), None)
        last = next((p for p in points if p[1] == final), None)
        if first is None or last is None or last[0] <= first[0]:
            return 0.0
        return (last[1] - first[1]) / (last[0] - first[0])

    @property
    def finalized(self) -> int:
        """Readings the load process saw finalized (in a block at node1)."""
        return int(self.load.get("committed", 0))

    @property
    def achieved_rate(self) -> float:
        """Readings finalized / seconds from the first send to the last finalization."""
        elapsed = float(self.load.get("elapsed_s") or 0.0)
        return self.finalized / elapsed if elapsed > 0 else 0.0

    def delta(self, name: str, key: str) -> float:
        return float(self.after[name][key] - self.before[name][key])


async def snapshot(net: Localnet, names: Sequence[str]) -> dict[str, Any]:
    """Per node: committed transactions, height, bytes sent, CPU, peak RSS, delay windows."""
    snap: dict[str, Any] = {}
    for name in names:
        status = await net.status(name)
        peers = await net.admin(name, "admin_peers")
        proc = net.node(name).proc
        usage = proc_usage(proc.pid) if proc else None
        snap[name] = {
            "committed": status["committed_txs"],
            "height": status["height"],
            "bytes_out": sum(c["bytes_out"] for c in peers["counters"].values()),
            "cpu_s": tree_cpu_s(proc.pid, usage) if proc and usage else 0.0,  # with workers
            "rss_mb": usage.rss_peak_mb if usage else 0.0,
            "commit_delay_ms": status["commit_delay_ms"],
            "gossip_delay_ms": status["gossip_delay_ms"],
            "delivery_delay_ms": status["delivery_delay_ms"],
        }
    return snap


def load_command(net: Localnet, spec: PhaseSpec, devices: int, seed: int) -> list[str]:
    node1 = net.node(net.names[0])
    return [sys.executable, "-m", "iomtnode", "--log-level", "warning", "simulate",
            "--api", node1.api, "--home", str(node1.home), "--devices", str(devices),
            "--rate", str(spec.rate), "--duration", f"{spec.duration_s:.3f}",
            "--seed", str(seed), "--presign", "--json"]


async def run_phase(net: Localnet, names: Sequence[str], phase: Phase, reporter: Reporter,
                    *, load_timeout_s: float) -> None:
    """Run ``phase``'s load process to its end, then wait (at most DELIVERY_WAIT_S) until
    every node of ``names`` has committed every reading node1 accepted."""
    started = time.monotonic()
    phase.before = await snapshot(net, names)
    bases = {n: phase.before[n]["committed"] + phase.setup_txs for n in names}
    spec = phase.spec
    reporter.begin(f"{spec.kind} {spec.rate:,.0f}/s {spec.duration_s:.1f} s",
                   total=spec.rate * spec.duration_s)
    target: dict[str, int] = {}  # committed count every node must reach, once known
    done = trio.Event()

    async def sample() -> None:
        while True:
            statuses = {n: await net.status(n) for n in names}
            counts = {n: status["committed_txs"] for n, status in statuses.items()}
            phase.samples.append((time.monotonic(), counts, {
                n: (last["time_ms"] / 1000, last["committed_txs"])
                for n, status in statuses.items() if (last := status.get("last_commit"))}))
            slowest = min(counts[n] - bases[n] for n in names)
            reporter.advance(slowest)  # readings of this phase at the slowest node
            if target and all(counts[n] >= target[n] for n in names):
                return
            with trio.move_on_after(SAMPLE_EVERY_S):
                await done.wait()
            if done.is_set() and not target:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        with trio.fail_after(load_timeout_s):
            result = await trio.run_process(load_command(net, spec, phase.devices, phase.seed),
                                            capture_stdout=True, capture_stderr=True,
                                            check=False)
        load_exit = time.monotonic()
        if result.returncode == 0:
            phase.load = json.loads(result.stdout)
            target.update({n: bases[n] + int(phase.load["accepted"]) for n in names})
            nursery.cancel_scope.deadline = trio.current_time() + DELIVERY_WAIT_S
        else:
            done.set()
    phase.catch_up_s = time.monotonic() - load_exit
    if result.returncode != 0:
        raise RuntimeError(f"load process failed: {result.stderr.decode()[-2000:]}")
    phase.after = await snapshot(net, names)
    phase.wall_s = time.monotonic() - started
    reporter.end(f"{phase.finalized:,} readings, {phase.achieved_rate:,.0f}/s")
