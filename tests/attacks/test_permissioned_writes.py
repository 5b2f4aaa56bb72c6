"""Only participants write (finding 6): four authorities on the in-memory network, under a
virtual clock.

- A ``Grant`` signed by a fresh key is refused by the API with its rule's code, and a block
  carrying one, proposed by a Byzantine authority, is invalid on every honest node: it is
  never committed, and the network goes on finalizing honest readings in the next rounds.
- 2,000 readings from unknown devices cost no signature verification on the node that gets
  them, nor on any other (they are not relayed).
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from structlog.testing import capture_logs

from iomtnode.chain.chain import BuiltBlock, Chain
from iomtnode.client import ApiError
from iomtnode.core import errors as e
from iomtnode.core.block import make_block
from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.core.payload import wrap_hash
from iomtnode.core.tx import FORWARD, Grant, SignedTx, sign_tx

from ..core import sealkit as kit
from ..node.harness import BASE, FAST, Net, start_net

pytestmark = pytest.mark.timeout(120)

CHAIN = "iomt-attack-ledger"
BFT = replace(BASE, block_interval_s=0.05)


def authorities(tmp_path) -> Net:
    return Net(tmp_path, 4, chain_id=CHAIN, authorities=4, config=BFT, params=FAST)


async def admitted_device(net: Net, client) -> SigningKey:
    """A device admitted to a stream whose epoch 1 is announced, on every node."""
    device = SigningKey.generate()
    await net.enroll(client, net.keys[0], device)
    return device


def readings(net: Net, device: SigningKey, seqs: range) -> list[SignedTx]:
    now = net.now_ms()
    return [kit.sealed_reading(device, seq, now, CHAIN) for seq in seqs]


def grant_from(stream: SigningKey, expires_ms: int) -> SignedTx:
    """A well-formed grant by ``stream`` (an epoch key wrapped for a fresh grantee)."""
    wrap = bytes(range(80))  # a sealed box of a 32-byte epoch secret: 80 bytes
    body = Grant(stream.public, SigningKey.generate().public, blake2b256(b"box"), expires_ms, 1,
                 FORWARD, wrap_hash(wrap), 0)
    return sign_tx(body, stream, CHAIN, wrap)


async def test_a_grant_from_a_fresh_key_is_refused_and_a_block_with_one_is_invalid(
        tmp_path, nursery, autojump_clock, monkeypatch):
    net = await start_net(authorities(tmp_path), nursery)
    fresh = SigningKey.generate()
    grant = grant_from(fresh, net.now_ms() + 10**9)
    async with net.client(1) as client:
        device = await admitted_device(net, client)
        with pytest.raises(ApiError) as info:
            await client.call("submit_tx", tx=grant.raw.hex())
        assert info.value.code == e.UnknownStreamError.code == 1023
        assert "not the stream of any active device" in info.value.message

        # node 0 turns Byzantine: every block it proposes carries the grant
        byzantine = net.node(0).chain
        proposed: list[int] = []
        honest_build = Chain.build

        def build(chain: Chain, txs, proposer: bytes, now_ms: int) -> BuiltBlock:
            built = honest_build(chain, txs, proposer, now_ms)
            if chain is not byzantine:
                return built
            block, h = built.block, built.block.header
            proposed.append(h.height)
            forged = make_block(height=h.height, time_ms=h.time_ms, parent=h.parent,
                                proposer=h.proposer, txs=(*block.txs, grant),
                                authorities=net.genesis.authorities,
                                last_commit=block.last_commit,
                                next_authorities=net.genesis.authorities)
            return BuiltBlock(forged, built.changes, built.rejected)

        monkeypatch.setattr(Chain, "build", build)
        start = net.node(1).chain.height
        batch = readings(net, device, range(1, 41))
        with capture_logs() as logs:
            for i in range(0, len(batch), 10):  # honest readings, over several heights
                result = await client.call("submit_readings",
                                           txs=[tx.raw.hex() for tx in batch[i:i + 10]])
                assert result["accepted"] == 10
                await net.wait_height(net.node(1).chain.height + 1)
            await net.wait(lambda: len(proposed) >= 3, "node 0 proposed three times", timeout=60)
            last = batch[-1].id
            await net.wait(lambda: all(n.chain.store.tx_location(last) for n in net.live()),
                           "every honest reading final everywhere", timeout=60)
    refused = {log["height"] for log in logs if log["event"] == "proposed_block_invalid"
               and "not the stream of any active device" in log["reason"]}
    assert set(proposed) - {max(proposed)} <= refused  # each of its blocks, for that grant
    assert net.node(1).chain.height > start + 4
    honest = [net.node(i) for i in (1, 2, 3)]
    for node in honest:  # the honest ones stay connected to each other
        connected = {peer.node_id for peer in node.p2p.host.peers()}
        assert {other.node_id for other in honest if other is not node} <= connected
    for node in net.live():
        assert node.chain.store.tx_location(grant.id) is None  # never committed
        assert grant.id not in node.mempool
    assert net.same_chain()
    for h in range(start + 1, net.node(1).chain.height + 1):
        assert grant.id not in {tx.id for tx in net.node(1).chain.block_at(h).txs}


async def test_readings_from_unknown_devices_cost_no_verification(tmp_path, nursery,
                                                                  autojump_clock):
    net = await start_net(authorities(tmp_path), nursery)
    rng = random.Random(6)
    now = net.now_ms()
    async with net.client(2) as client:
        device = await admitted_device(net, client)
        before = [n.mempool.verifier.verified_count for n in net.live()]
        strangers = []
        for _ in range(2000):
            key = SigningKey(rng.randbytes(32))
            strangers.append(kit.sealed_reading(key, rng.randrange(1, 2**32), now,
                                                CHAIN).raw.hex())
        for half in (strangers[:1000], strangers[1000:]):  # each call under 1 MiB of hex
            result = await client.call("submit_readings", txs=half)
            assert result["accepted"] == 0
            assert {r["error"]["code"] for r in result["results"]} == {
                e.UnknownDeviceError.code}
        assert [n.mempool.verifier.verified_count for n in net.live()] == before
        honest = readings(net, device, range(1, 11))
        result = await client.call("submit_readings", txs=[tx.raw.hex() for tx in honest])
        assert result["accepted"] == 10
        await net.wait(lambda: all(n.chain.store.tx_location(honest[-1].id)
                                   for n in net.live()), "honest readings final everywhere")
    for node, count in zip(net.live(), before, strict=True):
        assert node.mempool.verifier.verified_count == count + 10  # the honest ones, once
        assert not node.p2p.host.scoreboard.penalties
