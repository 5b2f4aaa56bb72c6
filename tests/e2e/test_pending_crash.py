"""Nothing acknowledged is lost when a node's process is killed: readings a node answered
`accepted` for, and had not committed, are pending again after it restarts.

The node is not the chain's authority and the authority does not run, so nothing it accepts
is committed: the admission of the device and its readings all stay pending. It is
SIGKILLed right after its last answer (no clean shutdown writes anything)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import trio

from iomtnode.client import open_client
from iomtnode.core.crypto import SigningKey
from iomtnode.core.genesis import Genesis
from iomtnode.core.tx import SignedTx
from iomtnode.home import Home
from tests.core import sealkit as kit
from tests.e2e.procs import NodeProcess, iomtnode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
SETUP = 2  # the admission and the epoch, before the readings


def signed(tmp_path: Path) -> tuple[Path, list[SignedTx]]:
    """An observer's home on an authority's chain; a device's admission to a stream, the
    stream's epoch and the device's sealed readings, to submit."""
    iomtnode("init", "--home", str(tmp_path / "authority"))
    authority = Home(tmp_path / "authority")
    genesis = Genesis.load(tmp_path / "authority" / "genesis.json")
    iomtnode("init", "--home", str(tmp_path / "observer"), "--genesis",
             str(tmp_path / "authority" / "genesis.json"))
    key, device, stream = authority.load_key(), SigningKey.generate(), SigningKey.generate()
    setup = [kit.admit(key, device.public, stream.public, genesis.chain_id),
             kit.announce(stream, genesis.chain_id)]
    now = int(time.time() * 1000)
    readings = [kit.sealed_reading(device, seq, now + seq, genesis.chain_id)
                for seq in (3, 1, 2, 5, 4)]
    return tmp_path / "observer", [*setup, *readings]


async def submit(api: str, txs: list[SignedTx]) -> None:
    async with open_client(api) as client:
        for tx in txs[:SETUP]:
            await client.call("submit_tx", tx=tx.raw.hex())
        results = await client.submit_binary([tx.raw for tx in txs[SETUP:]])
        assert [code for code, _ in results] == [0] * (len(txs) - SETUP), results


async def states(api: str, txs: list[SignedTx]) -> list[str]:
    async with open_client(api) as client:
        found = await client.call("get_tx_status", ids=[tx.id.hex() for tx in txs])
    return [s["state"] for s in found]


def test_accepted_transactions_survive_a_sigkill(tmp_path: Path) -> None:
    home, txs = signed(tmp_path)
    with NodeProcess.start(home, tmp_path / "run1.log") as node:
        trio.run(submit, node.api, txs)
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=10)
    with NodeProcess.start(home, tmp_path / "run2.log") as node:
        assert trio.run(states, node.api, txs) == ["pending"] * len(txs)
