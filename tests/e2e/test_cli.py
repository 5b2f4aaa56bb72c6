"""The real CLI as OS processes: init, run, simulate, block, receipt, verify, shutdown, a
device's admission."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from iomtnode import __version__
from iomtnode.client import open_client
from iomtnode.core.payload import profile_hash
from tests.e2e.procs import NodeProcess, iomtnode, iomtnode_all

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_init_run_simulate_receipt_verify(tmp_path: Path):
    home = tmp_path / "node"
    init = json.loads(iomtnode("init", "--home", str(home), "--json").stdout)
    assert len(init["node_id"]) == 64 and init["chain_id"] == "iomt-local"
    assert (home / "node_key").stat().st_mode & 0o077 == 0

    with NodeProcess.start(home, tmp_path / "node.log") as node:
        out = iomtnode("simulate", "--api", node.api, "--home", str(home), "--devices", "3",
                       "--rate", "40", "--duration", "2", "--seed", "7", "--json").stdout
        sim = json.loads(out)
        for key in ("submitted", "accepted", "rejected", "committed", "latency_ms"):
            assert key in sim
        assert sim["accepted"] > 40 and sim["rejected"] == 0
        assert sim["committed"] == sim["accepted"]
        assert 0 < sim["latency_ms"]["p50"] <= sim["latency_ms"]["p99"] <= sim["latency_ms"]["max"]

        status = json.loads(iomtnode("status", "--api", node.api, "--json").stdout)
        assert status["height"] >= 1 and status["finalized_height"] == status["height"]

        height = highest_with_a_reading(node.api, status["height"])
        assert height > 0
        block = json.loads(iomtnode("block", str(height), "--api", node.api).stdout)
        readings = [t for t in block["txs"] if t["type"] == "reading"]
        assert readings
        reading_id = readings[0]["id"]

        receipt = iomtnode("receipt", reading_id, "--api", node.api).stdout
        good = tmp_path / "receipt.json"
        good.write_text(receipt)
        # the block's tree is kept now: a second receipt of it walks the kept tree
        sibling_id = readings[-1]["id"]
        again, of_sibling = iomtnode_all(("receipt", reading_id, "--api", node.api),
                                         ("receipt", sibling_id, "--api", node.api))
        assert again.stdout == receipt
        sibling = tmp_path / "sibling.json"
        sibling.write_text(of_sibling.stdout)

    doc = json.loads(receipt)
    lie = tmp_path / "lie.json"  # valid bytes, but a readable field that says otherwise
    lie.write_text(json.dumps({**doc, "height": 999_999}))
    tx = bytearray.fromhex(doc["tx"])
    tx[-1] ^= 0x01  # flip a bit of the device's signature
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps({**doc, "tx": tx.hex()}))
    doc["proof"]["index"] = (doc["proof"]["index"] + 1) % max(2, doc["proof"]["count"])
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(doc))

    genesis = str(home / "genesis.json")  # each receipt checked offline, all at once
    ok, ok_sibling, *bad = iomtnode_all(
        *(("verify", str(path), "--genesis", genesis, "--json") for path in (good, sibling)),
        *(("verify", str(path), "--genesis", genesis) for path in (lie, tampered, moved)),
        check=False)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert json.loads(ok.stdout) == {**json.loads(ok.stdout), "valid": True, "tx_id": reading_id}
    assert ok_sibling.returncode == 0, ok_sibling.stderr[-3000:]
    assert json.loads(ok_sibling.stdout) == {**json.loads(ok_sibling.stdout), "valid": True,
                                             "tx_id": sibling_id}
    lied, tampered_with, moved_to = bad
    assert lied.returncode == 1 and "height" in lied.stdout
    assert tampered_with.returncode == 1 and "signature" in tampered_with.stdout
    assert moved_to.returncode == 1 and "INVALID" in moved_to.stdout


def highest_with_a_reading(api: str, top: int) -> int:
    """The highest height at or below ``top`` whose block holds a reading (0: none), looked
    for over the API from this process (a `block` command per empty block took a process
    start each)."""
    async def find() -> int:
        with trio.fail_after(30):
            async with open_client(api) as client:
                for height in range(top, 0, -1):
                    block = await client.call("get_block", height=height)
                    if any(t["type"] == "reading" for t in block["txs"]):
                        return height
        return 0

    return trio.run(find)


def test_clean_shutdown_restart_and_lock(tmp_path: Path):
    home = tmp_path / "node"
    iomtnode("init", "--home", str(home))
    with NodeProcess.start(home, tmp_path / "a.log") as node:
        node.wait_for_height(2)
        second = iomtnode("run", "--home", str(home), "--api", "127.0.0.1:0", check=False)
        assert second.returncode == 2
        assert "LOCK" in second.stderr and "Traceback" not in second.stderr
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=20) == 0
        height = node.last_height()
    assert '"node_stopping"' in (tmp_path / "a.log").read_text()
    with NodeProcess.start(home, tmp_path / "b.log") as node:
        node.wait_for_height(height + 1)


def test_bad_operator_input_is_a_clear_error(tmp_path: Path):
    missing = iomtnode("run", "--home", str(tmp_path / "nowhere"), check=False)
    assert missing.returncode == 2 and "iomtnode init" in missing.stderr
    home = tmp_path / "node"
    iomtnode("init", "--home", str(home))
    again = iomtnode("init", "--home", str(home), check=False)
    assert again.returncode == 2 and "already" in again.stderr
    (home / "node_key").chmod(0o644)
    unsafe = iomtnode("run", "--home", str(home), check=False)
    assert unsafe.returncode == 2 and "chmod 600" in unsafe.stderr
    (home / "node_key").chmod(0o600)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700  # as init made it
    home.chmod(0o755)
    unsafe = iomtnode("run", "--home", str(home), check=False)
    assert unsafe.returncode == 2 and f"chmod 700 {home}" in unsafe.stderr
    assert "mode 0755" in unsafe.stderr and "Traceback" not in unsafe.stderr
    help_text = iomtnode("simulate", "--help").stdout
    assert "--rate" in help_text and "--devices" in help_text
    assert iomtnode("version").stdout.strip() == __version__


def test_a_device_is_admitted_to_a_stream_with_a_salted_profile(tmp_path: Path):
    home = tmp_path / "node"
    iomtnode("init", "--home", str(home))
    device = iomtnode("device", "keygen", "--out", str(tmp_path / "device.key")).stdout.strip()
    stream = iomtnode("device", "keygen", "--out", str(tmp_path / "stream.key")).stdout.strip()
    with NodeProcess.start(home, tmp_path / "node.log") as node:
        bad = iomtnode("device", "admit", device, "--stream", stream, "--home", str(home),
                       "--api", node.api, "--profile-salt", "abcd", check=False)
        assert bad.returncode != 0 and "16 bytes" in bad.stderr and "Traceback" not in bad.stderr
        admitted = json.loads(iomtnode(
            "device", "admit", device, "--stream", stream, "--home", str(home), "--api",
            node.api, "--class", "thermometer", "--manufacturer", "acme", "--json").stdout)
        salt = bytes.fromhex(admitted["profile_salt"])
        assert admitted["profile_hash"] == profile_hash(salt, "thermometer", "acme").hex()
        deadline = time.monotonic() + 20
        while True:  # until the admission is committed, the stream is no party to the device
            shown = iomtnode("device", "show", device, "--key", str(tmp_path / "stream.key"),
                             "--api", node.api, "--json", check=False)
            if shown.returncode == 0 and json.loads(shown.stdout)["status"] == "active":
                break
            assert time.monotonic() < deadline, shown.stderr
            time.sleep(0.2)
    found = json.loads(shown.stdout)
    assert (found["stream"], found["profile_hash"]) == (stream, admitted["profile_hash"])
    assert not {"patient", "device_class", "manufacturer"} & set(found)  # nothing in clear


def test_ctrl_c_stops_dev_with_a_summary_and_exit_0():
    # Ctrl-C cancelled everything at once: no summary at all, only the progress lines
    proc = subprocess.Popen([sys.executable, "-m", "iomtnode", "dev", "--devices", "2",
                             "--rate", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = ""
        while not line.startswith("height "):  # until a progress line: the devices stream
            line = proc.stderr.readline()
            assert line, "dev ended before streaming"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    started, stopped, committed, home = out.splitlines()
    assert started.startswith("dev chain iomt-dev at ws://127.0.0.1:")
    assert stopped.startswith("stopped by SIGINT after ")
    assert stopped.split(", height ")[1].isdigit()
    assert committed.startswith("committed ") and "latency ms p50" in committed
    assert home.startswith("home /") and home.endswith("/node, removed on exit")
    assert not Path(home.split()[1].rstrip(",")).exists()
