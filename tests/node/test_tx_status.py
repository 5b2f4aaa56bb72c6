"""Accepted means final or told, on a real node (LevelDB in tmp_path, API on loopback).

The node under test is not an authority, so nothing it accepts is committed unless the test
commits a block itself (signed by the authority it holds the key of): an accepted reading
stays pending exactly as long as the test wants."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import structlog
import trio

from iomtnode.chain.chain import Chain
from iomtnode.client import ApiError, open_client
from iomtnode.config import Config
from iomtnode.core.block import sign_commit
from iomtnode.core.crypto import SigningKey
from iomtnode.core.genesis import Genesis
from iomtnode.core.tx import AdmitDevice, Reading, SignedTx, sign_tx
from iomtnode.home import Home, init_home
from iomtnode.node import Node
from iomtnode.store import BlockStore

pytestmark = pytest.mark.timeout(60)

CHAIN = "iomt-status"
CONFIG = Config(api_listen="127.0.0.1:0", p2p_listen="127.0.0.1:0", block_interval_s=0.02,
                empty_block_interval_s=0.5)


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.authority, self.device, self.patient = (SigningKey.generate() for _ in range(3))
        self.genesis = Genesis(CHAIN, int(time.time() * 1000) - 60_000,
                               (self.authority.public,), 1)
        self.home: Home = init_home(tmp / "observer", genesis=self.genesis, config=CONFIG)

    def reading(self, seq: int, ts_offset_ms: int = 0) -> SignedTx:
        return sign_tx(Reading(self.device.public, seq, int(time.time() * 1000) + ts_offset_ms,
                               "heart_rate", b"\x01" * 48, b""), self.device, CHAIN)

    def admission(self) -> SignedTx:
        return sign_tx(AdmitDevice(self.authority.public, self.device.public,
                                   self.patient.public, "wearable", "acme"),
                       self.authority, CHAIN)

    async def seal(self, node: Node, txs: list[SignedTx]) -> int:
        """Commit the next block holding exactly ``txs``, as the authority."""
        assert node.chain is not None and node.writer is not None
        built = node.chain.build(txs, self.authority.public, int(time.time() * 1000))
        assert not built.rejected, built.rejected
        commit = sign_commit([self.authority], CHAIN, built.block.height, 0, built.block.hash)
        assert await node.writer.commit(built, commit)
        return built.block.height


class Running:
    """A started node, and how to stop it (waiting until its store is closed)."""

    def __init__(self, node: Node, url: str, scope: trio.CancelScope,
                 stopped: trio.Event) -> None:
        self.node, self.url, self._scope, self._stopped = node, url, scope, stopped

    async def stop(self) -> None:
        self._scope.cancel()
        with trio.fail_after(10):
            await self._stopped.wait()


async def start(nursery: trio.Nursery, home: Home) -> Running:
    node = Node(home, replace(CONFIG))
    scope, stopped = trio.CancelScope(), trio.Event()

    async def run(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            with scope:
                await node.run(task_status=task_status)
        finally:
            stopped.set()

    info = await nursery.start(run)
    return Running(node, f"ws://127.0.0.1:{info.api_port}/api/v1", scope, stopped)


async def test_an_accepted_reading_that_is_dropped_says_why(tmp_path, nursery) -> None:
    s = Setup(tmp_path)
    running = await start(nursery, s.home)
    node, url = running.node, running.url
    await s.seal(node, [s.admission()])
    mine = s.reading(5)
    async with open_client(url) as client:
        accepted = await client.call("submit_reading", tx=mine.raw.hex())
        assert accepted["id"] == mine.id.hex()
        assert await client.call("get_tx_status", id=mine.id.hex()) == {
            "id": mine.id.hex(), "state": "pending"}
        # another reading of the device with the same number is committed (it was sent to
        # another node, say): this node's reading can never be committed now
        theirs = s.reading(5, ts_offset_ms=1)
        with structlog.testing.capture_logs() as logs:
            height = await s.seal(node, [theirs])
        stranger = bytes(32).hex()
        statuses = await client.call("get_tx_status",
                                     ids=[mine.id.hex(), theirs.id.hex(), stranger])
        assert statuses[1] == {"id": theirs.id.hex(), "state": "committed", "height": height}
        assert statuses[2] == {"id": stranger, "state": "unknown"}
        dropped = statuses[0]
        assert dropped["state"] == "dropped" and dropped["code"] == 1022
        assert "5 was already used" in dropped["reason"] and dropped["height"] == height
        with pytest.raises(ApiError) as info:
            await client.call("get_receipt", id=mine.id.hex())
        assert info.value.code == 1031 and "5 was already used" in info.value.message
        assert (await client.call("status"))["dropped_txs"] == 1
        for bad in ({"ids": ["zz"]}, {"ids": [stranger] * 10_001}, {},
                    {"id": stranger, "ids": [stranger]}):
            with pytest.raises(ApiError) as info:
                await client.call("get_tx_status", **bad)
            assert info.value.code == -32602
    warnings = [e for e in logs if e["event"] == "tx_dropped"]
    assert warnings == [{"event": "tx_dropped", "log_level": "warning", "tx": mine.id.hex(),
                         "code": 1022, "reason": dropped["reason"], "client": True}]


async def test_an_accepted_reading_survives_a_restart(tmp_path, nursery) -> None:
    s = Setup(tmp_path)
    running = await start(nursery, s.home)
    node, url = running.node, running.url
    await s.seal(node, [s.admission()])
    kept, doomed = s.reading(7), s.reading(8)
    async with open_client(url) as client:
        result = await client.call("submit_readings", txs=[kept.raw.hex(), doomed.raw.hex()])
        assert result["accepted"] == 2
    await running.stop()  # nothing of the mempool is saved on the way out
    # while the node is down, another reading numbered 8 is committed (another node's
    # block, synced later): the kept 8 can no longer be committed
    with BlockStore.open(s.home.data_path) as store:
        chain = Chain(store, s.genesis)
        rival = s.reading(8, ts_offset_ms=1)
        built = chain.build([rival], s.authority.public, int(time.time() * 1000))
        chain.commit(built, sign_commit([s.authority], CHAIN, built.block.height, 0,
                                        built.block.hash))
    with structlog.testing.capture_logs() as logs:
        running = await start(nursery, s.home)
    node, url = running.node, running.url
    assert node.mempool is not None and kept.id in node.mempool
    async with open_client(url) as client:
        kept_status, doomed_status = await client.call(
            "get_tx_status", ids=[kept.id.hex(), doomed.id.hex()])
        assert kept_status["state"] == "pending"
        assert doomed_status["state"] == "dropped" and doomed_status["code"] == 1022
        height = await s.seal(node, node.mempool.pending(10))
        assert await client.call("get_tx_status", id=kept.id.hex()) == {
            "id": kept.id.hex(), "state": "committed", "height": height}
    assert any(e["event"] == "tx_dropped" and e["tx"] == doomed.id.hex() for e in logs)
    assert list(node.chain.store.txlog.pending()) == []  # left with the committing block
