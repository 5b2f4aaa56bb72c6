"""A node SIGKILLed while readings stream in reopens at its last whole block, with a
consistent chain (parent links, certificates, every committed reading provable)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from iomtnode.client import open_client
from iomtnode.core.block import decode_commit
from iomtnode.core.genesis import Genesis
from iomtnode.core.receipt import verify_receipt
from tests.e2e.procs import NodeProcess, iomtnode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
KILLS = 3


async def check_chain(api: str, genesis: Genesis, min_height: int) -> int:
    """Walk the whole chain through the API; return its height."""
    async with open_client(api) as client:
        status = await client.call("status")
        assert status["height"] >= min_height
        parent = None
        for height in range(status["height"] + 1):
            block = await client.call("get_block", height=height)
            if parent is None:
                assert block["parent"] == genesis.hash.hex()  # block 0 names the genesis
            else:
                assert block["parent"] == parent["hash"]
            if parent is not None and parent["height"] > 0:  # block 0 needs no certificate
                commit = decode_commit(bytes.fromhex(parent["commit"]))
                commit.verify(genesis.authorities, genesis.chain_id)
                assert commit.block_hash.hex() == parent["hash"]
            for tx in block["txs"][:3]:
                receipt = await client.call("get_receipt", id=tx["id"])
                assert verify_receipt(receipt, genesis)[0].id.hex() == tx["id"]
            parent = block
        return status["height"]


def test_sigkill_under_load_then_restart(tmp_path: Path):
    home = tmp_path / "node"
    iomtnode("init", "--home", str(home))
    genesis = Genesis.load(home / "genesis.json")
    committed = 0  # the highest height a node logged as committed before it was killed
    for i in range(KILLS):
        with NodeProcess.start(home, tmp_path / f"run{i}.log") as node:
            height = trio.run(check_chain, node.api, genesis, committed)
            load = subprocess.Popen(
                [sys.executable, "-m", "iomtnode", "simulate", "--api", node.api, "--home",
                 str(home), "--devices", "4", "--rate", "300", "--duration", "30",
                 "--seed", str(i)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                node.wait_for_height(height + 5)
                node.proc.send_signal(signal.SIGKILL)
                node.proc.wait(timeout=10)
                committed = node.last_height()
            finally:
                load.kill()
                load.wait()
    with NodeProcess.start(home, tmp_path / "final.log") as node:
        final = trio.run(check_chain, node.api, genesis, committed)
    assert final >= committed > 5
