"""The driver's network over the router (:class:`iomtnode.consensus.reactor.PeerNetwork`):
a broadcast goes to the peers not excluded, and, when ``only`` is given, to those among it;
a proposal goes after the transactions waiting to be pushed."""

from __future__ import annotations

from iomtnode.consensus.messages import ConsensusProposal, ConsensusVote
from iomtnode.consensus.reactor import PeerNetwork

PEERS = [bytes([i]) * 32 for i in range(5)]


class Router:
    def __init__(self) -> None:
        self.reached: list[list[bytes]] = []

    def broadcast(self, msg: object, exclude: object) -> int:
        reached = [p for p in PEERS if p not in exclude]  # type: ignore[operator]
        self.reached.append(reached)
        return len(reached)


def test_a_broadcast_reaches_the_peers_not_excluded_and_among_only():
    router, flushed = Router(), []
    network = PeerNetwork(router, lambda: flushed.append(1), lambda *_: True,  # type: ignore[arg-type]
                          lambda *_: None)
    vote = ConsensusVote(b"v")
    network.broadcast_consensus(vote, exclude=frozenset({PEERS[0]}))
    network.broadcast_consensus(vote, exclude=frozenset({PEERS[0]}),
                                only=frozenset(PEERS[:3]))
    network.broadcast_consensus(vote, only=frozenset({PEERS[4]}))
    assert router.reached == [PEERS[1:], PEERS[1:3], [PEERS[4]]]
    assert flushed == []
    network.broadcast_consensus(ConsensusProposal(b"p", b"h", [], b""))
    assert flushed == [1]


def test_a_peer_past_a_height_is_told_to_block_sync():
    seen: list[tuple[bytes, int]] = []
    network = PeerNetwork(Router(), lambda: None, lambda *_: True,  # type: ignore[arg-type]
                          lambda peer, height: seen.append((peer, height)))
    network.peer_committed(PEERS[1], 7)
    assert seen == [(PEERS[1], 7)]


def test_the_reactor_tells_the_driver_of_each_peer_that_connects():
    """So that the driver sends it its messages of the undecided height (Outbox.send_to)."""
    from types import SimpleNamespace

    from iomtnode.consensus.reactor import ConsensusReactor

    told: list[bytes] = []
    driver = SimpleNamespace(on_message=lambda *_: None, peer_connected=told.append)
    reactor = ConsensusReactor(driver)  # type: ignore[arg-type]
    reactor.connected(SimpleNamespace(node_id=PEERS[2]))  # type: ignore[arg-type]
    reactor.disconnected(SimpleNamespace(node_id=PEERS[3]))  # type: ignore[arg-type]
    assert told == [PEERS[2]]
