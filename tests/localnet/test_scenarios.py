"""The chaos catalog's plans and the TOML manifest, without processes."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iomtnode.localnet.cli import localnet_app
from iomtnode.localnet.layout import LocalnetError, prepare
from iomtnode.localnet.procs import RECORD_NAME, simulator_command
from iomtnode.localnet.scenarios import (
    CATALOG,
    EXCEPT_PROPOSER,
    FLAP_MAX_S,
    FLAP_MIN_S,
    PROPOSER,
    SCENARIOS,
    plan,
)
from iomtnode.localnet.suite import ChaosManifest

REPO = Path(__file__).resolve().parents[2]
NAMES = ["node1", "node2", "node3", "node4"]
ALL = tuple(NAMES)
UNDO = {"kill": "restart", "pause": "resume", "isolate": "heal", "partition": "heal",
        "loss": "heal", "delay": "heal"}


@pytest.mark.parametrize("name", SCENARIOS)
def test_plans_are_reproducible_and_undo_themselves(name):
    steps = plan(name, NAMES, seed=7, duration_s=30)
    assert steps == plan(name, NAMES, seed=7, duration_s=30)
    assert [s.at_s for s in steps] == sorted(s.at_s for s in steps)
    assert all(0 <= s.at_s < 30 for s in steps)
    for i, step in enumerate(steps):
        if step.action in UNDO:
            later = [s for s in steps[i + 1:] if s.action == UNDO[step.action]]
            assert later, f"{name}: {step.describe()} is never undone"
            assert later[0].action == "heal" or later[0].args == step.args
    assert steps[-1].quorum == ALL  # the end of every plan is a point to measure from


def test_seeds_change_plans():
    plans = {tuple(plan("kill", NAMES, seed=s, duration_s=30)) for s in range(10)}
    assert len(plans) > 1


def test_splits_cover_every_node_and_mark_a_quorum_only_where_there_is_one():
    for seed in range(5):
        half = plan("split-2-2", NAMES, seed=seed, duration_s=30)[0]
        one = plan("split-3-1", NAMES, seed=seed, duration_s=30)[0]
        for step in (half, one):
            left, right = step.args
            assert sorted(left + right) == NAMES
        assert half.quorum == () and sorted(map(len, half.args)) == [2, 2]
        assert sorted(map(len, one.args)) == [1, 3] and one.quorum == max(one.args, key=len)


def test_a_stopped_node_leaves_the_others_as_the_quorum():
    kill, restart = plan("kill", NAMES, seed=1, duration_s=30)
    assert kill.quorum == tuple(n for n in NAMES if n != kill.args[0])
    assert restart.quorum == ALL
    # with 3 authorities and one follower, losing an authority leaves no quorum (2 of 3)
    kill, _ = plan("kill", NAMES, seed=1, duration_s=30, authorities=NAMES[:3])
    assert kill.quorum == (() if kill.args[0] in NAMES[:3] else tuple(NAMES[:3]))


def test_kill_all_stops_every_node_at_once_and_restarts_them_together():
    kill, restart = plan("kill-all", NAMES, seed=1, duration_s=30)
    assert (kill.action, kill.args, kill.quorum) == ("kill", ALL, ())
    assert (restart.action, restart.args, restart.quorum) == ("restart", ALL, ALL)
    assert restart.at_s > kill.at_s


def test_kill_proposer_names_the_proposer_when_it_runs():
    kill, restart = plan("kill-proposer", NAMES, seed=1, duration_s=30)
    assert kill.args == restart.args == (PROPOSER,)
    assert kill.quorum == (EXCEPT_PROPOSER,)


def test_rolling_restart_restarts_every_node_once():
    steps = plan("rolling-restart", NAMES, seed=3, duration_s=30)
    assert sorted(s.args[0] for s in steps) == NAMES and {s.action for s in steps} == {"restart"}


def test_flapping_toggles_a_split_within_its_interval_and_ends_healed():
    steps = plan("flapping", NAMES, seed=2, duration_s=30)
    cuts = [s for s in steps if s.action == "partition"]
    assert len(cuts) >= 3 and len({s.args for s in cuts}) == 1
    gaps = [b.at_s - a.at_s for a, b in pairwise(steps[:-1])]
    assert all(FLAP_MIN_S - 0.01 <= g <= FLAP_MAX_S + 0.01 for g in gaps)
    assert steps[-1].action == "heal" and all(s.quorum == () for s in steps[:-1])


def test_only_the_real_network_faults_need_namespaces():
    needing = {n for n, s in CATALOG.items() if s.needs_netns}
    assert needing == {"loss", "delay", "ip-change"}


def test_plan_refuses_what_cannot_run():
    with pytest.raises(LocalnetError, match="unknown scenario"):
        plan("meteor", NAMES, seed=1, duration_s=10)
    with pytest.raises(LocalnetError, match="at least 4"):
        plan("split-2-2", NAMES[:3], seed=1, duration_s=10)


# ---- the manifest ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["full.toml", "ci.toml"])
def test_the_shipped_manifests_parse(name):
    found = ChaosManifest.load(REPO / "deploy" / "chaos" / name)
    assert found.nodes == 4 and found.rate >= 100 and found.scenarios
    if name == "full.toml":
        assert set(found.scenarios) == set(SCENARIOS) and found.seeds == (1, 2, 3, 4, 5)


def test_manifest_defaults_selection_and_refusals():
    found = ChaosManifest.parse({"scenarios": ["all"], "seeds": [3, 7],
                                 "bounds": {"resume_s": 4}, "durations": {"flapping": 40}})
    assert found.scenarios == SCENARIOS and found.seeds == (3, 7)
    assert found.bounds.resume_s == 4 and found.durations == {"flapping": 40.0}
    chosen = found.select(["kill"], 2, netns=True)
    assert chosen.scenarios == ("kill",) and chosen.seeds == (1, 2) and chosen.netns
    for bad, match in (({"scenario": ["kill"]}, "unknown keys"),
                       ({"scenarios": ["meteor"]}, "unknown scenario"),
                       ({"bounds": {"speed": 1}}, r"\[bounds\]"),
                       ({"seeds": []}, "at least one seed")):
        with pytest.raises(LocalnetError, match=match):
            ChaosManifest.parse(bad)


@pytest.mark.parametrize(("bad", "match"), [
    ({"load": 5}, "load must be a table"),  # was AttributeError, a traceback from the CLI
    ({"network": [1]}, "network must be a table"),
    ({"durations": 5}, "durations must be a table"),
    ({"scenarios": "kill"}, "scenarios must be a list"),  # was "unknown scenario 'k'"
    ({"seeds": 2.5}, "seeds must be a count or a list"),
    ({"seeds": True}, "seeds must be a count or a list"),
    ({"network": {"netns": "false"}}, r"\[network\] netns must be true or false"),  # was True
    ({"network": {"nodes": 500}}, r"\[network\] nodes must be at least 1 and at most 64"),
    ({"load": {"rate": -5}}, r"\[load\] rate must be above 0"),  # was a run without load
    ({"load": {"devices": -1}}, r"\[load\] devices must be at least 0"),
    ({"durations": {"kill": -5}}, r"\[durations\] kill must be above 0"),
    ({"duration_s": float("nan")}, "duration_s must be a finite number"),
    ({"warmup_height": -4}, "warmup_height must be at least 0"),
    ({"bounds": {"resume_s": "abc"}}, r"\[bounds\] resume_s must be a number"),  # crashed I3
    ({"bounds": {"resume_s": -1}}, r"\[bounds\] resume_s must be above 0"),
    ({"bounds": {"max_fds": 1.5}}, r"\[bounds\] max_fds must be a whole number"),
    ({"env": {"IOMTNODE_X": {"a": 1}}}, r"\[env\] IOMTNODE_X must be a string or a number"),
    # misspelt keys of a table ran the defaults and said nothing
    ({"load": {"rates": 500}}, r"\[load\] has unknown keys \['rates'\]"),
    ({"network": {"node": 7}}, r"\[network\] has unknown keys \['node'\]"),
    ({"bounds": {"resume": 3}}, r"manifest: \[bounds\] has unknown keys \['resume'\]"),
    # found only after a localnet was started, and reported as a violation (exit 1)
    ({"scenarios": ["split-2-2"], "network": {"nodes": 3}},
     r"split-2-2 needs at least 4 nodes, and \[network\] nodes is 3"),
])
def test_a_manifest_value_of_the_wrong_type_or_range_is_refused_naming_its_key(bad, match):
    with pytest.raises(LocalnetError, match=match):
        ChaosManifest.parse(bad)


def test_a_manifest_of_the_wrong_shape_is_a_precise_error_from_the_command(tmp_path):
    manifest = tmp_path / "bad.toml"
    manifest.write_text("load = 5\n")
    result = CliRunner().invoke(localnet_app, ["chaos", "--manifest", str(manifest),
                                               "--dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "load must be a table" in result.output
    assert isinstance(result.exception, SystemExit)  # an exit with a message, no traceback


def test_a_manifest_that_cannot_run_is_a_usage_error_before_any_localnet(tmp_path):
    # it exited 1, as for a violated invariant, after starting a localnet of 1 node
    manifest = tmp_path / "one.toml"
    manifest.write_text('scenarios = ["all"]\n[network]\nnodes = 3\n')
    result = CliRunner().invoke(localnet_app, ["chaos", "--manifest", str(manifest),
                                               "--dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "needs at least 4 nodes" in result.output
    assert not (tmp_path / "runs").exists()
    manifest.write_text('scenarios = ["kill"]\n[network]\nnodes = 1\n')
    result = CliRunner().invoke(localnet_app, ["chaos", "--manifest", str(manifest),
                                               "--dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "kill needs at least 2 nodes" in result.output
    assert not (tmp_path / "runs").exists()
    result = CliRunner().invoke(localnet_app, ["chaos", "--manifest", str(tmp_path / "none"),
                                               "--dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "cannot read the chaos manifest" in result.output


# ---- the command -------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "match"), [
    (["--scenario", "kill", "--netns"], "--seeds and --netns choose how a --manifest runs"),
    (["--scenario", "kill", "--seeds", "3"], "--seeds and --netns choose how a --manifest"),
    (["--manifest", str(REPO / "deploy" / "chaos" / "ci.toml"), "--seed", "7"],
     "--seed and --duration apply to the running localnet"),
    (["--manifest", str(REPO / "deploy" / "chaos" / "ci.toml"), "--duration", "5"],
     "--seed and --duration apply to the running localnet"),
])
def test_an_option_of_the_other_mode_is_refused_not_ignored(tmp_path, args, match):
    # --netns on a running loopback localnet used to be ignored (its loss, delay and
    # ip-change then "skipped"), and --seed 7 with a manifest ran seed 1
    result = CliRunner().invoke(localnet_app, ["chaos", "--dir", str(tmp_path), *args])
    assert result.exit_code == 2 and match in result.output
    assert not (tmp_path / "reports.jsonl").exists()


def test_chaos_command_reports_a_namespace_scenario_skipped_on_loopback(tmp_path):
    result = CliRunner().invoke(localnet_app, [
        "chaos", "--manifest", str(REPO / "deploy" / "chaos" / "ci.toml"), "--scenario", "loss",
        "--seeds", "2", "--dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] and [(r["scenario"], r["seed"]) for r in doc["runs"]] == [
        ("loss", 1), ("loss", 2)]
    assert all("needs --netns" in r["skipped"] for r in doc["runs"])


def test_chaos_command_needs_a_scenario_or_a_manifest(tmp_path):
    result = CliRunner().invoke(localnet_app, ["chaos", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "name a --scenario" in result.output  # usage: 2
    result = CliRunner().invoke(localnet_app, ["chaos", "--scenario", "meteor",
                                               "--manifest", str(REPO / "deploy/chaos/ci.toml")])
    assert result.exit_code == 2 and "unknown scenario" in result.output
    result = CliRunner().invoke(localnet_app, ["chaos", "--dir", str(tmp_path),
                                               "--scenario", "meteor"])
    assert result.exit_code == 2 and "unknown scenario 'meteor'" in result.output


def test_the_localnet_simulator_records_into_the_localnet_directory(tmp_path):
    manifest = prepare(tmp_path / "net", 2, base_port=0)
    command = simulator_command(manifest.nodes[0], 4, 100.0)
    assert command[command.index("--record") + 1] == str(manifest.dir / RECORD_NAME)
    assert command[command.index("--api") + 1] == manifest.nodes[0].api
    other = simulator_command(manifest.nodes[0], 4, 100.0, record=tmp_path / "x")
    assert other[other.index("--record") + 1] == str(tmp_path / "x")
