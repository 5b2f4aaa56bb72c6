"""A chaos suite: a TOML manifest of scenarios and seeds, each run on a fresh localnet.

::

    scenarios = ["kill", "split-2-2"]   # names from the catalog, or ["all"]
    seeds = 5                           # seeds 1..5 (or a list: [3, 7])
    duration_s = 30                     # per run; [durations] sets one scenario's own

    [network]
    nodes = 4
    netns = false                       # `--netns` sets it too

    [load]
    devices = 20
    rate = 100                          # readings/s in total, into node1

    [bounds]                            # see invariants.Bounds
    resume_s = 15
    converge_s = 30

Each (scenario, seed) gets its own localnet in ``DIR/<scenario>-s<seed>`` (made anew; kept
afterwards, with every node's log and the simulator's record), started with the load,
run to ``warmup_height``, then the scenario and its checks (:func:`chaosrun.run_scenario`).
A run that cannot be carried out (a node that never reached the warm-up height, a step a
node refused, a node that stopped answering) is reported as failed with the error, and the
suite goes on with the next run: one bad run no longer ends an hour's suite with nothing
for the runs after it.
"""

from __future__ import annotations

import math
import shutil
import tomllib
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import structlog

from ..client import ApiError
from ..service import single_exception
from .chaosrun import DURATION_S, run_scenario
from .invariants import Bounds
from .layout import MAX_NODES, LocalnetError
from .rpc import NodeUnreachable
from .scenarios import SCENARIOS, scenario

log = structlog.get_logger(__name__)

WARMUP_HEIGHT = 3  # the load flows and every node follows before the first fault
WARMUP_TIMEOUT_S = 90.0
KNOWN = {"scenarios", "seeds", "duration_s", "warmup_height", "durations", "network", "load",
         "bounds", "env"}
KNOWN_NETWORK = {"nodes", "netns"}
KNOWN_LOAD = {"devices", "rate"}


@dataclass(frozen=True, slots=True)
class ChaosManifest:
    """A parsed chaos manifest (see the module docstring for the TOML)."""

    scenarios: tuple[str, ...]
    seeds: tuple[int, ...]
    duration_s: float = DURATION_S
    durations: dict[str, float] = field(default_factory=dict)
    nodes: int = 4
    netns: bool = False
    devices: int = 20
    rate: float = 100.0
    warmup_height: int = WARMUP_HEIGHT
    bounds: Bounds = field(default_factory=Bounds)
    env: dict[str, str] = field(default_factory=dict)  # IOMTNODE_* settings for every node

    @classmethod
    def load(cls, path: Path) -> ChaosManifest:
        try:
            doc = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise LocalnetError(f"cannot read the chaos manifest {path}: {exc}") from None
        return cls.parse(doc, where=str(path))

    @classmethod
    def parse(cls, doc: dict[str, Any], *, where: str = "manifest") -> ChaosManifest:
        unknown = set(doc) - KNOWN
        if unknown:
            raise LocalnetError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(KNOWN)}")
        names = doc.get("scenarios", ["all"])
        if not isinstance(names, list) or not names:
            raise LocalnetError(f"{where}: scenarios must be a list of names, not {names!r}")
        names = SCENARIOS if names == ["all"] else tuple(names)
        for name in names:
            scenario(name)
        seeds = doc.get("seeds", 1)
        if isinstance(seeds, list) and all(_is_int(s) for s in seeds):
            seeds = tuple(seeds)
        elif _is_int(seeds):
            seeds = tuple(range(1, seeds + 1))
        else:
            raise LocalnetError(f"{where}: seeds must be a count or a list of whole numbers, "
                                f"not {seeds!r}")
        durations = {str(k): _number(v, f"[durations] {k}", where)
                     for k, v in _table(doc, "durations", where).items()}
        for name in durations:
            scenario(name)
        network = _table(doc, "network", where, known=KNOWN_NETWORK)
        load = _table(doc, "load", where, known=KNOWN_LOAD)
        bound_fields = {f.name: f for f in fields(Bounds)}
        bounds = _table(doc, "bounds", where, known=set(bound_fields))
        netns = network.get("netns", False)
        if not isinstance(netns, bool):
            raise LocalnetError(f"{where}: [network] netns must be true or false, not {netns!r}")
        env = _table(doc, "env", where)
        for key, value in env.items():
            if isinstance(value, dict | list):
                raise LocalnetError(f"{where}: [env] {key} must be a string or a number")
        found = cls(
            scenarios=names, seeds=seeds,
            duration_s=_number(doc.get("duration_s", DURATION_S), "duration_s", where),
            durations=durations,
            nodes=int(_number(network.get("nodes", 4), "[network] nodes", where,
                              whole=True, low=1, high=MAX_NODES)),
            netns=netns,
            devices=int(_number(load.get("devices", 20), "[load] devices", where,
                                whole=True, low=0)),
            rate=_number(load.get("rate", 100.0), "[load] rate", where),
            warmup_height=int(_number(doc.get("warmup_height", WARMUP_HEIGHT),
                                      "warmup_height", where, whole=True, low=0)),
            bounds=Bounds(**{k: _number(v, f"[bounds] {k}", where,
                                        whole=bound_fields[k].type == "int")
                             for k, v in bounds.items()}),
            env={str(k): str(v) for k, v in env.items()})
        if not found.seeds:
            raise LocalnetError(f"{where}: needs at least one seed")
        found.check_nodes(where)
        return found

    def check_nodes(self, where: str = "manifest") -> None:
        """Refuse scenarios that cannot run on :attr:`nodes` nodes, before any localnet is
        made (a run found it out only after starting one, and exited as for a violation)."""
        for name in self.scenarios:
            needed = scenario(name).min_nodes
            if self.nodes < needed:
                raise LocalnetError(f"{where}: {name} needs at least {needed} nodes, and "
                                    f"[network] nodes is {self.nodes}")

    def select(self, scenarios: Sequence[str] = (), seeds: int | None = None,
               netns: bool = False) -> ChaosManifest:
        """This manifest with the command line's choices applied."""
        for name in scenarios:
            scenario(name)
        chosen = ChaosManifest(
            scenarios=tuple(scenarios) or self.scenarios,
            seeds=tuple(range(1, seeds + 1)) if seeds else self.seeds,
            duration_s=self.duration_s, durations=self.durations, nodes=self.nodes,
            netns=self.netns or netns, devices=self.devices, rate=self.rate,
            warmup_height=self.warmup_height, bounds=self.bounds, env=self.env)
        chosen.check_nodes()
        return chosen


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _table(doc: dict[str, Any], key: str, where: str, *, known: set[str] | None = None
           ) -> dict[str, Any]:
    """The table ``doc[key]`` (empty if absent); with ``known``, a key it does not know is
    refused (a misspelt ``rates = 500`` would run the default load and say nothing)."""
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise LocalnetError(f"{where}: {key} must be a table ([{key}]), not {value!r}")
    unknown = set(value) - known if known is not None else set()
    if unknown:
        raise LocalnetError(f"{where}: [{key}] has unknown keys {sorted(unknown)}; known: "
                            f"{sorted(known or ())}")
    return value


