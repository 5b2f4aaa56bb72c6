"""Who pays for a bad compact block: the sender whose header, ids and certificates were
used, never a later source that only answered with the transactions asked for."""

from __future__ import annotations

import pytest
import trio

from iomtnode.admission.assembly import PENDING_TIMEOUT_S
from iomtnode.admission.mempool import Mempool
from iomtnode.admission.messages import BlockTxs
from iomtnode.chain.feed import BlockFeed
from iomtnode.chain.writer import ChainWriter
from iomtnode.core.block import Commit
from iomtnode.p2p import score
from iomtnode.sync.blockrelay import BlockRelay, compact
from iomtnode.sync.messages import CompactBlock

from ..admission.chainkit import T0
from ..core.helpers import pub
from .test_blockrelay import Host, Waited, follower_blocks


async def relay_of(tmp_path, peers):
    chain, made = await follower_blocks(tmp_path)
    host = Host(peers)
    mempool = Mempool(chain, now_ms=lambda: T0 + 60_000)
    writer = ChainWriter(chain, BlockFeed(chain.height), mempool.verifier)
    relay = BlockRelay(host, chain, writer, mempool, lambda peer, height: None, host.ask)
    return chain, made, host, relay


@pytest.mark.parametrize("which", ["commit", "last_commit"])
async def test_a_certificate_of_another_block_costs_its_sender_before_any_fetch(
        tmp_path, which):
    m = Waited(pub("B"))
    _, made, host, relay = await relay_of(tmp_path, [m])
    (block, commit), (_, other) = made[-1], made[-2]
    real = compact(block, commit)
    bogus = (CompactBlock(real.header, real.tx_ids, real.last_commit, other.encode())
             if which == "commit" else
             CompactBlock(real.header, real.tx_ids, commit.encode(), real.commit))
    with trio.fail_after(10):
        await relay.on_compact(m, bogus)
    assert m.sent == []  # nothing fetched for it
    [(who, points, _)] = host.penalties
    assert (who, points) == (pub("B"), score.INVALID_BLOCK)


async def test_a_block_that_fails_to_apply_costs_the_sender_of_its_certificate(
        tmp_path, autojump_clock):
    """M sends the real header and ids first with a certificate for the block whose
    signatures are not (another height's); honest H sends the real one and answers:
    the block is whole, fails on M's certificate, and M pays, not H."""
    m, h = Waited(pub("B")), Waited(pub("C"))
    chain, made, host, relay = await relay_of(tmp_path, [m, h])
    (block, commit), (_, other) = made[-1], made[-2]
    real = compact(block, commit)
    forged = Commit(commit.height, commit.round, commit.block_hash, other.signatures)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        await relay.on_compact(m, CompactBlock(real.header, real.tx_ids, real.last_commit,
                                               forged.encode()))
        await relay.on_compact(h, real)
        with trio.fail_after(PENDING_TIMEOUT_S):
            await h.asked.wait()
        [ask] = h.sent
        await relay.on_block_txs(h, BlockTxs(block.hash, ask.indexes,
                                             [block.txs[i].raw for i in ask.indexes]))
        assert chain.height == 1
        assert [(who, points) for who, points, _ in host.penalties] == [
            (pub("B"), score.INVALID_BLOCK)]
        nursery.cancel_scope.cancel()
