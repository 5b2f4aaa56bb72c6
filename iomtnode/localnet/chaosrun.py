"""Run one chaos scenario on a running localnet and check the invariants I1-I5 after it.

::

    async with Localnet.start(nodes=4, path=tmp, devices=20, rate=100) as net:
        await net.wait_for_height(3)
        report = await run_scenario(net, "split-2-2", seed=1)
        assert report["ok"], report["violations"]

The plan comes from :mod:`iomtnode.localnet.scenarios`; while it runs, each step that
leaves a quorum connected starts a timer for I3 (every node of that quorum finalizes a new
height). After the last step: I4 (every node reaches the head the highest had), then the
rest of the duration under load, then I2 (every reading the simulator recorded as accepted
is in exactly one block on every node, or reported dropped), I1 (no height with two
blocks, over every height of every node) and I5 (peers, fds, RSS, no connection to an
address a peer has left).

Resource handling: if a step fails or the run is cancelled, every node the plan may have
stopped or cut off is resumed, restarted and healed (shielded, bounded) before the error
propagates. A scenario needing network namespaces on a loopback localnet is not run: its
report says ``skipped`` and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
import trio

from ..client import ApiError
from ..service import single_exception
from . import invariants as inv
from . import measure, procs
from .layout import LocalnetError, hostport_of
from .rpc import NodeUnreachable
from .scenarios import EXCEPT_PROPOSER, PROPOSER, Step, plan, scenario

log = structlog.get_logger(__name__)

DURATION_S = 30.0  # default length of a scenario, fault to end of recovery
WAIT_FACTOR = 3  # a timer waits this many times its bound, so a late figure is still measured
RESTORE_S = 60.0  # how long a failed run may spend putting every node back


async def restore(net: Any, names: Sequence[str]) -> None:
    """Best effort, shielded: resume or restart ``names`` if paused or down; heal."""
    with trio.CancelScope(shield=True), trio.move_on_after(RESTORE_S):
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
        except (LocalnetError, ApiError, NodeUnreachable) as exc:
            log.warning("restore_failed", action="heal", error=str(exc))


async def find_proposer(net: Any, names: Sequence[str]) -> tuple[str, dict[str, int]]:
    """The node proposing the next height now: authorities[(height + round) mod N], in the
    authorities' genesis order as ``status`` lists them, round from ``status`` (0 if it does
    not say). Returns the node and the height and round used."""
    for name in names:
        try:
            status = await net.status(name, timeout_s=measure.STATUS_TIMEOUT_S)
        except (ApiError, NodeUnreachable):
            continue
        height, round_ = int(status["height"]) + 1, int(status.get("round", 0))
        key = status["authorities"][(height + round_) % len(status["authorities"])]
        for entry in net.manifest.nodes:
            if entry.node_id == key:
                return entry.name, {"height": height, "round": round_}
        raise LocalnetError(f"the proposer {key[:16]} of height {height} is no node of this "
                            f"localnet")
    raise LocalnetError("no node answered status; cannot tell the proposer")


class _Run:
    """One scenario's execution: bindings of placeholders, timers, what was observed."""

    def __init__(self, net: Any, names: Sequence[str], bounds: inv.Bounds) -> None:
        self.net = net
        self.names = list(names)
        self.bounds = bounds
        self.bound: dict[str, str] = {}  # placeholder -> node name
        self.resumed: list[tuple[str, float | None]] = []  # (step, seconds) for I3
        self.left: list[str] = []  # addresses a node left (I5)
        self.done: list[dict[str, Any]] = []

    async def resolve(self, step: Step) -> tuple[tuple[Any, ...], list[str], dict[str, Any]]:
        """The step's arguments and quorum with placeholders bound to node names, and how
        a placeholder bound here was found."""
        found: dict[str, Any] = {}
        if PROPOSER in step.args and PROPOSER not in self.bound:
            name, where = await find_proposer(self.net, self.names)
            self.bound[PROPOSER] = name
            found = {PROPOSER: {"node": name, **where}}
        args = tuple(self.bound.get(a, a) if isinstance(a, str) else a for a in step.args)
        quorum = [self.bound.get(q, q) for q in step.quorum]
        if EXCEPT_PROPOSER in quorum:
            quorum = [n.name for n in self.net.manifest.nodes if n.authority
                      and n.name in self.names and n.name != self.bound[PROPOSER]]
        return args, quorum, found

    async def step(self, step: Step, start: float, nursery: trio.Nursery,
                   on_step: Callable[[Step, Any], None] | None) -> None:
        args, quorum, found = await self.resolve(step)
        if step.action in ("move", "change_ip"):
            old = hostport_of(self.net.node(args[0]).p2p)
            self.left.append(old if step.action == "move" else old.rsplit(":", 1)[0])
        result = await getattr(self.net, step.action)(*args)
        at = round(trio.current_time() - start, 3)
        shown = Step(step.at_s, step.action, args, tuple(quorum))
        self.done.append({**shown.to_json(), "done_at_s": at,
                          **({"resolved": found} if found else {}),
                          **({"result": result} if result is not None else {})})
        log.info("chaos_step_done", at_s=at, action=step.action, args=list(args), result=result)
        if on_step is not None:
            on_step(shown, result)
        if quorum:
            nursery.start_soon(self._time_resumed, shown.describe(), quorum)

    async def _time_resumed(self, label: str, quorum: list[str]) -> None:
        seconds = await measure.time_to_new_height(
            self.net, quorum, wait_s=self.bounds.resume_s * WAIT_FACTOR)
        self.resumed.append((label.strip(), seconds))