def _number(value: Any, key: str, where: str, *, whole: bool = False, low: float | None = None,
            high: float | None = None) -> Any:
    """``value`` if it is a finite number in range (default: above 0), else LocalnetError
    naming ``key``."""
    if not (_is_int(value) or (not whole and isinstance(value, float))):
        kind = "a whole number" if whole else "a number"
        raise LocalnetError(f"{where}: {key} must be {kind}, not {value!r}")
    if not math.isfinite(value):
        raise LocalnetError(f"{where}: {key} must be a finite number, not {value!r}")
    if (value <= 0 if low is None else value < low) or (high is not None and value > high):
        wanted = "above 0" if low is None else f"at least {low}"
        wanted += f" and at most {high}" if high is not None else ""
        raise LocalnetError(f"{where}: {key} must be {wanted}, not {value!r}")
    return float(value) if not whole else value


StartNet = Callable[..., AbstractAsyncContextManager[Any]]


async def run_suite(manifest: ChaosManifest, root: Path, *, start: StartNet,
                    on_report: Callable[[dict[str, Any]], None] | None = None
                    ) -> list[dict[str, Any]]:
    """Run every (scenario, seed) of ``manifest``, each on a fresh localnet under ``root``
    made by ``start`` (``Localnet.start``); returns the reports, each also passed to
    ``on_report`` as soon as it is made."""
    reports: list[dict[str, Any]] = []

    def done(report: dict[str, Any]) -> None:
        reports.append(report)
        if on_report is not None:
            on_report(report)

    for name in manifest.scenarios:
        needs = scenario(name).needs_netns
        for seed in manifest.seeds:
            duration = manifest.durations.get(name, manifest.duration_s)
            if needs and not manifest.netns:
                done({"scenario": name, "seed": seed, "duration_s": duration,
                      "netns": False, "ok": True, "skipped": needs, "violations": []})
                continue
            path = root / f"{name}-s{seed}"
            if path.exists():
                shutil.rmtree(path)
            extra = {"netns": True} if manifest.netns else {}
            log.info("chaos_run_started", scenario=name, seed=seed, dir=str(path))
            try:
                async with start(manifest.nodes, path=path, devices=manifest.devices,
                                 rate=manifest.rate, base_port=0, env=manifest.env,
                                 **extra) as net:
                    await net.wait_for_height(manifest.warmup_height,
                                              timeout_s=WARMUP_TIMEOUT_S)
                    report = await run_scenario(net, name, seed=seed, duration_s=duration,
                                                bounds=manifest.bounds)
            except Exception as raised:  # module doc; anything else is re-raised
                exc = single_exception(raised)  # a node that failed to start: in a group
                if not isinstance(exc, LocalnetError | NodeUnreachable | ApiError):
                    raise
                log.warning("chaos_run_failed", scenario=name, seed=seed, error=str(exc))
                report = {"scenario": name, "seed": seed, "duration_s": duration,
                          "netns": manifest.netns, "ok": False, "error": str(exc),
                          "violations": [f"the run failed: {exc}"]}
            done({**report, "dir": str(path)})
    return reports
