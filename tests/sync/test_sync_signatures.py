"""A catch-up's signatures: verified by the sync's own verifier (inline under a virtual
clock, in worker processes in real time), remembered per range as the objects that passed;
a range holding a certified block with a bad signature costs its server, and the block is
fetched from an honest peer."""

from __future__ import annotations

import pytest
import trio

from iomtnode.p2p import score
from iomtnode.sync import decoding
from iomtnode.sync.messages import Blocks
from iomtnode.sync.signatures import RangeSignatures, SyncVerifier

from ..admission.chainkit import CHAIN_ID, forged, reading, seal_unchecked, source_chain
from ..core.helpers import pub
from .test_unserved_claims import HEAD, A, B, FakePeer, L, follower, sync_to_head


@pytest.mark.parametrize("inline", [True, False])
async def test_a_range_remembers_the_objects_that_passed_and_counts_the_others(inline):
    good = [reading("d1", seq) for seq in range(1, 6)]
    bad = forged(reading("d2", 1))
    verifier = SyncVerifier(CHAIN_ID, inline=inline, workers=2)
    signatures = RangeSignatures()
    with trio.fail_after(30):  # real worker processes start
        await verifier.verify([*good, bad], signatures)
    assert all(signatures.passed(tx) for tx in good)
    assert not signatures.passed(bad) and signatures.failed == 1
    assert verifier.verified_count == 6
    # the same bytes as another object were not verified as that object: the node's own
    # record decides for them
    copy = reading("d1", 1)
    assert not signatures.passed(copy)
    assert signatures.widen(lambda tx: tx is copy)(copy)
    assert not signatures.widen(lambda tx: False)(bad)


async def test_a_certified_block_with_a_bad_signature_costs_its_server(
        tmp_path, autojump_clock):
    _, honest = source_chain(tmp_path / "honest", HEAD - 1, 3)  # heights 1..12
    items = {b.height: [b.encode(), c.encode()] for b, c in honest}
    base, _ = source_chain(tmp_path / "lie", 0, 3)  # block 1 only, as the honest one
    lie, certificate = seal_unchecked(base, (forged(reading("d1", 1)),))  # certified
    lies = {1: items[1], 2: [lie.encode(), certificate.encode()]}
    liar = FakePeer(L, lies)
    peers = [liar, FakePeer(A, items), FakePeer(B, items)]
    sync, host = follower(tmp_path / "follower", peers)
    await sync_to_head(sync, peers)
    [(who, points, why)] = host.penalties
    assert (who, points) == (L, score.INVALID_BLOCK) and "signature" in why
    assert L not in sync.peer_heights
    assert sync._chain.block_at(2).hash == honest[1][0].hash != lie.hash


async def test_pieces_wait_for_the_warm_up_so_no_worker_starts_twice():
    """The node's own warm-up runs first; pieces sent meanwhile would start workers of
    their own (a second set: two warm-ups at once each start one per core)."""
    verifier = SyncVerifier(CHAIN_ID, inline=False, workers=1)
    release, done = trio.Event(), trio.Event()
    signatures = RangeSignatures()

    async def verify_one() -> None:
        await verifier.verify([reading("d1", 1)], signatures)
        done.set()

    with trio.fail_after(30):  # a real worker process starts
        async with trio.open_nursery() as nursery:
            await nursery.start(verifier.warm, release.wait)
            nursery.start_soon(verify_one)
            with trio.move_on_after(1.0):  # a worker answers well within this
                await done.wait()
            assert not done.is_set() and verifier.verified_count == 0
            release.set()
            await done.wait()
    assert verifier.verified_count == 1 and signatures.failed == 0


@pytest.mark.parametrize("piece", [1024, 5])
async def test_pieces_span_blocks_so_small_blocks_make_few_worker_calls(
        tmp_path, monkeypatch, piece):
    _, blocks = source_chain(tmp_path / "source", HEAD - 1, 3)  # 4 txs, then 3 a block
    monkeypatch.setattr(decoding, "VERIFY_PIECE", piece)
    sizes: list[int] = []

    async def preverify(txs) -> None:
        sizes.append(len(txs))

    msg = Blocks(1, [[b.encode(), c.encode()] for b, c in blocks])
    verified = trio.Event()
    async with trio.open_nursery() as nursery:
        decoded, fault = await decoding.decode_range(msg, preverify, nursery, verified,
                                                     (CHAIN_ID, lambda height: (pub("A"),)))
    assert fault is None and len(decoded) == HEAD and verified.is_set()
    assert sum(sizes) == 4 + 3 * (HEAD - 1)
    if piece > sum(sizes):
        assert sizes == [sum(sizes)]  # one worker call for the whole range, not one a block
    else:  # at least a piece each, across blocks (one a block would be 4, 3, 3, ...)
        assert all(size >= piece for size in sizes[:-1]) and sizes[-1] > 0