async def check_after(net: Any, names: Sequence[str], bounds: inv.Bounds, record: Path,
                      ) -> tuple[inv.Finding, inv.Finding, dict[str, Any]]:
    """I1 and I2 over every node's blocks: waits up to ``bounds.drain_s`` for the readings
    accepted so far to be committed everywhere, then asks node1 which it dropped."""
    accepted = measure.accepted_ids(record)
    scan = measure.ChainScan()
    missing: list[str] = []
    unanswered: list[str] = []
    with trio.move_on_after(bounds.drain_s):
        while True:
            unanswered = await scan.update(net, names)
            missing = [i for i in accepted if any(
                c.get(i, 0) == 0 for c in scan.counts.values())]
            if not missing and not unanswered:
                break
            await trio.sleep(1.0)
    if unanswered:  # one last pass after the drain, so a slow node is still read
        unanswered = await scan.update(net, names)
    submitted_to = net.manifest.nodes[0].name
    dropped = await measure.dropped_reports(net, submitted_to, missing) if missing else {}
    i1 = inv.check_one_block_per_height(scan.hashes)
    i2 = inv.check_accepted_committed(accepted, scan.counts, dropped)
    return i1, i2, {"unanswered": unanswered,
                    "heights": {n: max(h, default=-1) for n, h in scan.hashes.items()}}


async def run_scenario(net: Any, name: str, *, seed: int, duration_s: float = DURATION_S,
                       bounds: inv.Bounds | None = None, record: Path | None = None,
                       on_plan: Callable[[list[Step]], None] | None = None,
                       on_step: Callable[[Step, Any], None] | None = None) -> dict[str, Any]:
    """Run scenario ``name`` (seeded) on the running nodes of ``net`` and check I1-I5.

    ``record``: the simulator's accepted ids (default: the localnet's, see
    :func:`procs.simulator_command`). Returns the report: ``{scenario, seed, ok,
    violations, invariants: {I1..I5: {ok, figure, bound, detail}}, steps, ...}``;
    ``skipped`` with the reason instead when the scenario needs namespaces.
    """
    bounds = bounds or inv.Bounds()
    found = scenario(name)
    head = {"scenario": name, "seed": seed, "duration_s": duration_s, "netns": net.netns}
    if found.needs_netns and not net.netns:
        return {**head, "ok": True, "skipped": found.needs_netns, "violations": []}
    running = [n for n in net.names if net.state(n) == "up"]
    if len(running) < found.min_nodes:
        others = [f"{n} {net.state(n)}" for n in net.names if n not in running]
        start = (f"; start it: iomtnode localnet up --dir {net.manifest.dir}" if not running
                 else "")
        raise LocalnetError(f"{name} needs at least {found.min_nodes} running nodes of "
                            f"{net.manifest.dir}, and {len(running)} run"
                            f" ({', '.join(others)}){start}")
    authorities = [n.name for n in net.manifest.nodes if n.authority and n.name in running]
    steps = plan(name, running, seed=seed, duration_s=duration_s, authorities=authorities)
    if on_plan is not None:
        on_plan(steps)
    log.info("chaos_started", scenario=name, seed=seed, steps=len(steps))
    run = _Run(net, running, bounds)
    converged: list[float | None] = []
    start = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:
            for step in steps:
                await trio.sleep_until(start + step.at_s)
                await run.step(step, start, nursery, on_step)
            converged.append(await measure.time_to_converge(
                net, running, wait_s=bounds.converge_s * WAIT_FACTOR))
            await trio.sleep_until(start + duration_s)
    except BaseException as raised:
        await restore(net, running)  # never leave a node stopped or cut off behind a failure
        inner = single_exception(raised)
        if isinstance(inner, LocalnetError | ApiError | NodeUnreachable):
            raise inner from None  # the step that failed, not the nursery around it
        raise
    i1, i2, seen = await check_after(net, running, bounds,
                                     record or net.manifest.dir / procs.RECORD_NAME)
    i3 = inv.check_resumed(run.resumed, bounds.resume_s)
    i4 = inv.check_converged(converged[0], bounds.converge_s)
    i5 = inv.check_resources(await measure.resources(net, running), run.left, bounds)
    findings = [i1, i2, i3, i4, i5]
    violations = [f"{f.name}: {d}" for f in findings for d in f.detail if not f.ok]
    log.info("chaos_finished", scenario=name, seed=seed, ok=not violations,
             violations=len(violations))
    return {**head, "ok": not violations, "violations": violations,
            "invariants": {f.name: f.to_json() for f in findings}, "bounds": bounds.to_json(),
            "steps": run.done, **seen}
