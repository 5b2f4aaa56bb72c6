"""The CI chaos subset (deploy/chaos/ci.toml) on a real 4-node localnet under load: every
scenario that can run here holds I1-I5; the ones needing namespaces run as root only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from iomtnode.localnet import Localnet
from iomtnode.localnet.suite import ChaosManifest, run_suite

pytestmark = [pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[2]
CI = REPO / "deploy" / "chaos" / "ci.toml"


NETNS = pytest.param(True, id="netns", marks=[
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")])


LOOPBACK = pytest.param(False, id="loopback", marks=[  # the same scenarios, fewer of them
    pytest.mark.skipif(os.geteuid() == 0, reason="as root the netns case runs the subset")])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("netns", [LOOPBACK, NETNS])
async def test_ci_chaos_subset_holds_every_invariant(tmp_path: Path, netns: bool):
    manifest = ChaosManifest.load(CI).select(netns=netns)
    reports = await run_suite(manifest, tmp_path, start=Localnet.start)
    (tmp_path / "reports.json").write_text(json.dumps(reports, indent=1))
    ran = [r for r in reports if "skipped" not in r]
    assert ran, "no scenario ran"
    bad = {f"{r['scenario']}/{r['seed']}": r["violations"] for r in reports if not r["ok"]}
    assert not bad, json.dumps(bad, indent=1)


SHORT = """
scenarios = ["kill", "loss"]
seeds = 1
duration_s = 6
warmup_height = 2
[load]
devices = 4
rate = 50
"""


@pytest.mark.timeout(300)
def test_chaos_command_runs_a_manifest_and_prints_json(tmp_path: Path):
    manifest = tmp_path / "short.toml"
    manifest.write_text(SHORT)
    proc = subprocess.run(
        [sys.executable, "-m", "iomtnode", "localnet", "chaos", "--manifest", str(manifest),
         "--dir", str(tmp_path / "runs"), "--json"],
        capture_output=True, text=True, timeout=280, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    kill, loss = doc["runs"]
    assert set(kill["invariants"]) == {"I1", "I2", "I3", "I4", "I5"}
    assert kill["invariants"]["I2"]["figure"]["accepted"] > 0
    assert (tmp_path / "runs" / "kill-s1" / "accepted.hex").exists()
    assert "needs --netns" in loss["skipped"]
    assert doc["ok"] == (proc.returncode == 0) == kill["ok"]
    kept = (tmp_path / "runs" / "reports.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in kept] == doc["runs"]  # each run as it ended


@pytest.mark.timeout(120)
def test_a_chaos_suite_ended_by_sigterm_stops_everything_it_started(tmp_path: Path):
    """SIGTERM (a CI job cancelled, `kill PID`) cancels the suite like Ctrl-C: its localnet's
    nodes and simulator are stopped and it exits 143 (the default action ended the process
    at once and left the simulator streaming and, with --netns, the namespaces behind)."""
    import signal
    import time

    manifest = tmp_path / "short.toml"
    manifest.write_text(SHORT.replace('["kill", "loss"]', '["kill"]').replace(
        "duration_s = 6", "duration_s = 60"))
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "iomtnode", "localnet", "chaos", "--manifest", str(manifest),
         "--dir", str(runs), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    listing = runs / "kill-s1" / "localnet.json"
    deadline = time.monotonic() + 90
    while not (listing.exists() and json.loads(listing.read_text()).get("simulator")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.2)
    started = json.loads(listing.read_text())
    pids = [n["pid"] for n in started["nodes"]] + [started["simulator"]["pid"]]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-3000:]
    assert "terminated by SIGTERM" in err
    for pid in pids:  # every node and the simulator are gone (not zombies of ours: reaped)
        assert not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(
            f"/proc/{pid}/status").read_text(), pid
