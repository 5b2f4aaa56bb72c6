"""Named chaos scenarios: a seeded plan of steps, then run against a :class:`Localnet`.

The plan depends only on the scenario, the node names, the seed and the duration, so the
same command line disrupts the same nodes at the same moments (``move`` picks its new port
when it runs). Every disruption in a plan is undone by a later step of the same plan.

| scenario     | each round (duration / rounds, about 5 s)                        |
|--------------|------------------------------------------------------------------|
| drop-peers   | two random nodes refuse each other; healed half a round later     |
| kill-restart | a random node is SIGKILLed; restarted half a round later          |
| pause        | a random node is SIGSTOPped; resumed half a round later           |
| partition    | the nodes split at random into two sides; healed half a round later |
| move         | a random node moves its p2p listener to a new loopback address    |
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import trio

from ..client import ApiError
from .layout import LocalnetError
from .net import Localnet
from .rpc import NodeUnreachable

log = structlog.get_logger(__name__)

SCENARIOS = ("drop-peers", "kill-restart", "pause", "partition", "move")
ROUND_S = 5.0  # one disruption per round; long enough for a node to notice and recover
SETTLE_S = 20.0  # after the last step, how long the network may take to agree again


@dataclass(frozen=True, slots=True)
class Step:
    """At ``at_s`` seconds after the start, call ``Localnet.<action>(*args)``."""

    at_s: float
    action: str
    args: tuple[Any, ...] = ()

    def describe(self) -> str:
        shown = " | ".join(",".join(a) if isinstance(a, list | tuple) else str(a)
                           for a in self.args)
        return f"t+{self.at_s:6.2f}s  {self.action:<10} {shown}".rstrip()

    def to_json(self) -> dict[str, Any]:
        return {"at_s": self.at_s, "action": self.action,
                "args": [list(a) if isinstance(a, tuple | list) else a for a in self.args]}


def plan(scenario: str, names: Sequence[str], *, seed: int, duration_s: float) -> list[Step]:
    """The steps of ``scenario`` over ``duration_s`` on nodes ``names``, from ``seed``."""
    if scenario not in SCENARIOS:
        raise LocalnetError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    if scenario in ("drop-peers", "partition") and len(names) < 2:
        raise LocalnetError(f"{scenario} needs at least 2 nodes")
    if duration_s <= 0:
        raise LocalnetError("duration must be positive")
    rng = random.Random(seed)
    rounds = max(1, round(duration_s / ROUND_S))
    length = duration_s / rounds
    steps: list[Step] = []
    for i in range(rounds):
        at, back = round(i * length, 3), round(i * length + length / 2, 3)
        if scenario == "drop-peers":
            a, b = sorted(rng.sample(list(names), 2))
            steps += [Step(at, "drop_peer", (a, b)), Step(back, "heal")]
        elif scenario == "kill-restart":
            name = rng.choice(list(names))
            steps += [Step(at, "kill", (name,)), Step(back, "restart", (name,))]
        elif scenario == "pause":
            name = rng.choice(list(names))
            steps += [Step(at, "pause", (name,)), Step(back, "resume", (name,))]
        elif scenario == "partition":
            shuffled = rng.sample(list(names), len(names))
            cut = rng.randint(1, len(names) - 1)
            sides = (tuple(sorted(shuffled[:cut])), tuple(sorted(shuffled[cut:])))
            steps += [Step(at, "partition", sides), Step(back, "heal")]
        else:  # move
            steps.append(Step(at, "move", (rng.choice(list(names)),)))
    return steps


async def restore(net: Localnet, names: Sequence[str]) -> None:
    """Best effort, shielded: resume or restart ``names`` if paused or down; heal."""
    with trio.CancelScope(shield=True), trio.move_on_after(60):
        for name in names:
            state = net.state(name)
            try:
                if state == "paused":
                    await net.resume(name)
                elif state == "down":
                    await net.restart(name)
            except (LocalnetError, ApiError, NodeUnreachable) as exc:
                log.warning("restore_failed", node=name, state=state, error=str(exc))
        try:
            await net.heal()
        except (ApiError, NodeUnreachable) as exc:
            log.warning("restore_failed", action="heal", error=str(exc))


async def run_steps(net: Localnet, steps: Sequence[Step],
                    on_step: Callable[[Step, Any], None] | None = None, *,
                    start: float | None = None) -> None:
    """Run ``steps`` at their times after ``start`` (a trio time; default now), calling
    ``on_step(step, result)`` after each."""
    start = trio.current_time() if start is None else start
    for step in steps:
        await trio.sleep_until(start + step.at_s)
        result = await getattr(net, step.action)(*step.args)
        log.info("chaos_step_done", at_s=step.at_s, action=step.action, args=step.to_json()["args"],
                 result=result)
        if on_step is not None:
            on_step(step, result)


async def run_scenario(net: Localnet, scenario: str, *, seed: int, duration_s: float,
                       k: int = 3, settle_s: float = SETTLE_S,
                       on_plan: Callable[[list[Step]], None] | None = None,
                       on_step: Callable[[Step, Any], None] | None = None) -> dict[str, Any]:
    """Plan ``scenario`` on the running nodes, run it, then check the invariants (allowing
    ``settle_s`` for the network to agree again). Returns the report; raises InvariantError
    if they do not hold."""
    running = [n for n in net.names if net.state(n) == "up"]
    steps = plan(scenario, running, seed=seed, duration_s=duration_s)
    if on_plan is not None:
        on_plan(steps)
    log.info("chaos_started", scenario=scenario, seed=seed, steps=len(steps))
    start = trio.current_time()
    try:
        await run_steps(net, steps, on_step, start=start)
    except BaseException:
        await restore(net, running)  # never leave a node stopped or cut off behind a failed run
        raise
    await trio.sleep_until(start + duration_s)
    report = await net.check_invariants(k=k, within_s=settle_s)
    log.info("chaos_finished", scenario=scenario, seed=seed)
    return {"scenario": scenario, "seed": seed, "duration_s": duration_s,
            "steps": [s.to_json() for s in steps], "invariants": report}
