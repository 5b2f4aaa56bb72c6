"""A catch-up checks each block's certificate before it decodes the block's transactions:
a range holding a block with a made-up certificate costs its server and none of that
block's signatures; a certificate made by an authority voted in inside the ranges ahead
(not known when the range was decoded) cuts the range there, and the blocks from it are
asked again, without blame, once the vote is applied.

Under a virtual clock, verification inline; peers as in ``test_unserved_claims``."""

from __future__ import annotations

from pathlib import Path

import pytest

import iomtnode.core.vote as vote_module
from iomtnode.chain.chain import Chain
from iomtnode.core.block import Block, Commit, InvalidCommitError, sign_commit
from iomtnode.core.tx import AuthorityVote, sign_tx
from iomtnode.p2p import score
from iomtnode.store import BlockStore
from iomtnode.sync.decoding import CertificateCut

from ..admission.chainkit import (
    CHAIN_ID,
    DEVICES,
    GENESIS,
    T0,
    reading,
    seal_unchecked,
    source_chain,
)
from ..core.helpers import key, pub
from ..core.sealkit import admit, announce
from .test_unserved_claims import HEAD, A, B, FakePeer, L, follower, sync_to_head

VOTE_AT = 2  # the block whose vote adds authority "B" (it certifies from VOTE_AT + 2 on)


def items_of(blocks: list[tuple[Block, Commit]]) -> dict[int, list[bytes]]:
    return {b.height: [b.encode(), c.encode()] for b, c in blocks}


def voted_chain(path: Path) -> list[tuple[Block, Commit]]:
    """Blocks 1..HEAD of a chain that starts with authority A, votes in "B" in block
    VOTE_AT, and from then on is certified by whoever its authorities are."""
    chain = Chain(BlockStore.open(path), GENESIS)
    made = []
    for height in range(1, HEAD + 1):
        if height == 1:
            txs = [*(admit(key("A"), pub(d), pub("P"), CHAIN_ID) for d in DEVICES),
                   announce(key("P"), CHAIN_ID)]
        else:
            txs = [reading(d, height) for d in DEVICES]
        if height == VOTE_AT:
            txs.append(sign_tx(AuthorityVote(pub("A"), pub("B"), True, 0), key("A"), CHAIN_ID))
        signers = [key(n) for n in "AB" if pub(n) in chain.next_authorities()]
        built = chain.build(txs, pub("A"), T0 + 1000 * height)
        assert not built.rejected, built.rejected
        commit = sign_commit(signers, CHAIN_ID, height, 0, built.block.hash)
        chain.commit(built, commit)
        made.append((built.block, commit))
    assert len(made[-1][1].signatures) == 2  # B certifies the last blocks
    return made


async def test_a_made_up_certificate_costs_its_server_and_no_signature_of_its_block(
        tmp_path, autojump_clock, monkeypatch):
    _, honest = source_chain(tmp_path / "honest", HEAD - 1, 3)
    items = items_of(honest)
    base, _ = source_chain(tmp_path / "lie", 0, 3)  # block 1, as the honest one
    block, _ = seal_unchecked(base, tuple(reading("d1", seq) for seq in range(100, 150)))
    made_up = sign_commit([key("Z")], CHAIN_ID, block.height, 0, block.hash)
    liar = FakePeer(L, {1: items[1], 2: [block.encode(), made_up.encode()]})
    peers = [liar, FakePeer(A, items), FakePeer(B, items)]
    sync, host = follower(tmp_path / "follower", peers)
    checked: set[bytes] = set()
    verify = sync.signatures.verify

    async def recording(piece, into) -> None:
        checked.update(tx.id for tx in piece)
        await verify(piece, into)

    monkeypatch.setattr(sync.signatures, "verify", recording)
    await sync_to_head(sync, peers)
    [(who, points, why)] = host.penalties
    assert (who, points) == (L, score.INVALID_BLOCK) and "is not an authority" in why
    assert not checked & {tx.id for tx in block.txs}  # none of the 50 was verified
    assert sync._chain.block_at(2).hash == honest[1][0].hash


async def test_authorities_voted_in_inside_the_ranges_ahead_cut_a_range_without_blame(
        tmp_path, autojump_clock):
    items = items_of(voted_chain(tmp_path / "source"))
    peers = [FakePeer(A, items), FakePeer(B, items)]
    sync, host = follower(tmp_path / "follower", peers)
    await sync_to_head(sync, peers)
    assert host.penalties == []
    assert pub("B") in sync._chain.authorities()
    # the first range (1..) was decoded knowing only A: it was cut at the first block B
    # certified, and that block asked for again
    cut = VOTE_AT + 2
    asked = [(start, count) for peer in peers for start, count in peer.asked]
    assert sum(start <= cut < start + count for start, count in asked) == 2, asked


def test_a_cut_is_a_forgery_only_at_the_next_height_under_the_same_authorities():
    cut = CertificateCut(5, (pub("A"),), "1 of 1 authorities signed")
    assert cut.forged(4, lambda height: (pub("A"),))
    assert not cut.forged(4, lambda height: (pub("A"), pub("B")))  # a vote applied since
    assert not cut.forged(2, lambda height: (pub("A"),))  # blocks before it not applied


def test_a_pass_is_remembered_for_its_authorities_and_chain_only(monkeypatch):
    commit = sign_commit([key("A")], CHAIN_ID, 3, 0, bytes(32))
    calls = []
    real = vote_module.verify
    monkeypatch.setattr(vote_module, "verify", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(vote_module, "_passed_precommits", vote_module.OrderedDict())
    commit.verify((pub("A"),), CHAIN_ID)
    commit.verify((pub("A"),), CHAIN_ID)
    assert len(calls) == 1
    with pytest.raises(InvalidCommitError, match="1 of 2 authorities signed"):
        commit.verify((pub("A"), pub("B")), CHAIN_ID)
    with pytest.raises(InvalidCommitError, match="bad precommit signature"):
        commit.verify((pub("A"),), "another-chain")


async def test_a_block_out_of_its_place_in_a_range_costs_its_server(tmp_path, autojump_clock):
    """A served block whose height is not its place in the range (from the request's start,
    one by one) is refused as such: with a made-up certificate it was a cut that was no
    forgery (not the next height), so a server could skip blocks with made-up ones for
    ever, at no cost."""
    _, honest = source_chain(tmp_path / "honest", HEAD - 1, 3)
    items = items_of(honest)
    base, _ = source_chain(tmp_path / "lie", 1, 3)  # blocks 1 and 2, as the honest ones
    block, _ = seal_unchecked(base, tuple(reading("d1", seq) for seq in range(100, 150)))
    made_up = sign_commit([key("Z")], CHAIN_ID, block.height, 0, block.hash)
    liar = FakePeer(L, {1: items[1], 3: [block.encode(), made_up.encode()]})  # 2 left out
    peers = [liar, FakePeer(A, items), FakePeer(B, items)]
    sync, host = follower(tmp_path / "follower", peers)
    await sync_to_head(sync, peers)
    [(who, points, why)] = host.penalties
    assert (who, points) == (L, score.INVALID_BLOCK) and "block 3" in why, why
    assert sync._chain.block_at(3).hash == honest[2][0].hash
