"""`iomtnode bench` end to end: a short run of real node and load processes through the CLI,
whose JSON must hold every documented key with the right type and consistent figures. Not a
timed test: it checks values, not speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from iomtnode.localnet import Manifest
from iomtnode.localnet.procs import pid_state

pytestmark = [pytest.mark.e2e]

# the keys docs/performance.md says scripts may rely on, plus the ones this run adds
KEYS: dict[str, type | tuple[type, ...]] = {
    "nodes": int, "ceiling_readings_per_s": int, "throughput_readings_per_s": int,
    "efficiency": float, "latency_ms": dict, "offered_rate": float,
    "cpu_s_per_reading": float, "wire_bytes_per_reading_per_node": float,
    "wire_ratio": float, "rss_mb_max": float, "disk_bytes_per_reading": int,
    "bootstrap_readings_per_s": int, "latency_by_rate": list, "verify_per_s_one_core": int,
    "readings_finalized": int, "readings_found": dict, "readings_accepted": int,
    "reading_bytes": int, "bootstrap": dict, "cores": int, "mode": str, "phases": list,
    "saturation": dict, "fixed_rate_load": dict, "follower_commit_delay_ms": dict,
    "follower_gossip_delay_ms": dict, "follower_delivery_delay_ms": dict, "cost_phase": str,
    "verify_per_s_one_core_after": int, "verify_drift": float, "network": dict, "node_env": dict,
}
POINT_KEYS = {"offered_rate", "p50", "p99", "max", "achieved_rate", "kind"}


def bench(out: Path, *args: str, timeout: float = 80) -> dict[str, Any]:
    """`iomtnode bench ... --json --out OUT` as its own process; its stdout is one object."""
    proc = subprocess.run(
        [sys.executable, "-m", "iomtnode", "--log-level", "warning", "bench", *args,
         "--json", "--out", str(out)],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # raises unless stdout is exactly one JSON document
    assert isinstance(result, dict)
    assert json.loads((out / "bench.json").read_text()) == result
    manifest = Manifest.load(out / "localnet")  # kept, and nothing of it left running
    assert all(pid_state(n.proc) == "gone" for n in manifest.nodes)
    return result


def check_types(result: dict[str, Any]) -> None:
    for key, kind in KEYS.items():
        assert key in result, f"missing key {key}"
        assert isinstance(result[key], kind) and not isinstance(result[key], bool), (
            f"{key} = {result[key]!r} is not {kind}")
    for point in result["latency_by_rate"]:
        assert set(point) == POINT_KEYS
        assert point["p50"] <= point["p99"] <= point["max"]
        assert point["achieved_rate"] > 0


@pytest.mark.timeout(120)
def test_short_bench_reports_every_key_and_consistent_figures(tmp_path: Path):
    result = bench(tmp_path, "--nodes", "2", "--duration", "6", "--fixed-rate", "100",
                   "--sweep", "50", "--saturation-rate", "300")
    check_types(result)
    assert result["nodes"] == 2 and result["mode"] == "full"
    assert result["network"] == {"netns": False, "rtt_ms": 0.0}  # loopback, no delay
    assert result["node_env"]["IOMTNODE_EMPTY_BLOCK_INTERVAL_S"] == "5"
    assert "IOMTNODE_BLOCK_INTERVAL_S" not in result["node_env"]  # the nodes' default timing

    # every reading the load saw finalized is in every node's chain, and nothing else
    finalized = result["readings_finalized"]
    assert finalized == sum(p["load"]["committed"] for p in result["phases"]) > 0
    assert finalized == result["readings_accepted"]  # low rates: nothing refused or lost
    assert set(result["readings_found"]) == {"node1", "node2"}
    assert set(result["readings_found"].values()) == {finalized}

    # derived figures agree with the figures they are derived from
    assert result["efficiency"] == round(
        result["throughput_readings_per_s"] / result["ceiling_readings_per_s"], 3)
    assert result["ceiling_readings_per_s"] == round(
        result["verify_per_s_one_core"] * result["cores"] / result["nodes"])
    rates = [result[f"verify_per_s_one_core{when}"] for when in ("", "_before_saturation",
                                                                  "_after")]
    assert all(isinstance(rate, int) and rate > 0 for rate in rates)
    assert result["verify_drift"] == pytest.approx(max(rates) / min(rates), abs=0.01)
    assert result["wire_ratio"] == pytest.approx(
        result["wire_bytes_per_reading_per_node"] / result["reading_bytes"], abs=0.001)
    assert result["wire_bytes_per_reading_per_node"] > 0 and result["cpu_s_per_reading"] > 0
    assert result["rss_mb_max"] > 0 and result["disk_bytes_per_reading"] > 0

    # the latency sweep: the fixed rate, the extra rate and saturation, ascending
    points = result["latency_by_rate"]
    assert [(p["kind"], p["offered_rate"]) for p in points] == [
        ("sweep", 50.0), ("fixed", 100.0), ("saturation", 300.0)]
    fixed = points[1]
    assert result["offered_rate"] == 100.0
    assert result["latency_ms"] == {k: fixed[k] for k in ("p50", "p99", "max")}
    assert result["throughput_readings_per_s"] > 0

    # bootstrap: a third node synced the whole chain, readings and all
    boot = result["bootstrap"]
    assert result["bootstrap_readings_per_s"] == boot["readings_per_s"] > 0
    assert boot["node"] == "node3" and boot["readings_found"] == finalized
    assert 0 < boot["readings"] <= finalized
    # timed by the node from its first block asked: within the time from its spawn
    assert 0 < boot["seconds"] < boot["seconds_from_spawn"]
    assert 0 < boot["readings_per_s_from_spawn"] < boot["readings_per_s"]


@pytest.mark.timeout(90)
def test_rate_alone_runs_only_the_fixed_phase(tmp_path: Path):
    result = bench(tmp_path, "--nodes", "1", "--duration", "2", "--rate", "50")
    assert result["mode"] == "rate"
    assert [p["kind"] for p in result["phases"]] == ["fixed"]
    assert result["throughput_readings_per_s"] is None and result["efficiency"] is None
    assert result["saturation"] is None and result["offered_rate"] == 50.0
    assert result["verify_per_s_one_core_before_saturation"] is None  # no such phase
    assert [p["offered_rate"] for p in result["latency_by_rate"]] == [50.0]
    assert set(result["readings_found"].values()) == {result["readings_finalized"]}
    assert result["readings_finalized"] > 0 and result["bootstrap_readings_per_s"] > 0


@pytest.mark.timeout(120)
def test_a_bench_ended_by_sigterm_stops_its_nodes_and_exits_143(tmp_path: Path):
    """SIGTERM cancels the bench as Ctrl-C does: its nodes are stopped (they were left
    running: the default SIGTERM ends a Python process without its clean-up)."""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "iomtnode", "--log-level", "warning", "bench", "--rate", "100",
         "--duration", "60", "--json", "--out", str(tmp_path)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    listing = tmp_path / "localnet" / "localnet.json"
    deadline = time.monotonic() + 90
    while not (listing.exists() and all(n.get("pid") for n in json.loads(
            listing.read_text())["nodes"])):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-3000:]
    assert all(pid_state(n.proc) == "gone" for n in Manifest.load(tmp_path / "localnet").nodes)
