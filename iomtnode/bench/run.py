"""The benchmark run: a localnet of real node processes, separate load processes, phases.

1. ceiling: ed25519 verifications/s on one core, measured first (before any node runs); the
   localnet ceiling is that x usable cores / nodes (every node verifies every reading once).
2. fixed rate (default 1,000/s): submit-to-final latency, wire bytes, CPU.
3. latency sweep: the same latency at a few more offered rates below saturation.
4. saturation: an offered rate above the ceiling (or well above what an earlier phase that
   already overloaded the network finalized: :func:`~.plan.saturation_offer`); throughput is
   the steady-state rate at which the *slowest* node commits readings (delivered to every
   node).
5. bootstrap: a fresh node syncs the chain the phases made.
Each phase's load process admits its own devices and signs every reading before its timed
part (``simulate --presign``). See :mod:`iomtnode.bench.plan` for the phases' lengths.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..admission.verify import usable_cores
from ..localnet import Localnet, LocalnetError
from ..sim.vitals import make_devices
from .bootstrap import measure_bootstrap
from .machine import disk_bytes, ed25519_verify_rate
from .phase import Phase, run_phase
from .plan import SATURATION, Outcome, PhaseSpec, Plan, saturation_offer
from .progress import NullReporter, Reporter
from .summary import Machine, summarize
from .widearea import apply_rtt

# the nodes' defaults, but an empty block only every 5 s (none during a phase)
NODE_ENV = {"IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "5"}
# the nodes' consensus round timeouts (seconds; config defaults) suit this many nodes on a
# 2-core machine; with more, every node shares the cores with more others and each height
# costs the machine more (its votes grow as nodes^2), so the bench scales them by
# nodes / TIMEOUT_BASE_NODES: otherwise rounds of a loaded height time out and their
# re-proposals cost more than the wait (at 16 nodes, round 3 heights on 2 cores)
TIMEOUT_BASE_NODES = 4
ROUND_TIMEOUTS_S = {"TIMEOUT_PROPOSE_S": 1.0, "TIMEOUT_PREVOTE_S": 0.5,
                    "TIMEOUT_PRECOMMIT_S": 0.5, "TIMEOUT_DELTA_S": 0.5}
START_TIMEOUT_S = 60.0
NODE_START_S_PER_NODE = 4.0  # a node's API must answer within this x nodes (at least 30 s):
# every node's process starts at once and imports for about a second of one core
LOAD_SLACK_S = 120.0  # a load process may take this long beyond its duration and presigning
PRESIGN_BUDGET_S = 0.002  # per reading (presigning takes ~0.25 ms on a 2020s core)


def node_env(nodes: int) -> dict[str, str]:
    """The nodes' settings in a bench localnet of ``nodes``: the default block interval, and
    above TIMEOUT_BASE_NODES nodes the round timeouts scaled up (see ROUND_TIMEOUTS_S)."""
    scale = max(1.0, nodes / TIMEOUT_BASE_NODES)
    if scale == 1.0:
        return dict(NODE_ENV)
    return {**NODE_ENV, **{f"IOMTNODE_{key}": f"{seconds * scale:g}"
                           for key, seconds in ROUND_TIMEOUTS_S.items()}}


def reading_size() -> int:
    """Encoded bytes of one simulated reading (what a device sends)."""
    device = make_devices(1, seed=1)[0]
    return len(device.next_reading("iomt-localnet", int(time.time() * 1000)).raw)


def load_timeout(spec: PhaseSpec) -> float:
    return spec.duration_s + spec.rate * spec.duration_s * PRESIGN_BUDGET_S + LOAD_SLACK_S


def localnet_dir(out_dir: Path | None, tmp: str) -> Path:
    """Where the localnet goes: DIR/localnet with ``--out DIR`` (which must not exist yet:
    a second run would otherwise measure on top of the first run's chain)."""
    path = (out_dir or Path(tmp)) / "localnet"
    if path.exists():
        raise LocalnetError(f"{path} exists (an earlier run's localnet); remove it or pick "
                            f"another --out")
    return path


async def run_phases(net: Localnet, plan: Plan, specs: list[PhaseSpec], ceiling: float,
                     reporter: Reporter) -> tuple[list[Phase], str | None, float | None]:
    """Run the timed phases in order; returns them, the saturation offer's rule and the
    verify rate measured just before the saturation phase (with the nodes idle)."""
    phases: list[Phase] = []
    rule = None
    verify_before_saturation = None
    for seed, spec in enumerate(specs, start=1):  # its own seed: its own devices
        if spec.kind == SATURATION:
            rate, rule = saturation_offer(plan, ceiling, [
                Outcome(p.spec.rate * p.spec.duration_s, int(p.load["submitted"]),
                        p.achieved_rate) for p in phases])
            spec = replace(spec, rate=rate)
            verify_before_saturation = ed25519_verify_rate()
        phase = Phase(spec, plan.devices, seed)
        await run_phase(net, net.names[:plan.nodes], phase, reporter,
                        load_timeout_s=load_timeout(spec))
        phases.append(phase)
    return phases, rule, verify_before_saturation


async def run_bench(plan: Plan, *, out_dir: Path | None = None,
                    reporter: Reporter | None = None) -> dict[str, Any]:
    """Run ``plan`` and return the result object (see docs/performance.md for its keys)."""
    reporter = reporter or NullReporter()
    started = time.monotonic()
    reporter.begin("ceiling (ed25519 verify/s)")
    machine = Machine(usable_cores(), ed25519_verify_rate())
    ceiling = machine.ceiling(plan.nodes)
    reporter.end(f"{machine.verify_per_s_one_core:,.0f}/s x {machine.cores} cores / "
                 f"{plan.nodes} nodes = {ceiling:,.0f} readings/s")
    specs = plan.phases(ceiling)
    with tempfile.TemporaryDirectory(prefix="iomtnode-bench-") as tmp:
        path = localnet_dir(out_dir, tmp)
        where = " in network namespaces" if plan.netns else ""
        reporter.begin(f"starting {plan.nodes} nodes{where}")
        env = node_env(plan.nodes)
        async with Localnet.start(
                plan.nodes, path=path, env=env, netns=plan.netns,
                start_timeout_s=max(30.0, NODE_START_S_PER_NODE * plan.nodes)) as net:
            names = net.names
            await net.wait_for_height(1, timeout_s=START_TIMEOUT_S)
            reporter.end(str(path))
            network: dict[str, Any] = {"netns": plan.netns, "rtt_ms": 0.0}
            if plan.rtt_ms:
                network = await apply_rtt(net, plan.rtt_ms, reporter)
            before = (await net.status(names[0]))["committed_txs"]
            phases, rule, before_saturation = await run_phases(net, plan, specs, ceiling,
                                                               reporter)
            # the machine's speed drifts (other tenants): the same measure just before the
            # saturation phase and again at the end, with the nodes idle, shows by how much
            # over this run (the ceiling stays the first)
            machine = replace(machine, verify_before_saturation_per_s=before_saturation,
                              verify_after_per_s=ed25519_verify_rate())
            final = {n: (await net.status(n))["committed_txs"] for n in names}
            non_readings = before + sum(p.setup_txs for p in phases)
            disk = disk_bytes(Path(net.node(names[0]).home) / "data")
            bootstrap = await measure_bootstrap(
                net, readings=final[names[0]] - non_readings, non_readings=non_readings,
                reporter=reporter)
    return summarize(plan, machine, phases, final_committed=final, non_readings=non_readings,
                     reading_size=reading_size(), disk_bytes=disk, bootstrap=bootstrap,
                     wall_s=time.monotonic() - started, saturation_rule=rule,
                     network=network, node_env=env)
