"""Accepted means final or told, on a real node (LevelDB in tmp_path, on an in-memory network
under a virtual clock).

The node under test is not an authority, so nothing it accepts is committed unless the test
commits a block itself (signed by the authority it holds the key of): an accepted reading
stays pending exactly as long as the test wants."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from iomtnode.chain.chain import Chain
from iomtnode.client import ApiError
from iomtnode.config import Config
from iomtnode.core.block import sign_commit
from iomtnode.core.crypto import SigningKey
from iomtnode.core.tx import SignedTx
from iomtnode.home import Home
from iomtnode.node import Node
from iomtnode.store import BlockStore

from ..core import sealkit as kit
from .harness import Net

pytestmark = pytest.mark.timeout(60)

CHAIN = "iomt-status"
CONFIG = Config(api_listen="127.0.0.1:0", p2p_listen="127.0.0.1:0", block_interval_s=0.02,
                empty_block_interval_s=0.5)


class Setup:
    """One observer node (node 0 of a :class:`Net`) of a chain whose one authority never runs:
    the test signs its blocks."""

    def __init__(self, tmp: Path) -> None:
        self.authority, self.device, self.stream = (SigningKey.generate() for _ in range(3))
        self.net = Net(tmp, 1, chain_id=CHAIN, authorities=0, absent=(self.authority,),
                       config=CONFIG)
        self.genesis = self.net.genesis
        self.home: Home = self.net.homes[0]

    def reading(self, seq: int, ts_offset_ms: int = 0, epoch: int = 1) -> SignedTx:
        return kit.sealed_reading(self.device, seq, self.net.now_ms() + ts_offset_ms, CHAIN,
                                  epoch=epoch)

    def enrollment(self) -> list[SignedTx]:
        """The device's admission to its stream and the stream's epoch 1."""
        return [kit.admit(self.authority, self.device.public, self.stream.public, CHAIN),
                kit.announce(self.stream, CHAIN)]

    async def seal(self, node: Node, txs: list[SignedTx]) -> int:
        """Commit the next block holding exactly ``txs``, as the authority."""
        assert node.chain is not None and node.writer is not None
        built = node.chain.build(txs, self.authority.public, self.net.now_ms())
        assert not built.rejected, built.rejected
        commit = sign_commit([self.authority], CHAIN, built.block.height, 0, built.block.hash)
        assert await node.writer.commit(built, commit)
        return built.block.height


async def test_an_accepted_reading_that_is_dropped_says_why(tmp_path, nursery,
                                                            autojump_clock) -> None:
    s = Setup(tmp_path)
    node = await s.net.start(nursery, 0)
    await s.seal(node, s.enrollment())
    mine = s.reading(5)
    async with s.net.client(0) as client:
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


async def test_an_accepted_reading_survives_a_restart(tmp_path, nursery,
                                                      autojump_clock) -> None:
    s = Setup(tmp_path)
    node = await s.net.start(nursery, 0)
    await s.seal(node, s.enrollment())
    kept, doomed = s.reading(7), s.reading(8)
    async with s.net.client(0) as client:
        result = await client.call("submit_readings", txs=[kept.raw.hex(), doomed.raw.hex()])
        assert result["accepted"] == 2
    await s.net.stop(0)  # nothing of the mempool is saved on the way out
    # while the node is down, another reading numbered 8 is committed (another node's
    # block, synced later): the kept 8 can no longer be committed
    with BlockStore.open(s.home.data_path) as store:
        chain = Chain(store, s.genesis)
        rival = s.reading(8, ts_offset_ms=1)
        built = chain.build([rival], s.authority.public, s.net.now_ms())
        chain.commit(built, sign_commit([s.authority], CHAIN, built.block.height, 0,
                                        built.block.hash))
    with structlog.testing.capture_logs() as logs:
        node = await s.net.start(nursery, 0)
    assert node.mempool is not None and kept.id in node.mempool
    async with s.net.client(0) as client:
        kept_status, doomed_status = await client.call(
            "get_tx_status", ids=[kept.id.hex(), doomed.id.hex()])
        assert kept_status["state"] == "pending"
        assert doomed_status["state"] == "dropped" and doomed_status["code"] == 1022
        height = await s.seal(node, node.mempool.pending(10))
        assert await client.call("get_tx_status", id=kept.id.hex()) == {
            "id": kept.id.hex(), "state": "committed", "height": height}
    assert any(e["event"] == "tx_dropped" and e["tx"] == doomed.id.hex() for e in logs)
    assert list(node.chain.store.txlog.pending()) == []  # left with the committing block


async def test_a_pending_reading_of_an_epoch_that_ended_is_dropped_with_the_current_one(
        tmp_path, nursery, autojump_clock) -> None:
    """The stream moves to its next epoch (a revocation does so) while a reading sealed to
    the old one is pending: it can never be committed, and its device is told to re-seal."""
    s = Setup(tmp_path)
    node = await s.net.start(nursery, 0)
    await s.seal(node, s.enrollment())
    old = s.reading(1)
    async with s.net.client(0) as client:
        assert (await client.call("submit_reading", tx=old.raw.hex()))["id"] == old.id.hex()
        height = await s.seal(node, [kit.announce(s.stream, CHAIN, epoch=2)])
        status = await client.call("get_tx_status", id=old.id.hex())
        assert status["state"] == "dropped" and status["code"] == 1024, status
        assert "re-seal" in status["reason"] and status["height"] == height
        with pytest.raises(ApiError) as info:  # and a new one sealed to it is refused
            await client.call("submit_reading", tx=s.reading(2).raw.hex())
        assert info.value.code == 1024
        resealed = s.reading(1, epoch=2)  # the same sequence number, the current epoch
        assert (await client.call("submit_reading", tx=resealed.raw.hex()))["id"]
        height = await s.seal(node, node.mempool.pending(10))
        assert await client.call("get_tx_status", id=resealed.id.hex()) == {
            "id": resealed.id.hex(), "state": "committed", "height": height}
