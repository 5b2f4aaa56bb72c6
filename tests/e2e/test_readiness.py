"""``iomtnode status --ready`` (the readiness probe of the container images, compose and
Kubernetes) against real node processes: ready with a peer, not ready without one, not ready
when nothing answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from iomtnode.localnet import Localnet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FAST = {"IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.3", "IOMTNODE_BLOCK_INTERVAL_S": "0.05"}
PROBE_TIMEOUT_S = 30.0


async def probe(api: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(PROBE_TIMEOUT_S):
        return await trio.run_process(
            [sys.executable, "-m", "iomtnode", "status", "--ready", "--api", api],
            capture_stdout=True, capture_stderr=True, check=False)


async def test_ready_with_a_peer_not_without_one_nor_when_down(tmp_path: Path):
    async with Localnet.start(nodes=2, path=tmp_path / "net", env=FAST) as net:
        await net.wait_for_height(2, timeout_s=30)
        api = net.node("node1").api
        ok = await probe(api)
        assert ok.returncode == 0, ok.stderr.decode()
        assert ok.stdout.decode().startswith("ready at height ")

        await net.stop("node2")
        with trio.fail_after(20):
            while (await net.status("node1"))["peers"]:  # noqa: ASYNC110 - polls a process
                await trio.sleep(0.1)
        alone = await probe(api)
        assert alone.returncode == 1
        assert "not ready: no peer connected (the network has 2 authorities)" in (
            alone.stderr.decode())

        await net.restart("node2")
        with trio.fail_after(30):
            while (again := await probe(api)).returncode != 0:  # noqa: ASYNC110 - a process
                await trio.sleep(0.2)
        assert again.stdout.decode().startswith("ready at height ")
        await net.stop_all()
        down = await probe(api)
        assert down.returncode == 1 and "cannot reach the node" in down.stderr.decode()
