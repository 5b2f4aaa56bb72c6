"""What a benchmark run does: which timed phases, at which offered rates, for how long.

``--duration`` is the total seconds of offered load over all timed phases (not per phase),
so the whole default run stays within a few minutes on a 2-core machine. In the default run
the fixed-rate phase gets 40% of it, the latency sweep 35% (shared equally by its extra
rates) and the saturation phase 25%; ``--rate R`` (only the fixed phase) or ``--saturate``
(only the saturation phase) gives that one phase the whole duration.

The saturation phase is the shortest because its backlog must drain within the load
process's 15 s watch after its last send (``DRAIN_TIMEOUT_S`` in :mod:`iomtnode.sim.load`):
readings finalized later are in every chain but not counted as finalized by the load.
"""

from __future__ import annotations

from dataclasses import dataclass

FIXED, SWEEP, SATURATION = "fixed", "sweep", "saturation"
DEFAULT_DURATION_S = 30.0
DEFAULT_FIXED_RATE = 1000.0
DEFAULT_SWEEP = (250.0, 500.0, 2000.0)  # with the fixed rate and saturation: the latency sweep
SATURATION_FACTOR = 1.2  # offered rate at saturation: above the ceiling, so saturation is sure
PUSHED_BACK = 0.9  # an earlier phase whose load could send under this share of its readings...
OVERLOAD_CAP = 3.0  # ...caps the saturation offer at this x the best rate finalized so far
SHARES = {FIXED: 0.4, SWEEP: 0.35, SATURATION: 0.25}  # of --duration, over the phases run
DEFAULT_DEVICES = 64


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    kind: str  # FIXED, SWEEP or SATURATION
    rate: float  # offered readings/s
    duration_s: float  # seconds of offered load


@dataclass(frozen=True, slots=True)
class Plan:
    nodes: int = 4
    duration_s: float = DEFAULT_DURATION_S
    fixed_rate: float | None = DEFAULT_FIXED_RATE  # None: no fixed-rate phase
    sweep_rates: tuple[float, ...] = DEFAULT_SWEEP
    saturate: bool = True
    saturation_rate: float | None = None  # None: SATURATION_FACTOR x the localnet ceiling
    devices: int = DEFAULT_DEVICES  # simulated devices per phase (each phase its own)
    netns: bool = False  # every node in its own network namespace (root)
    rtt_ms: float = 0.0  # round trip between any two nodes (needs netns); 0: none added

    @property
    def mode(self) -> str:
        if self.fixed_rate is not None and self.saturate:
            return "full"
        return "rate" if self.fixed_rate is not None else "saturate"

    def offered_saturation(self, ceiling: float) -> float:
        return float(round(self.saturation_rate or ceiling * SATURATION_FACTOR))

    def phases(self, ceiling: float) -> list[PhaseSpec]:
        """The timed phases in order (fixed, sweep rates ascending, saturation), given the
        localnet ceiling. Sweep rates at or above the saturation rate, or equal to the fixed
        rate (whose phase is already a point of the sweep), are left out."""
        sat = self.offered_saturation(ceiling) if self.saturate else None
        sweep = sorted({r for r in self.sweep_rates
                        if r != self.fixed_rate and (sat is None or r < sat)})
        kinds = {FIXED: self.fixed_rate is not None, SWEEP: bool(sweep),
                 SATURATION: sat is not None}
        total = sum(SHARES[k] for k, present in kinds.items() if present)
        seconds = {k: self.duration_s * SHARES[k] / total for k in SHARES}
        specs = []
        if self.fixed_rate is not None:
            specs.append(PhaseSpec(FIXED, self.fixed_rate, seconds[FIXED]))
        specs += [PhaseSpec(SWEEP, r, seconds[SWEEP] / len(sweep)) for r in sweep]
        if sat is not None:
            specs.append(PhaseSpec(SATURATION, sat, seconds[SATURATION]))
        return specs


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an earlier phase showed: readings planned and sent, and the rate finalized."""

    planned: float  # offered rate x duration
    sent: int
    achieved_rate: float


def saturation_offer(plan: Plan, ceiling: float, earlier: list[Outcome]) -> tuple[float, str]:
    """The saturation phase's offered rate and the rule that chose it.

    ``SATURATION_FACTOR`` x the ceiling, unless ``--saturation-rate`` says otherwise; but
    when node1 already pushed back in an earlier phase (its load process could send under
    ``PUSHED_BACK`` of its readings in time), no more than ``OVERLOAD_CAP`` x the best rate
    finalized so far: still far above what the network finalizes, without presigning
    readings that the push back would never let the load process send (presigning is most
    of a run's time).
    """
    rate = plan.offered_saturation(ceiling)
    if plan.saturation_rate is not None:
        return rate, "--saturation-rate"
    if any(o.sent < PUSHED_BACK * o.planned for o in earlier):
        cap = float(round(OVERLOAD_CAP * max(o.achieved_rate for o in earlier)))
        if cap < rate:
            return cap, f"{OVERLOAD_CAP:g} x the best finalized rate (node1 pushed back)"
    return rate, f"{SATURATION_FACTOR:g} x the localnet ceiling"


def parse_rates(text: str) -> tuple[float, ...]:
    """``"250,500,2000"`` -> (250.0, 500.0, 2000.0); an empty string is no rates."""
    rates = tuple(float(part) for part in text.split(",") if part.strip())
    if any(r <= 0 for r in rates):
        raise ValueError("rates must be positive")
    return rates
