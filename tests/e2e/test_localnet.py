"""A localnet of real `iomtnode run` processes: start, kill, restart, pause, resume, and the
`localnet up --detach` / `localnet down` commands leaving nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from iomtnode.localnet import Localnet, Manifest
from iomtnode.localnet.procs import pid_state
from iomtnode.localnet.rpc import NodeUnreachable

pytestmark = [pytest.mark.e2e]
FAST = {"IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.5"}


@pytest.mark.timeout(120)
async def test_kill_restart_pause_resume(tmp_path: Path):
    async with Localnet.start(nodes=3, path=tmp_path / "net", authorities=1, env=FAST) as net:
        refs = {n.name: n.proc for n in net.manifest.nodes}
        assert all(pid_state(r) == "running" for r in refs.values())
        heights = await net.wait_for_height(2, ["node1"], timeout_s=30)  # the authority seals
        assert heights["node1"] >= 2
        assert (await net.status("node2"))["node_id"] == net.node("node2").node_id

        await net.kill("node2")
        assert net.state("node2") == "down" and pid_state(refs["node2"]) == "gone"
        with pytest.raises(NodeUnreachable):
            await net.call("node2", "status", timeout_s=1.0)
        await net.restart("node2")
        assert net.state("node2") == "up"
        assert (await net.status("node2"))["chain_id"] == "iomt-localnet"
        on_disk = Manifest.load(net.manifest.dir).node("node2")
        assert on_disk.proc is not None and on_disk.proc.pid != refs["node2"].pid

        await net.pause("node3")
        assert net.state("node3") == "paused"
        with pytest.raises(NodeUnreachable):  # a stopped process answers nothing
            await net.call("node3", "status", timeout_s=1.0)
        await net.resume("node3")
        with trio.fail_after(5):
            assert (await net.call("node3", "status", timeout_s=1.0))["height"] >= 0

        await net.kill("node1")  # the authority: its chain survives a SIGKILL
        await net.restart("node1")
        await net.wait_for_height(heights["node1"] + 2, ["node1"], timeout_s=30)
        final = Manifest.load(net.manifest.dir)
    assert all(pid_state(n.proc) == "gone" for n in final.nodes)  # all stopped on exit
    assert all(n.proc is None for n in Manifest.load(final.dir).nodes)
    assert "node_started" in (final.dir / "node2" / "node.log").read_text()


@pytest.mark.timeout(60)
async def test_processes_stop_when_the_body_raises(tmp_path: Path):
    with pytest.raises(RuntimeError, match="boom"):
        async with Localnet.start(nodes=2, path=tmp_path / "net", env=FAST) as net:
            refs = [n.proc for n in net.manifest.nodes]
            await net.pause("node2")  # even a paused node is stopped
            raise RuntimeError("boom")
    assert all(pid_state(r) == "gone" for r in refs)


@pytest.mark.timeout(90)
async def test_followers_converge_on_the_authority_chain(tmp_path: Path):
    async with Localnet.start(nodes=3, path=tmp_path / "net", authorities=1, env=FAST) as net:
        await net.wait_for_height(3, timeout_s=12)  # every node, not only the authority
        await net.check_invariants(k=3, within_s=10)

        await net.drop_peer("node1", "node3")
        refused = (await net.admin("node1", "admin_peers"))["refused"]
        assert refused == [net.node("node3").node_id]
        await net.partition(["node1"], ["node2", "node3"])
        await net.heal()
        assert (await net.admin("node1", "admin_peers"))["refused"] == []

        moved = await net.move("node3")
        assert moved.startswith("127.0.0.") and not moved.startswith("127.0.0.1:")
        assert Manifest.load(net.manifest.dir).node("node3").p2p == f"wss://{moved}/p2p/v1"
        await net.kill("node2")
        await net.restart("node2")
        top = max((await net.wait_for_height(0)).values())
        await net.wait_for_height(top + 3, timeout_s=20)  # everyone follows again
        report = await net.check_invariants(k=3, within_s=10)
        assert set(report["heights"]) == {"node1", "node2", "node3"}


def localnet_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`iomtnode localnet ...` as its own process (via the sub-app's module entry)."""
    proc = subprocess.run([sys.executable, "-m", "iomtnode", "localnet", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **FAST, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, f"localnet {' '.join(args)}: {proc.stderr[-3000:]}"
    return proc


@pytest.mark.timeout(120)
def test_up_detach_then_down_leaves_no_process(tmp_path: Path):
    directory = tmp_path / "net"
    try:
        up = json.loads(localnet_cli("up", "--nodes", "2", "--dir", str(directory), "--detach",
                                     "--base-port", "0", "--devices", "2", "--rate", "20",
                                     "--json").stdout)
        manifest = Manifest.load(directory)
        refs = [n.proc for n in manifest.nodes] + [manifest.simulator]
        assert [n["pid"] for n in up["nodes"]] == [r.pid for r in refs[:2]]
        assert all(pid_state(r) == "running" for r in refs)  # they outlive `up --detach`

        status = json.loads(localnet_cli("status", "--dir", str(directory), "--json").stdout)
        assert [n["state"] for n in status["nodes"]] == ["up", "up"]
        assert all(n["status"]["chain_id"] == "iomt-localnet" for n in status["nodes"])
    finally:  # a failed assertion must not leave the detached processes running
        down = json.loads(localnet_cli("down", "--dir", str(directory), "--json").stdout)
    assert {s["pid"] for s in down["stopped"]} == {r.pid for r in refs}
    assert all(pid_state(r) == "gone" for r in refs)
    again = json.loads(localnet_cli("down", "--dir", str(directory), "--json").stdout)
    assert again["stopped"] == []  # tolerant of a localnet already down
