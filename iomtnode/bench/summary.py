"""The benchmark's JSON result, computed from the measured phases (see docs/performance.md
for every key)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .phase import Phase
from .plan import FIXED, SATURATION, Plan

STEADY_DRIFT = 1.15  # verify-rate drift over a run beyond which its efficiency is unreliable


@dataclass(frozen=True, slots=True)
class Machine:
    cores: int
    verify_per_s_one_core: float  # measured first: the ceiling's
    verify_after_per_s: float | None = None  # measured again after the load phases
    verify_before_saturation_per_s: float | None = None  # ... and just before saturation

    def ceiling(self, nodes: int) -> float:
        """Readings/s the localnet could finalize if verifying were all it did."""
        return self.verify_per_s_one_core * self.cores / nodes

    @property
    def verify_drift(self) -> float:
        """The fastest of the verify rates measured over the run / the slowest (1.0: the
        machine kept its speed). Above :data:`STEADY_DRIFT`, the ceiling measured first
        does not describe the saturation phase, and its efficiency says little."""
        rates = [r for r in (self.verify_per_s_one_core, self.verify_before_saturation_per_s,
                             self.verify_after_per_s) if r]
        return max(rates) / min(rates)


def latency_point(phase: Phase) -> dict[str, Any]:
    lat = phase.load.get("latency_ms") or {}
    return {"offered_rate": phase.spec.rate, "kind": phase.spec.kind,
            "p50": lat.get("p50"), "p99": lat.get("p99"), "max": lat.get("max"),
            "achieved_rate": round(phase.achieved_rate)}


def _phase_doc(phase: Phase, names: Sequence[str]) -> dict[str, Any]:
    return {"kind": phase.spec.kind, "offered_rate": phase.spec.rate,
            "duration_s": round(phase.spec.duration_s, 3), "load": phase.load,
            "achieved_rate": round(phase.achieved_rate), "wall_s": round(phase.wall_s, 1),
            "catch_up_s": round(phase.catch_up_s, 1),
            "per_node_readings_per_s": {n: round(phase.steady_rate(n)) for n in names}}


def _cost(phase: Phase, names: Sequence[str], size: int) -> dict[str, Any]:
    readings = phase.finalized or 1
    wire = sum(phase.delta(n, "bytes_out") for n in names) / readings / len(names)
    return {
        "cost_phase": phase.spec.kind,
        "cpu_s_per_reading": round(sum(phase.delta(n, "cpu_s") for n in names) / readings, 6),
        "reading_bytes": size,
        "wire_bytes_per_reading_per_node": round(wire, 1),
        "wire_ratio": round(wire / size, 3),
        "follower_commit_delay_ms": {n: phase.after[n]["commit_delay_ms"] for n in names[1:]},
        "follower_gossip_delay_ms": {n: phase.after[n]["gossip_delay_ms"] for n in names[1:]},
        "follower_delivery_delay_ms": {n: phase.after[n]["delivery_delay_ms"]
                                       for n in names[1:]},
    }


def summarize(plan: Plan, machine: Machine, phases: Sequence[Phase], *,
              final_committed: dict[str, int], non_readings: int, reading_size: int,
              disk_bytes: int, bootstrap: dict[str, Any], wall_s: float = 0.0,
              saturation_rule: str | None = None, network: dict[str, Any] | None = None,
              node_env: dict[str, str] | None = None) -> dict[str, Any]:
    """The result object. ``final_committed`` is every node's committed transaction count
    after the load phases; ``non_readings`` how many of those are not readings (the device
    admissions and their streams' epochs, plus any before the first phase)."""
    names = list(final_committed)
    fixed = next((p for p in phases if p.spec.kind == FIXED), None)
    sat = next((p for p in phases if p.spec.kind == SATURATION), None)
    ceiling = round(machine.ceiling(plan.nodes))
    throughput = round(min(sat.steady_rate(n) for n in names)) if sat else None
    found = {n: c - non_readings for n, c in final_committed.items()}
    last = phases[-1]
    return {
        "nodes": plan.nodes,
        "cores": machine.cores,
        "mode": plan.mode,
        "duration_s": plan.duration_s,
        "verify_per_s_one_core": round(machine.verify_per_s_one_core),
        "verify_per_s_one_core_after": (round(machine.verify_after_per_s)
                                        if machine.verify_after_per_s else None),
        "verify_per_s_one_core_before_saturation": (
            round(machine.verify_before_saturation_per_s)
            if machine.verify_before_saturation_per_s else None),
        "verify_drift": round(machine.verify_drift, 3),
        "ceiling_readings_per_s": ceiling,
        "throughput_readings_per_s": throughput,
        "efficiency": round(throughput / ceiling, 3) if throughput is not None else None,
        "offered_rate": fixed.spec.rate if fixed else None,
        "latency_ms": fixed.load["latency_ms"] if fixed else None,
        "latency_by_rate": sorted((latency_point(p) for p in phases),
                                  key=lambda point: point["offered_rate"]),
        **_cost(fixed or sat or last, names, reading_size),
        "rss_mb_max": round(max(last.after[n]["rss_mb"] for n in names), 1),
        "disk_bytes_per_reading": round(disk_bytes / max(1, found[names[0]])),
        "readings_finalized": sum(p.finalized for p in phases),
        "readings_accepted": sum(int(p.load.get("accepted", 0)) for p in phases),
        "readings_found": found,
        "bootstrap_readings_per_s": bootstrap["readings_per_s"],
        "bootstrap": bootstrap,
        "saturation": {"offered_rate": sat.spec.rate, "offered_rule": saturation_rule,
                       "load": sat.load,
                       "per_node_readings_per_s": {n: round(sat.steady_rate(n))
                                                   for n in names}} if sat else None,
        "fixed_rate_load": fixed.load if fixed else None,
        "phases": [_phase_doc(p, names) for p in phases],
        "network": network or {"netns": False, "rtt_ms": 0.0},
        "node_env": node_env or {},
        "wall_s": round(wall_s, 1),
    }
