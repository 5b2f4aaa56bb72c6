"""Finding 3, a lying sync peer: a peer that announces ``Status(2^64-1)`` (or a height just
ahead of the honest head) and never answers ``GetBlocks``, or answers with garbage, cannot
stall a node that joins the network.

In process, on the memory network under a virtual clock: node 0 (the authority) and node 1
run; the liar (a p2p router whose only reactor lies) connects to both; then node 2 joins
with all three as bootnodes. Node 2 catches up to the honest head within a bounded virtual
time, penalises the liar, is asked nothing more of it while its unserved claim is ignored,
keeps its honest peers, and the network keeps finalizing."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import trio

from iomtnode.core.crypto import SigningKey
from iomtnode.p2p.messages import MESSAGE_TYPES, Auth, GetPeers, Hello, PeerRecords
from iomtnode.p2p.peer import Peer
from iomtnode.p2p.router import Router
from iomtnode.store import BlockStore
from iomtnode.sync.blocksync import REQUEST_TIMEOUT_S
from iomtnode.sync.messages import Blocks, GetBlocks, Status
from iomtnode.sync.planner import UNSERVED_IGNORED_S

from ..node.harness import Net

pytestmark = pytest.mark.timeout(120)

HUGE = 2**64 - 1
LEAD = 5  # blocks the "plausible" liar claims beyond the highest head it heard of
ANNOUNCE_EVERY_S = 1.0


class Liar:
    """The liar's reactor for every message kind: it claims a height it does not have
    (``HUGE``, or ``LEAD`` beyond the honest head it hears of) on connect and every second,
    and answers ``GetBlocks`` with nothing (``"silent"``) or an undecodable block
    (``"garbage"``). Counts the requests each peer sent it."""

    def __init__(self, claim: str, answer: str) -> None:
        self.claim, self.answer = claim, answer
        self.heard = 0  # the highest honest head heard of
        self.asked: dict[bytes, int] = {}

    def height(self) -> int:
        return HUGE if self.claim == "huge" else self.heard + LEAD

    async def receive(self, peer: Peer, msg: Any) -> None:
        match msg:
            case Status():
                self.heard = max(self.heard, msg.height)
            case GetBlocks():
                self.asked[peer.node_id] = self.asked.get(peer.node_id, 0) + 1
                if self.answer == "garbage":
                    peer.send(Blocks(msg.start, [[b"\x93junk", b"\x93junk"]]))

    def connected(self, peer: Peer) -> None:
        peer.send(Status(self.height(), bytes(32)))

    def disconnected(self, peer: Peer) -> None:
        pass


async def run_liar(net: Net, liar: Liar, key: SigningKey, tmp_path, nursery: trio.Nursery,
                   bootnodes: tuple[str, ...]) -> Router:
    """The liar's p2p router, on ``net``'s memory network, dialing ``bootnodes``."""
    store = BlockStore.open(tmp_path / "liar")
    genesis = net.genesis
    router = Router(replace(net.config, bootnodes=bootnodes), key, store,
                    genesis.chain_id, genesis.hash, lambda: (liar.height(), bytes(32)),
                    transport=net.network.transport("10.0.0.66"), now_ms=net.now_ms)
    kinds = [k for k in MESSAGE_TYPES.values()
             if k not in (Hello, Auth, PeerRecords, GetPeers)]
    router.register(kinds, liar)
    await nursery.start(router.run)

    async def announce() -> None:
        while True:
            await trio.sleep(ANNOUNCE_EVERY_S)
            router.broadcast(Status(liar.height(), bytes(32)))

    nursery.start_soon(announce)
    return router


@pytest.mark.parametrize("claim, answer, bound_s", [
    ("huge", "silent", 5.0),  # beyond the chain's age: never chased before the honest head
    ("huge", "garbage", 5.0),
    ("plausible", "silent", REQUEST_TIMEOUT_S + 5.0),  # asked once, then re-assigned
    ("plausible", "garbage", 5.0),
])
async def test_a_lying_sync_peer_cannot_stall_a_joining_node(
        tmp_path, nursery, autojump_clock, claim, answer, bound_s):
    net = Net(tmp_path, 3)
    await net.start(nursery, 0)
    await net.start(nursery, 1, (net.p2p(0),))
    await net.wait_height(11)
    liar = Liar(claim, answer)
    key = SigningKey.generate()
    liar_id = key.public
    router = await run_liar(net, liar, key, tmp_path, nursery, (net.p2p(0), net.p2p(1)))
    await net.wait(lambda: len(router.peers()) == 2, "the liar connected to 0 and 1")

    joined = trio.current_time()
    node = await net.start(nursery, 2, (router.address, net.p2p(0), net.p2p(1)))  # liar first
    honest = [net.keys[0].public, net.keys[1].public]
    await net.wait(lambda: node.p2p.host.get(liar_id) is not None, "the liar connected to 2")
    head = net.node(0).chain.height
    await net.wait(lambda: node.chain.height >= head, f"node 2 at the honest head {head}",
                   timeout=bound_s)
    assert trio.current_time() - joined <= bound_s + 1

    scoreboard = node.p2p.host.scoreboard
    await net.wait(lambda: scoreboard.score(liar_id, trio.current_time()) < 0,
                   "the liar penalised", timeout=REQUEST_TIMEOUT_S + 5)
    asked = liar.asked.get(net.keys[2].public, 0)
    assert asked >= 1
    # the liar keeps announcing; its claim is not believed again for a while
    height = net.node(0).chain.height
    await trio.sleep(UNSERVED_IGNORED_S - REQUEST_TIMEOUT_S - 5)
    assert liar.asked.get(net.keys[2].public, 0) == asked
    assert all(node.p2p.host.get(peer) is not None for peer in honest), "honest peer dropped"
    await net.wait_height(height + 3, [net.node(0), net.node(1), node])  # still finalizing
    assert net.same_chain()
