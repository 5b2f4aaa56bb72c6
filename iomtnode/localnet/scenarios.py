"""The chaos catalog: each scenario is a seeded plan of steps that undoes its own faults.

A plan depends only on the scenario, the node names, the number of authorities, the seed and
the duration, so the same command line disrupts the same nodes at the same moments. Two
things are only known while it runs, and are named in the plan by a placeholder: the node
that is the proposer when the step runs (``@proposer``), and the address a moved node gets.

Every fault comes at ``FAULT_AT`` of the duration and is undone by ``UNDO_AT`` (flapping
toggles in between); the rest of the duration is for the network to recover under load.
A step says which nodes form a connected quorum once it is done (``quorum``), which is what
invariant I3 (finalization resumes) is measured from.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .layout import LocalnetError

PROPOSER = "@proposer"  # a node name resolved when the step runs: the current proposer
EXCEPT_PROPOSER = "-@proposer"  # in a quorum: every authority but the resolved proposer
FAULT_AT = 0.1  # of the duration: the load is flowing and the network settled
UNDO_AT = 0.6  # of the duration: the rest is recovery under load
FLAP_MIN_S, FLAP_MAX_S = 1.0, 2.0  # a flapping split toggles after a seeded time in this range
LOSS_PERCENT = 20  # of packets dropped at random by nftables, on every node
DELAY_MS = 100  # added one way on every node's traffic by a userspace delay proxy


@dataclass(frozen=True, slots=True)
class Step:
    """At ``at_s`` seconds after the start, call ``Localnet.<action>(*args)``.

    ``quorum``: the authorities that form a connected quorum once this step is done (I3 is
    measured from here on them); empty when the step leaves no quorum connected, or when it
    is not a point to measure from (a flapping split's intermediate heals).
    """

    at_s: float
    action: str
    args: tuple[Any, ...] = ()
    quorum: tuple[str, ...] = ()

    def describe(self) -> str:
        shown = " | ".join(",".join(a) if isinstance(a, list | tuple) else str(a)
                           for a in self.args)
        return f"t+{self.at_s:6.2f}s  {self.action:<10} {shown}".rstrip()

    def to_json(self) -> dict[str, Any]:
        return {"at_s": self.at_s, "action": self.action,
                "args": [list(a) if isinstance(a, tuple | list) else a for a in self.args],
                "quorum": list(self.quorum)}


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str  # one line for --help and the docs
    build: Callable[[Plan], None]
    needs_netns: str = ""  # why it cannot run on loopback ("" = it can)
    min_nodes: int = 2


class Plan:
    """Builds a scenario's steps: the nodes, the authorities, a seeded rng, the duration."""

    def __init__(self, names: Sequence[str], authorities: Sequence[str], *, seed: int,
                 duration_s: float) -> None:
        self.names = sorted(names)
        self.authorities = [a for a in self.names if a in set(authorities)]
        self.rng = random.Random(seed)
        self.duration_s = duration_s
        self.fault_at = round(duration_s * FAULT_AT, 3)
        self.undo_at = round(duration_s * UNDO_AT, 3)
        self.steps: list[Step] = []

    def quorum_of(self, *sides: Sequence[str]) -> tuple[str, ...]:
        """The side holding a quorum of authorities (floor(2N/3) + 1), or ()."""
        need = 2 * len(self.authorities) // 3 + 1
        for side in sides:
            members = tuple(a for a in self.authorities if a in side)
            if len(members) >= need:
                return members
        return ()

    def without(self, *gone: str) -> tuple[str, ...]:
        return tuple(n for n in self.names if n not in gone)

    def add(self, at_s: float, action: str, *args: Any, quorum: Sequence[str] = ()) -> None:
        self.steps.append(Step(round(at_s, 3), action, tuple(args), tuple(quorum)))

    def pick(self) -> str:
        return self.rng.choice(self.names)

    def split(self, small: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Two seeded sides, the first with ``small`` nodes."""
        shuffled = self.rng.sample(self.names, len(self.names))
        return tuple(sorted(shuffled[:small])), tuple(sorted(shuffled[small:]))


def _stop_start(stop: str, start: str, target: str | None = None) -> Callable[[Plan], None]:
    def build(p: Plan) -> None:
        if target == PROPOSER:  # who it is is known only when the step runs
            left = p.quorum_of(p.authorities[1:])  # any one authority fewer
            name, quorum = PROPOSER, (EXCEPT_PROPOSER,) if left else ()
        else:
            name = p.pick()
            quorum = p.quorum_of(p.without(name))
        p.add(p.fault_at, stop, name, quorum=quorum)
        p.add(p.undo_at, start, name, quorum=p.authorities)
    return build


def _kill_all(p: Plan) -> None:
    p.add(p.fault_at, "kill", *p.names)  # every node in one step: no quorum, no survivor
    p.add(p.undo_at, "restart", *p.names, quorum=p.authorities)


def _rolling_restart(p: Plan) -> None:
    order = p.rng.sample(p.names, len(p.names))
    gap = (p.undo_at - p.fault_at) / len(order)
    for i, name in enumerate(order):
        p.add(p.fault_at + i * gap, "restart", name, quorum=p.authorities)


def _isolate(p: Plan) -> None:
    name = p.pick()
    p.add(p.fault_at, "isolate", name, quorum=p.quorum_of(p.without(name)))
    p.add(p.undo_at, "heal", quorum=p.authorities)


def _split(small: Callable[[int], int]) -> Callable[[Plan], None]:
    def build(p: Plan) -> None:
        left, right = p.split(small(len(p.names)))
        p.add(p.fault_at, "partition", left, right, quorum=p.quorum_of(left, right))
        p.add(p.undo_at, "heal", quorum=p.authorities)
    return build


def _flapping(p: Plan) -> None:
    left, right = p.split(len(p.names) // 2)
    at, cut = p.fault_at, True
    while at < p.undo_at:
        if cut:
            p.add(at, "partition", left, right)
        else:
            p.add(at, "heal")
        cut = not cut
        at += p.rng.uniform(FLAP_MIN_S, FLAP_MAX_S)
    p.add(max(at, p.undo_at), "heal", quorum=p.authorities)


def _network_wide(action: str, amount: int) -> Callable[[Plan], None]:
    def build(p: Plan) -> None:
        p.add(p.fault_at, action, amount, quorum=p.authorities)  # slower, still connected
        p.add(p.undo_at, "heal", quorum=p.authorities)
    return build


def _readdress(action: str) -> Callable[[Plan], None]:
    def build(p: Plan) -> None:
        p.add(p.fault_at, action, p.pick(), quorum=p.authorities)
        p.add(p.undo_at, "heal", quorum=p.authorities)  # nothing to undo; a fixed end point
    return build


NETNS_ONLY = "needs --netns (network namespaces, as root)"
CATALOG: dict[str, Scenario] = {s.name: s for s in (
    Scenario("kill", "SIGKILL one node, restart it later", _stop_start("kill", "restart")),
    Scenario("kill-proposer", "SIGKILL the node proposing the next height, restart it later",
             _stop_start("kill", "restart", PROPOSER)),
    Scenario("kill-all", "SIGKILL every node at once (a site losing power, as its processes "
             "see it), restart them all later", _kill_all),
    Scenario("pause", "SIGSTOP one node (sockets open, silent), SIGCONT it later",
             _stop_start("pause", "resume")),
    Scenario("rolling-restart", "restart every node in turn (SIGTERM, start again)",
             _rolling_restart),
    Scenario("isolate", "cut one node off from every other, heal later", _isolate),
    Scenario("split-2-2", "split the nodes into two halves (no quorum on either), heal later",
             _split(lambda n: n // 2), min_nodes=4),
    Scenario("split-3-1", "split one node from the rest (the rest keeps a quorum), heal "
             "later", _split(lambda n: 1), min_nodes=4),
    Scenario("flapping", f"a 2-2 split on and off every {FLAP_MIN_S:g}-{FLAP_MAX_S:g} s, "
             "then healed", _flapping, min_nodes=4),
    Scenario("loss", f"drop {LOSS_PERCENT}% of packets at random on every node, heal later",
             _network_wide("loss", LOSS_PERCENT), needs_netns=NETNS_ONLY),
    Scenario("delay", f"add {DELAY_MS} ms one way to every node's traffic, heal later",
             _network_wide("delay", DELAY_MS), needs_netns=NETNS_ONLY),
    Scenario("ip-change", "give one node a new IP address (its old one is gone)",
             _readdress("change_ip"), needs_netns=NETNS_ONLY),
    Scenario("move", "move one node's p2p listener to a new loopback address and port",
             _readdress("move")),
)}
SCENARIOS = tuple(CATALOG)


def scenario(name: str) -> Scenario:
    try:
        return CATALOG[name]
    except KeyError:
        raise LocalnetError(f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}"
                            ) from None


def plan(name: str, names: Sequence[str], *, seed: int, duration_s: float,
         authorities: Sequence[str] | None = None) -> list[Step]:
    """The steps of scenario ``name`` on nodes ``names`` (``authorities``: default all)."""
    found = scenario(name)
    if len(names) < found.min_nodes:
        raise LocalnetError(f"{name} needs at least {found.min_nodes} nodes")
    if duration_s <= 0:
        raise LocalnetError("duration must be positive")
    p = Plan(names, names if authorities is None else authorities, seed=seed,
             duration_s=duration_s)
    found.build(p)
    return p.steps
