"""One engine for every chain: a one-authority chain runs the same BFT driver, so it makes
blocks promptly, and once it votes in a second authority its blocks carry 2-of-2
certificates that a follower accepts (real nodes: LevelDB, on an in-memory network under a
virtual clock)."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from iomtnode.consensus.signing import SIGNING_STATE_FILE, Signer, SigningStateFile
from iomtnode.core.crypto import SigningKey
from iomtnode.core.tx import AuthorityVote, sign_tx
from iomtnode.home import init_home
from iomtnode.node import Node

from .harness import FAST, Net, holds_for
from .test_bft import BFT

pytestmark = pytest.mark.timeout(90)

CHAIN = "iomt-one"


def one_authority(tmp_path: Path, n: int = 1) -> Net:
    """Node 0 is the chain's one authority; the others are not (yet)."""
    return Net(tmp_path, n, chain_id=CHAIN, authorities=1, config=BFT, params=FAST)


def test_init_writes_the_keys_initial_signing_state(tmp_path):
    """So a home without one has lost it; a key moved in (signed_before) gets none, and a
    record names its key: another key finds no record of its own."""
    key = SigningKey.generate()
    home = init_home(tmp_path / "a", chain_id=CHAIN, key=key)
    store = SigningStateFile(home.path / SIGNING_STATE_FILE)
    assert not Signer(key, CHAIN, store).fresh
    assert Signer(SigningKey.generate(), CHAIN, store).fresh  # a key copied in by hand
    moved = init_home(tmp_path / "b", chain_id=CHAIN, key=key, signed_before=True)
    assert not (moved.path / SIGNING_STATE_FILE).exists()


async def test_one_authority_makes_blocks_promptly(tmp_path, nursery, autojump_clock):
    net = one_authority(tmp_path)
    node = await net.start(nursery, 0)
    assert node.chain is not None and node.consensus is not None
    began = trio.current_time()
    await net.wait(lambda: node.chain.height >= 3, "three blocks", timeout=10)
    # empty blocks every 0.3 s: no grace period, no round timeouts on the way
    assert trio.current_time() - began < 3
    assert node.consensus.signing_floor == 0


@pytest.mark.parametrize("b_home", ["new", "imported_key"])
async def test_a_one_authority_chain_votes_in_a_second_and_certifies_two_of_two(
        tmp_path, nursery, autojump_clock, b_home):
    """``imported_key``: B's home was made from an existing key (``init --key-file`` with
    the genesis, as a pod's is), so it has no signing state and defers: with a floor of
    K + 2 the chain stalled for good at the height B joined (2 of 2 needed, B not
    signing); the floor is K with two or three authorities (fresh.py)."""
    net = one_authority(tmp_path, 3)  # a, b and c (a follower)
    a, b = net.keys[:2]
    if b_home == "imported_key":
        net.homes[1] = init_home(tmp_path / "node1-imported", genesis=net.genesis, key=b,
                                 config=net.config, signed_before=True)
    node_a = await net.start(nursery, 0)
    for i in (1, 2):
        await net.start(nursery, i, (net.p2p(0),))
    await net.wait(lambda: len(node_a.p2p.host.peers()) == 2, "B and C connected")

    await node_a.admission.submit(sign_tx(AuthorityVote(a.public, b.public, True, 0), a, CHAIN).raw)
    chain_a = node_a.chain
    await net.wait(lambda: chain_a.authorities() == (a.public, b.public), "B voted in")
    joined = chain_a.height
    await net.wait_height(joined + 4)
    for h in range(joined + 2, joined + 4):  # certified by the new set: both sign each
        commit = chain_a.commit_at(h)
        assert commit is not None
        assert {k for k, _ in commit.signatures} == {a.public, b.public}, h
        assert {n.chain.block_at(h).hash for n in net.live()} == {chain_a.block_at(h).hash}


async def wiped_lone_authority(tmp_path, nursery) -> Net:
    """A one-authority chain (node 0) with a follower (node 1), four blocks on; the
    authority stopped, its data/ wiped (its home's signing state and write-ahead record
    stay)."""
    net = one_authority(tmp_path, 2)
    await net.start(nursery, 0)
    follower = await net.start(nursery, 1, (net.p2p(0),))
    await net.wait(lambda: follower.chain.height >= 4, "the follower at height 4")
    await net.stop(0)
    shutil.rmtree(net.homes[0].data_path)
    net.homes[0].data_path.mkdir()
    return net


async def test_a_lone_authority_resyncing_from_empty_data_never_signs_a_final_height(
        tmp_path, nursery, autojump_clock):
    """The documented recovery from a damaged chain: wipe data/ and sync again. The home's
    signing state stays (it lives outside data/): the authority, at head 0, signs nothing
    at or below the height it recorded (there the blocks are final already) and waits
    for sync."""
    net = await wiped_lone_authority(tmp_path, nursery)
    await net.stop(1)
    alone = await net.start(nursery, 0)  # no peers
    assert alone.chain is not None and alone.consensus is not None
    # five empty-block intervals: a sealer would have sealed block 1
    await holds_for(lambda: alone.chain.height == 0, 1.5, "a block sealed alone")
    assert alone.consensus.machine is not None and alone.consensus.machine.height == 1


async def test_a_lone_authority_with_empty_data_goes_on_from_its_followers_chain(
        tmp_path, nursery, autojump_clock):
    net = await wiped_lone_authority(tmp_path, nursery)
    follower = net.node(1)
    head = follower.chain.height
    before = [follower.chain.block_at(h).hash for h in range(1, head + 1)]
    again = await net.start(nursery, 0, (net.p2p(1),))
    await net.wait_height(head + 3)
    assert [again.chain.block_at(h).hash for h in range(1, head + 1)] == before
    assert [follower.chain.block_at(h).hash for h in range(1, head + 4)] == [
        again.chain.block_at(h).hash for h in range(1, head + 4)]


@contextlib.asynccontextmanager
async def running(net: Net) -> AsyncIterator[Node]:
    """Node 0 while the block runs; stopped (its store closed) after."""
    async with trio.open_nursery() as nursery:
        node = await net.start(nursery, 0)
        yield node
        await net.stop(0)


async def test_a_lone_authority_without_its_signing_state_waits_to_be_resumed_by_hand(
        tmp_path, autojump_clock):
    net = one_authority(tmp_path)
    home = net.homes[0]
    async with running(net) as node:
        await net.wait(lambda: node.chain.height >= 3, "three blocks")
    (home.path / SIGNING_STATE_FILE).unlink()  # lost, no backup
    async with running(net) as node:
        assert node.chain is not None and node.consensus is not None
        head = node.chain.height
        # five empty-block intervals
        await holds_for(lambda: node.chain.height == head, 1.5, "a block without the state")
        assert node.consensus.signing_floor is None

    # real processes, while no node runs: no deadline here (a virtual clock would jump to
    # it while the process runs); the test's own timeout bounds them
    resume = [str(Path(sys.executable).parent / "iomtnode"), "authority", "resume-signing",
              "--home", str(home.path), "--above", str(head)]
    assert (await trio.run_process(resume, capture_stdout=True)).returncode == 0
    refused = await trio.run_process(resume, check=False, capture_stderr=True)
    assert refused.returncode != 0  # the record exists now
    assert b"holds this key's signing state" in refused.stderr
    async with running(net) as node:
        await net.wait(lambda: node.chain.height >= head + 2, "blocks above the height given")
