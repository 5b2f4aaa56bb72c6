"""The chaos runner against a fake localnet (no processes, virtual time): it runs the plan,
resolves the proposer, times recovery and reports each invariant with its figure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from iomtnode.client import ApiError
from iomtnode.localnet import measure
from iomtnode.localnet.chaosrun import run_scenario
from iomtnode.localnet.cli import describe_run
from iomtnode.localnet.invariants import Bounds
from iomtnode.localnet.layout import LocalnetError
from iomtnode.localnet.rpc import NodeUnreachable
from iomtnode.localnet.suite import ChaosManifest, run_suite

NAMES = ["node1", "node2", "node3", "node4"]
IDS = [f"{i:064x}" for i in range(1, 9)]
BLOCKS_PER_S = 4


class FakeNet:
    """Four nodes whose chain grows at BLOCKS_PER_S while a quorum (3) is connected; a
    node that is stopped or cut off from the quorum stays at its height until it is back."""

    netns = False

    def __init__(self, tmp: Path, *, lose: str | None = None,
                 dropped: dict[str, str] | None = None, stale: bool = False,
                 fail_restarts: int = 0) -> None:
        self.names = list(NAMES)
        self.manifest = SimpleNamespace(dir=tmp, nodes=[SimpleNamespace(
            name=n, node_id=f"{i + 1:064x}", authority=True,
            api=f"ws://127.0.0.1:{9001 + i}/api/v1", p2p=f"ws://127.0.0.1:{7001 + i}/p2p/v1")
            for i, n in enumerate(NAMES)])
        self.states = dict.fromkeys(NAMES, "up")
        self.frozen: dict[str, int] = {}  # node -> the height it is stuck at
        self.t0 = trio.current_time()
        self.stalled_s = 0.0
        self.stall_from: float | None = None
        self.lose, self.dropped, self.stale = lose, dropped or {}, stale
        self.fail_restarts = fail_restarts
        self.left: list[str] = []
        self.round = 0  # the consensus round status reports (0: it does not say)
        self.answered: list[int] = []  # the heights status answered, in order
        self.actions: list[tuple[str, tuple[Any, ...]]] = []
        (tmp / "accepted.hex").write_text("".join(f"{i}\n" for i in IDS) + "abc")  # torn tail

    # the chain
    def chain(self) -> int:
        stalled = self.stalled_s + (0 if self.stall_from is None
                                    else trio.current_time() - self.stall_from)
        return int((trio.current_time() - self.t0 - stalled) * BLOCKS_PER_S)

    def height(self, name: str) -> int:
        return self.frozen.get(name, self.chain())

    def node(self, name: str) -> Any:
        return next(n for n in self.manifest.nodes if n.name == name)

    def state(self, name: str) -> str:
        return self.states[name]

    async def status(self, name: str, *, timeout_s: float = 5.0) -> dict[str, Any]:
        if self.states[name] != "up":
            raise NodeUnreachable(f"{name} is {self.states[name]}")
        self.answered.append(self.height(name))
        return {"height": self.height(name), **({"round": self.round} if self.round else {}),
                "authorities": [n.node_id for n in self.manifest.nodes]}

    async def call(self, name: str, method: str, *, timeout_s: float = 5.0,
                   **params: Any) -> Any:
        assert method == "get_tx_status" and name == "node1"
        if not self.dropped:
            raise ApiError(-32601, "method not found: get_tx_status")
        return [{"id": i, "state": "dropped", "reason": self.dropped[i]} if i in self.dropped
                else {"id": i, "state": "unknown"} for i in params["ids"]]

    async def resources(self, name: str) -> dict[str, Any]:
        remote = [n.p2p.split("//")[1].split("/")[0] for n in self.manifest.nodes
                  if n.name != name]
        return {"pid": 1, "fds": 30, "rss_bytes": 80 * 2**20, "peers": 3,
                "remote_addresses": remote + (self.left if self.stale else [])}

    # the faults
    def _stop(self, name: str, state: str) -> None:
        self.actions.append((state, (name,)))
        self.frozen[name] = self.height(name)
        self.states[name] = state

    def _start(self, name: str) -> None:
        self.frozen.pop(name, None)
        self.states[name] = "up"

    async def kill(self, name: str, *more: str) -> None:
        for each in (name, *more):
            self._stop(each, "down")

    async def pause(self, name: str) -> None:
        self._stop(name, "paused")

    async def restart(self, name: str, *more: str) -> None:
        self.actions.append(("restart", (name, *more)))
        if self.fail_restarts:
            self.fail_restarts -= 1
            raise LocalnetError(f"{name} exited while starting")
        for each in (name, *more):
            self._start(each)

    async def resume(self, name: str) -> None:
        self._start(name)

    async def partition(self, *groups: tuple[str, ...]) -> None:
        self.actions.append(("partition", groups))
        quorum = [g for g in groups if len(g) >= 3]
        for group in groups:
            if group not in quorum:
                self.frozen.update({n: self.height(n) for n in group})
        if not quorum and self.stall_from is None:
            self.frozen.update({n: self.height(n) for n in NAMES})
            self.stall_from = trio.current_time()

    async def isolate(self, name: str) -> None:
        await self.partition((name,), tuple(n for n in NAMES if n != name))

    async def heal(self) -> None:
        self.actions.append(("heal", ()))
        if self.stall_from is not None:
            self.stalled_s += trio.current_time() - self.stall_from
            self.stall_from = None
        self.frozen = {n: h for n, h in self.frozen.items() if self.states[n] != "up"}

    async def wait_for_height(self, height: int, *, timeout_s: float) -> None:
        await trio.sleep(height / BLOCKS_PER_S)  # the fake chain's own schedule

    async def delay(self, ms: int, names: list[str] | None = None) -> None:
        self.actions.append(("delay", (ms,)))

    async def move(self, name: str) -> str:
        self.left.append(self.node(name).p2p.split("//")[1].split("/")[0])
        self.node(name).p2p = "ws://127.0.0.9:7100/p2p/v1"
        return "127.0.0.9:7100"


@pytest.fixture
def fake_blocks(monkeypatch):
    """Blocks of the fake: every accepted id in block 1, except the one a node lost."""
    nets: list[FakeNet] = []

    async def read_blocks(net: FakeNet, name: str, heights: list[int]) -> list[dict]:
        ids = [i for i in IDS if not (name == "node4" and i == net.lose)]
        return [{"hash": f"h{h}", "txs": [{"id": i} for i in ids] if h == 1 else []}
                for h in heights]

    monkeypatch.setattr(measure, "read_blocks", read_blocks)
    return nets


async def test_a_kill_run_reports_every_invariant_held_with_figures(tmp_path, autojump_clock,
                                                                    fake_blocks):
    net = FakeNet(tmp_path)
    report = await run_scenario(net, "kill", seed=1, duration_s=20)
    assert report["ok"], report["violations"]
    inv = report["invariants"]
    assert set(inv) == {"I1", "I2", "I3", "I4", "I5"} and all(f["ok"] for f in inv.values())
    assert inv["I2"]["figure"]["accepted"] == len(IDS)  # the torn last line is not an id
    assert inv["I2"]["figure"]["committed_on_every_node"] == len(IDS)
    assert inv["I3"]["figure"]["measured"] == 2 and 0 < inv["I3"]["figure"]["worst_s"] < 1
    assert inv["I4"]["figure"] is not None and inv["I1"]["figure"]["forks"] == 0
    killed = [a for a in net.actions if a[0] == "down"]
    assert len(killed) == 1 and ("restart", killed[0][1]) in net.actions
    assert [s["action"] for s in report["steps"]] == ["kill", "restart"]


async def test_kill_all_kills_every_node_in_one_step_and_times_recovery_from_the_restart(
        tmp_path, autojump_clock, fake_blocks):
    net = FakeNet(tmp_path)
    report = await run_scenario(net, "kill-all", seed=1, duration_s=20)
    assert report["ok"], report["violations"]
    kill, restart = report["steps"]
    assert kill["action"] == "kill" and kill["args"] == NAMES and kill["quorum"] == []
    assert restart["action"] == "restart" and restart["args"] == NAMES
    assert restart["quorum"] == NAMES
    assert [a for a in net.actions if a[0] == "down"] == [("down", (n,)) for n in NAMES]
    assert report["invariants"]["I3"]["figure"]["measured"] == 1  # from the restart only


@pytest.mark.parametrize("round_", [0, 1])
async def test_kill_proposer_kills_the_node_status_names(tmp_path, autojump_clock,
                                                         fake_blocks, round_):
    net = FakeNet(tmp_path)
    net.round = round_
    report = await run_scenario(net, "kill-proposer", seed=1, duration_s=20)
    kill, restart = report["steps"]
    found = kill["resolved"]["@proposer"]
    assert found["round"] == round_ and "resolved" not in restart
    assert found["height"] == net.answered[0] + 1  # the first status asked: the next height
    expected = NAMES[(found["height"] + round_) % 4]  # authorities[(height + round) mod N]
    assert found["node"] == expected and net.actions[0] == ("down", (expected,))
    assert kill["args"] == restart["args"] == [expected]
    assert kill["quorum"] == [n for n in NAMES if n != expected]
    assert report["ok"], report["violations"]


async def test_a_split_without_a_quorum_is_timed_from_its_heal(tmp_path, autojump_clock,
                                                               fake_blocks):
    report = await run_scenario(FakeNet(tmp_path), "split-2-2", seed=1, duration_s=20)
    assert report["ok"] and report["invariants"]["I3"]["figure"]["measured"] == 1


async def test_a_stall_longer_than_the_bound_fails_i3(tmp_path, autojump_clock, fake_blocks):
    net = FakeNet(tmp_path)

    async def stuck() -> None:  # the heal leaves the chain stalled
        net.actions.append(("heal", ()))

    net.heal = stuck
    report = await run_scenario(net, "split-2-2", seed=1, duration_s=20,
                                bounds=Bounds(resume_s=2, converge_s=2, drain_s=2))
    assert not report["ok"] and not report["invariants"]["I3"]["ok"]
    assert any(v.startswith("I3: after") for v in report["violations"])


async def test_a_lost_reading_fails_i2_unless_its_client_was_told(tmp_path, autojump_clock,
                                                                  fake_blocks):
    lost = await run_scenario(FakeNet(tmp_path, lose=IDS[3]), "pause", seed=2, duration_s=20,
                              bounds=Bounds(drain_s=5))
    assert not lost["ok"] and lost["invariants"]["I2"]["figure"]["missing"]["node4"] == 1
    told = await run_scenario(FakeNet(tmp_path, lose=IDS[3], dropped={IDS[3]: "stale"}),
                              "pause", seed=2, duration_s=20, bounds=Bounds(drain_s=5))
    assert told["ok"], told["violations"]
    assert told["invariants"]["I2"]["figure"]["dropped_reasons"] == {"stale": 1}


async def test_a_connection_to_a_moved_nodes_old_address_fails_i5(tmp_path, autojump_clock,
                                                                  fake_blocks):
    clean = await run_scenario(FakeNet(tmp_path), "move", seed=1, duration_s=20)
    assert clean["ok"] and clean["invariants"]["I5"]["figure"]["left_addresses"]
    stale = await run_scenario(FakeNet(tmp_path, stale=True), "move", seed=1, duration_s=20)
    assert not stale["ok"] and "an address its peer has left" in stale["violations"][0]


async def test_scenarios_needing_namespaces_are_skipped_on_loopback(tmp_path, autojump_clock):
    net = FakeNet(tmp_path)
    for name in ("loss", "delay", "ip-change"):
        report = await run_scenario(net, name, seed=1, duration_s=20)
        assert report["ok"] and "needs --netns" in report["skipped"]
    assert net.actions == []


async def test_a_failed_step_restores_every_node_before_raising(tmp_path, autojump_clock,
                                                                fake_blocks):
    net = FakeNet(tmp_path, fail_restarts=1)
    with pytest.raises(LocalnetError, match="exited while starting"):
        await run_scenario(net, "kill", seed=1, duration_s=20)
    assert set(net.states.values()) == {"up"} and net.actions[-1] == ("heal", ())


async def test_a_scenario_on_a_stopped_localnet_says_it_is_stopped(tmp_path, autojump_clock):
    net = FakeNet(tmp_path)
    net.states = dict.fromkeys(NAMES, "down")  # `localnet down` was run, localnet.json stays
    with pytest.raises(LocalnetError, match=r"kill needs at least 2 running nodes of .*, and 0 "
                       r"run \(node1 down, .*node4 down\); start it: iomtnode localnet up"):
        await run_scenario(net, "kill", seed=1, duration_s=20)
    net.states.update(node1="up", node2="paused")
    with pytest.raises(LocalnetError, match=r"needs at least 4 running .*1 run \(node2 paused"):
        await run_scenario(net, "split-2-2", seed=1, duration_s=20)
    assert net.actions == []


def fresh(path: Path) -> bool:
    new = not path.exists()
    path.mkdir(parents=True)
    return new


async def test_a_suite_runs_each_scenario_and_seed_on_a_fresh_net(tmp_path, autojump_clock,
                                                                  fake_blocks):
    started: list[dict[str, Any]] = []

    @asynccontextmanager
    async def start(nodes: int, *, path: Path, **options: Any) -> AsyncIterator[FakeNet]:
        started.append({"nodes": nodes, "path": path, "fresh": fresh(path), **options})
        net = FakeNet(path)
        net.netns = options.get("netns", False)
        yield net

    (tmp_path / "kill-s2").mkdir()
    (tmp_path / "kill-s2" / "old").touch()
    manifest = ChaosManifest.parse({"scenarios": ["kill", "delay"], "seeds": [1, 2],
                                    "duration_s": 10, "load": {"devices": 3, "rate": 30}})
    seen: list[dict[str, Any]] = []
    reports = await run_suite(manifest, tmp_path, start=start, on_report=seen.append)
    assert reports == seen
    assert [(r["scenario"], r["seed"], "skipped" in r) for r in reports] == [
        ("kill", 1, False), ("kill", 2, False), ("delay", 1, True), ("delay", 2, True)]
    assert [s["path"].name for s in started] == ["kill-s1", "kill-s2"]
    assert all(s["fresh"] for s in started)  # a run's directory is made anew
    assert started[0]["devices"] == 3 and started[0]["rate"] == 30 and "netns" not in started[0]
    assert all(r["ok"] for r in reports)

    started.clear()
    netns = await run_suite(manifest.select(["delay"], 1, netns=True), tmp_path, start=start)
    assert started[0]["netns"] is True and "skipped" not in netns[0]


async def test_a_run_that_fails_is_reported_and_the_suite_goes_on(tmp_path, autojump_clock,
                                                                  fake_blocks):
    """One run's error (here the warm-up height never reached) ended the whole suite (an
    hour's catalog) with an error and no report for the runs after it."""

    class NeverWarm(FakeNet):
        async def wait_for_height(self, height: int, *, timeout_s: float) -> None:
            raise LocalnetError(f"height {height} not reached within {timeout_s} s: node2=1")

    @asynccontextmanager
    async def start(nodes: int, *, path: Path, **options: Any) -> AsyncIterator[FakeNet]:
        fresh(path)
        if path.name == "kill-s3":  # a node that did not start, from the start's nursery
            raise ExceptionGroup("nursery", [LocalnetError("node3 exited at once")])
        yield (NeverWarm if path.name == "kill-s1" else FakeNet)(path)

    manifest = ChaosManifest.parse({"scenarios": ["kill"], "seeds": 3, "duration_s": 10})
    reports = await run_suite(manifest, tmp_path, start=start)
    assert [(r["seed"], r["ok"]) for r in reports] == [(1, False), (2, True), (3, False)]
    assert reports[2]["error"] == "node3 exited at once"
    assert reports[0]["violations"] == [
        "the run failed: height 3 not reached within 90.0 s: node2=1"]
    assert "node2=1" in describe_run(reports[0]) and "FAILED" in describe_run(reports[0])
