"""The stored-chain benchmark (``python -m iomtnode.bench.large``), small: a real chain in
LevelDB, a node process serving it and a fresh node process syncing all of it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.timeout(120)
def test_a_small_stored_chain_is_built_served_and_synced_and_stdout_is_only_json(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "iomtnode.bench.large", "--readings", "1500",
         "--dir", str(tmp_path / "large"), "--json"],
        capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)  # logs and progress went to stderr
    assert result["readings"] == 1500 and result["txs"] > 1500  # and the admissions
    assert result["height"] >= 1 and result["bootstrap_s"] > 0
    assert result["bootstrap_readings_per_s"] > 0 and result["disk_bytes_per_reading"] > 0
    assert "fresh node at height" in done.stderr


@pytest.mark.timeout(120)
def test_no_sync_measures_the_holding_node_only(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "iomtnode.bench.large", "--readings", "600", "--no-sync",
         "--dir", str(tmp_path / "large"), "--json"],
        capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["source_rss_mb"] >= result["source_rss_start_mb"] > 0
    assert result["source_rss_anon_mb"] > 0 and result["source_rss_file_mb"] > 0
    assert "bootstrap_s" not in result and "fresh node at height" not in done.stderr
