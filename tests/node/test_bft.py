"""Four authorities in one process (real nodes: LevelDB, websockets on loopback, real time):
blocks are proposed in turn and final with a quorum (3 of 4) of precommits."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from iomtnode.client import open_client
from iomtnode.config import Config
from iomtnode.consensus.machine import Params
from iomtnode.core.crypto import SigningKey
from iomtnode.core.genesis import Genesis
from iomtnode.core.tx import AdmitDevice, Reading, sign_tx
from iomtnode.home import init_home
from iomtnode.node import Node

pytestmark = pytest.mark.timeout(90)

CHAIN = "iomt-bft"
BASE = Config(api_listen="127.0.0.1:0", p2p_listen="127.0.0.1:0", block_interval_s=0.05,
              empty_block_interval_s=0.3)
FAST = Params(timeout_propose_s=0.3, timeout_prevote_s=0.2, timeout_precommit_s=0.2,
              timeout_delta_s=0.1, timeout_cap_s=1.0)


class Net:
    """Authorities 0..n-1, each a node with its own home; nodes can be stopped and started."""

    def __init__(self, tmp: Path, n: int) -> None:
        self.keys = [SigningKey.generate() for _ in range(n)]
        self.genesis = Genesis(CHAIN, int(time.time() * 1000),
                               tuple(k.public for k in self.keys), 1)
        self.homes = [init_home(tmp / f"node{i}", genesis=self.genesis, key=k, config=BASE)
                      for i, k in enumerate(self.keys)]
        self.nodes: list[Node | None] = [None] * n
        self.urls = [""] * n
        self._scopes: list[trio.CancelScope | None] = [None] * n
        self._stopped: list[trio.Event | None] = [None] * n

    async def start(self, nursery: trio.Nursery, i: int, bootnodes: tuple[str, ...]) -> Node:
        node = Node(self.homes[i], replace(BASE, bootnodes=bootnodes), consensus_params=FAST)
        scope, stopped = trio.CancelScope(), trio.Event()

        async def run(*, task_status=trio.TASK_STATUS_IGNORED):
            try:
                with scope:
                    await node.run(task_status=task_status)
            finally:
                stopped.set()

        info = await nursery.start(run)
        self.nodes[i], self._scopes[i], self._stopped[i] = node, scope, stopped
        self.urls[i] = f"ws://127.0.0.1:{info.api_port}/api/v1"
        return node

    async def stop(self, i: int) -> None:
        """Cancel node ``i`` and wait until its store is closed."""
        scope, stopped = self._scopes[i], self._stopped[i]
        assert scope is not None and stopped is not None
        scope.cancel()
        with trio.fail_after(10):
            await stopped.wait()
        self.nodes[i] = None

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n is not None]

    def node(self, i: int) -> Node:
        node = self.nodes[i]
        assert node is not None and node.chain is not None
        return node

    async def wait(self, predicate, what: str, timeout: float = 30) -> None:
        """Re-check ``predicate`` (state spread over several nodes) until it holds."""
        try:
            with trio.fail_after(timeout):
                while not predicate():  # noqa: ASYNC110 - a condition over many nodes
                    await trio.sleep(0.02)
        except trio.TooSlowError:
            heights = [n.chain.height if n and n.chain else None for n in self.nodes]
            raise AssertionError(f"not within {timeout} s: {what} (heights {heights})") from None

    async def wait_height(self, height: int, nodes: list[Node] | None = None) -> None:
        nodes = self.live() if nodes is None else nodes
        await self.wait(lambda: all(n.chain.height >= height for n in nodes),
                        f"height {height}")

    def same_chain(self) -> bool:
        """Every live node has the same block at every height they all have."""
        upto = min(n.chain.height for n in self.live())
        hashes = {tuple(n.chain.block_at(h).hash for h in range(upto + 1)) for n in self.live()}
        return len(hashes) == 1


async def start_net(tmp_path: Path, nursery: trio.Nursery, n: int = 4) -> Net:
    net = Net(tmp_path, n)
    await net.start(nursery, 0, ())
    for i in range(1, n):
        await net.start(nursery, i, (net.node(0).p2p.address,))
    await net.wait(lambda: all(len(node.p2p.host.peers()) == n - 1 for node in net.live()),
                   "full mesh")
    return net


def heights(net: Net) -> list[int]:
    return [n.chain.height for n in net.live()]


async def test_four_authorities_finalize_readings_in_turn(tmp_path, nursery):
    net = await start_net(tmp_path, nursery)
    device, authority = SigningKey.generate(), net.keys[0]
    admit = sign_tx(AdmitDevice(authority.public, device.public, device.public, "wearable",
                                "acme"), authority, CHAIN)
    async with open_client(net.urls[1]) as client:
        start = (await client.call("status"))["finalized_height"]
        await client.call("submit_tx", tx=admit.raw.hex())
        await net.wait(lambda: all(n.chain.device(device.public) for n in net.live()),
                       "admitted")
        now = int(time.time() * 1000)
        txs = [sign_tx(Reading(device.public, seq, now, "spo2", b"\x02" * 48, b""), device,
                       CHAIN).raw.hex() for seq in range(1, 31)]
        result = await client.call("submit_readings", txs=txs)
        assert result["accepted"] == 30
        last = bytes.fromhex(result["results"][-1]["id"])
        await net.wait(lambda: all(n.chain.store.tx_location(last) for n in net.live()),
                       "every reading final everywhere")
        status = await client.call("status")
    assert status["finalized_height"] > start
    await net.wait_height(5)
    assert net.same_chain()
    chain = net.node(0).chain
    proposers = {chain.block_at(h).header.proposer for h in range(1, chain.height + 1)}
    assert len(proposers) >= 3  # in turn, not one sealer
    for h in range(1, chain.height + 1):
        commit = chain.commit_at(h)
        assert commit is not None and len(commit.signatures) >= 3
    for node in net.live():
        assert not node.p2p.host.scoreboard.penalties, node.p2p.host.scoreboard.penalties
        assert node.consensus is not None and not node.consensus.evidence
        # each signature checked once per node, however the transaction reached it (push,
        # proposal, block): the admission and the 30 readings
        assert node.mempool is not None and node.mempool.verifier.verified_count == 31


async def test_three_of_four_go_on_two_of_four_stop_then_resume(tmp_path, nursery):
    net = await start_net(tmp_path, nursery)
    await net.wait_height(2)
    await net.stop(3)  # one of four down: 3 is still a quorum
    h = max(heights(net))
    await net.wait_height(h + 4)
    assert net.same_chain()

    await net.stop(2)  # two of four down: no quorum, no block
    stuck = max(heights(net))
    await trio.sleep(2.0)
    assert max(heights(net)) <= stuck + 1  # at most one decided as 2 went down

    for i in (2, 3):
        await net.start(nursery, i, (net.node(0).p2p.address,))
    top = max(heights(net))
    await net.wait_height(top + 3)
    assert net.same_chain()
    for node in net.live():
        assert node.consensus is not None and not node.consensus.evidence


async def test_an_equivocation_goes_on_every_ledger(tmp_path, nursery):
    from iomtnode.consensus.messages import ConsensusVote
    from iomtnode.core.vote import VoteType, sign_vote

    net = await start_net(tmp_path, nursery)
    await net.wait_height(2)
    culprit, target = net.keys[3], net.node(0)
    height = target.chain.height + 2  # kept if it is the next height, checked if current
    for block_hash in (b"\x01" * 32, b"\x02" * 32):
        vote = sign_vote(culprit, CHAIN, VoteType.PREVOTE, height, 0, block_hash)
        target.consensus.on_message(culprit.public, ConsensusVote(vote.encode()))
    await net.wait(lambda: all(n.chain.evidence() for n in net.live()),
                   "evidence on every node's ledger")
    [record] = target.chain.evidence()  # one record, however many authorities reported
    assert record["authority"] == culprit.public.hex() and record["height"] == height
    assert record["type"] == "prevote" and record["round"] == 0
    assert record["reporter"] in {k.public.hex() for k in net.keys[:3]}
    for node in net.live():
        await net.wait(lambda n=node: n.chain.evidence() == [record], "the same record")
    async with open_client(net.urls[2]) as client:
        status = await client.call("status")
        report = await client.call("get_authorities")
    assert status["authorities_with_evidence"] == [culprit.public.hex()]
    assert [a["evidence"] for a in report["authorities"]] == [False, False, False, True]
    assert net.same_chain()
