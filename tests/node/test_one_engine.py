"""One engine for every chain: a one-authority chain runs the same BFT driver, so it makes
blocks promptly, and once it votes in a second authority its blocks carry 2-of-2
certificates that a follower accepts (real nodes: LevelDB, websockets on loopback)."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from iomtnode.consensus.signing import SIGNING_STATE_FILE, Signer, SigningStateFile
from iomtnode.core.crypto import SigningKey
from iomtnode.core.genesis import Genesis
from iomtnode.core.tx import AuthorityVote, sign_tx
from iomtnode.home import Home, init_home
from iomtnode.node import Node

from .test_bft import BASE, FAST

pytestmark = pytest.mark.timeout(90)

CHAIN = "iomt-one"


async def start(nursery: trio.Nursery, node: Node) -> Node:
    await nursery.start(node.run)
    return node


async def wait(predicate, what: str, timeout: float = 30) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - a condition over several nodes
            await trio.sleep(0.02)


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


async def test_one_authority_makes_blocks_promptly(tmp_path, nursery):
    home = init_home(tmp_path / "a", chain_id=CHAIN, config=BASE)
    node = await start(nursery, Node(home, BASE, consensus_params=FAST))
    assert node.chain is not None and node.consensus is not None
    began = trio.current_time()
    await wait(lambda: node.chain.height >= 3, "three blocks", timeout=10)
    # empty blocks every 0.3 s: no grace period, no round timeouts on the way
    assert trio.current_time() - began < 3
    assert node.consensus.signing_floor == 0


async def test_a_one_authority_chain_votes_in_a_second_and_certifies_two_of_two(
        tmp_path, nursery):
    a, b, c = (SigningKey.generate() for _ in range(3))
    genesis = Genesis(CHAIN, int(time.time() * 1000), (a.public,), 1)
    homes = [init_home(tmp_path / name, genesis=genesis, key=k, config=BASE)
             for name, k in (("a", a), ("b", b), ("c", c))]
    node_a = await start(nursery, Node(homes[0], BASE, consensus_params=FAST))
    assert node_a.chain is not None and node_a.p2p is not None
    boot = replace(BASE, bootnodes=(node_a.p2p.address,))
    node_b = await start(nursery, Node(homes[1], boot, consensus_params=FAST))
    node_c = await start(nursery, Node(homes[2], boot, consensus_params=FAST))  # a follower
    await wait(lambda: len(node_a.p2p.host.peers()) == 2, "B and C connected")

    await node_a.submit(sign_tx(AuthorityVote(a.public, b.public, True, 0), a, CHAIN).raw)
    chain_a = node_a.chain
    await wait(lambda: chain_a.authorities() == (a.public, b.public), "B voted in")
    joined = chain_a.height
    await wait(lambda: all(n.chain is not None and n.chain.height >= joined + 4
                           for n in (node_a, node_b, node_c)), "four blocks after")
    for h in range(joined + 2, joined + 4):  # certified by the new set: both sign each
        commit = chain_a.commit_at(h)
        assert commit is not None
        assert {k for k, _ in commit.signatures} == {a.public, b.public}, h
        assert {n.chain.block_at(h).hash for n in (node_a, node_b, node_c)
                if n.chain is not None} == {chain_a.block_at(h).hash}


async def wiped_lone_authority(tmp_path, nursery) -> tuple[Home, Node]:
    """A one-authority chain with a follower, four blocks on; the authority stopped, its
    data/ wiped (its home's signing state and write-ahead record stay). Returns its home
    and the running follower."""
    a, c = SigningKey.generate(), SigningKey.generate()
    genesis = Genesis(CHAIN, int(time.time() * 1000), (a.public,), 1)
    home_a, home_c = (init_home(tmp_path / name, genesis=genesis, key=k, config=BASE)
                      for name, k in (("a", a), ("c", c)))
    scope, stopped = trio.CancelScope(), trio.Event()
    first = Node(home_a, BASE, consensus_params=FAST)

    async def run_first(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            with scope:
                await first.run(task_status=task_status)
        finally:
            stopped.set()

    await nursery.start(run_first)
    assert first.p2p is not None
    follower = await start(nursery, Node(home_c, replace(BASE, bootnodes=(first.p2p.address,)),
                                         consensus_params=FAST))
    await wait(lambda: follower.chain is not None and follower.chain.height >= 4,
               "the follower at height 4")
    scope.cancel()
    with trio.fail_after(10):
        await stopped.wait()
    shutil.rmtree(home_a.data_path)
    home_a.data_path.mkdir()
    return home_a, follower


async def test_a_lone_authority_resyncing_from_empty_data_never_signs_a_final_height(
        tmp_path, nursery):
    """The documented recovery from a damaged chain: wipe data/ and sync again. The home's
    signing state stays (it lives outside data/): the authority, at head 0, signs nothing
    at or below the height it recorded (there the blocks are final already) and waits
    for sync."""
    home_a, _ = await wiped_lone_authority(tmp_path, nursery)
    alone = await start(nursery, Node(home_a, BASE, consensus_params=FAST))  # no peers
    assert alone.chain is not None and alone.consensus is not None
    await trio.sleep(1.5)  # five empty-block intervals: a sealer would have sealed block 1
    assert alone.chain.height == 0 and alone.consensus.machine is not None
    assert alone.consensus.machine.height == 1


async def test_a_lone_authority_with_empty_data_goes_on_from_its_followers_chain(
        tmp_path, nursery):
    home_a, follower = await wiped_lone_authority(tmp_path, nursery)
    assert follower.chain is not None and follower.p2p is not None
    head = follower.chain.height
    before = [follower.chain.block_at(h).hash for h in range(1, head + 1)]
    again = await start(nursery, Node(home_a, replace(
        BASE, bootnodes=(follower.p2p.address,)), consensus_params=FAST))
    assert again.chain is not None
    await wait(lambda: again.chain.height >= head + 3 and follower.chain.height >= head + 3,
               "three blocks more, on both")
    assert [again.chain.block_at(h).hash for h in range(1, head + 1)] == before
    assert [follower.chain.block_at(h).hash for h in range(1, head + 4)] == [
        again.chain.block_at(h).hash for h in range(1, head + 4)]


@contextlib.asynccontextmanager
async def running(home: Home) -> AsyncIterator[Node]:
    """A node of ``home`` while the block runs; stopped (its store closed) after."""
    async with trio.open_nursery() as nursery:
        node = Node(home, BASE, consensus_params=FAST)
        await nursery.start(node.run)
        yield node
        nursery.cancel_scope.cancel()


async def test_a_lone_authority_without_its_signing_state_waits_to_be_resumed_by_hand(
        tmp_path):
    home = init_home(tmp_path / "a", chain_id=CHAIN, config=BASE)
    async with running(home) as node:
        await wait(lambda: node.chain is not None and node.chain.height >= 3, "three blocks")
    (home.path / SIGNING_STATE_FILE).unlink()  # lost, no backup
    async with running(home) as node:
        assert node.chain is not None and node.consensus is not None
        head = node.chain.height
        await trio.sleep(1.5)  # five empty-block intervals
        assert node.chain.height == head and node.consensus.signing_floor is None

    resume = [str(Path(sys.executable).parent / "iomtnode"), "authority", "resume-signing",
              "--home", str(home.path), "--above", str(head)]
    with trio.fail_after(30):
        assert (await trio.run_process(resume, capture_stdout=True)).returncode == 0
        refused = await trio.run_process(resume, check=False, capture_stderr=True)
    assert refused.returncode != 0  # the record exists now
    assert b"holds this key's signing state" in refused.stderr
    async with running(home) as node:
        await wait(lambda: node.chain is not None and node.chain.height >= head + 2,
                   "blocks above the height given")
