"""The router's bookkeeping around a message: a kind that protects its sender from eviction
("useful", see p2p/slots.py; its reactor declares it so when it registers, the router names
no message of another layer) marks the peer only when its reactor took it without a
penalty, whatever the peer's score did meanwhile; a message from a peer already gone makes
no state that would outlive it."""

from __future__ import annotations

import re
import tokenize
from pathlib import Path

import pytest
import trio

from iomtnode.admission.messages import Txs
from iomtnode.p2p.peer import Peer
from iomtnode.p2p.ratelimit import Rate
from iomtnode.sync.messages import GetBlocks

from .test_router import Reactor, eventually, start
from .test_router import routers as two_routers

routers = two_routers  # the fixture, under its name here

pytestmark = pytest.mark.timeout(30)


class Penalizing(Reactor):
    """Takes its time (a reactor may await), then charges the sender ``points`` (0: none)."""

    def __init__(self, router, points: int, seconds: float) -> None:
        super().__init__()
        self._router, self._points, self._seconds = router, points, seconds

    async def receive(self, peer: Peer, msg: object) -> None:
        await trio.sleep(self._seconds)
        if self._points:
            self._router.penalize(peer, self._points, "refused")
        self.received.append((peer.node_id, msg))


@pytest.mark.parametrize("points, useful", [(0, True), (2, False)])
async def test_a_useful_kind_marks_its_sender_only_without_a_penalty(
        routers, nursery, autojump_clock, points, useful):
    a, b = routers
    reactor = Penalizing(b, points, seconds=5.0)
    b.register((Txs,), reactor, useful={Txs: "txs"})
    peer = await start(nursery, a, b)
    await eventually(lambda: b.get(a.host.node_id) is not None)
    sender = b.get(a.host.node_id)
    # an earlier fault: the score is recovering (1 point a second) while the reactor works,
    # by more than the new penalty costs
    b.penalize(sender, 50, "an earlier fault")
    sent_at = trio.current_time()
    peer.send(Txs([b"\x01"]))
    await eventually(lambda: len(reactor.received) == 1)
    assert ("txs" in sender.useful_at) is useful
    if useful:  # when it arrived, not when its reactor was done
        assert sent_at <= sender.useful_at["txs"] < sent_at + 1.0


async def test_a_message_from_a_peer_gone_keeps_no_bucket(routers, nursery, autojump_clock):
    a, b = routers
    reactor = Reactor()
    b.register((GetBlocks,), reactor, rates={GetBlocks: Rate(per_s=1, burst=3)})
    await start(nursery, a, b)
    await eventually(lambda: b.get(a.host.node_id) is not None)
    sender = b.get(a.host.node_id)
    b.disconnect(a.host.node_id, "done")
    assert b.limits.peers == 0
    # its reader had a frame in hand when it was dropped: the message still reaches the router
    await b.on_message(sender, GetBlocks(1, 1))
    assert b.limits.peers == 0 and reactor.received == []


@pytest.mark.parametrize("useful", [{}, {GetBlocks: "blocks"}])
async def test_what_is_useful_is_what_the_reactor_declared(routers, nursery, autojump_clock,
                                                          useful):
    """Not the message's name: a kind is useful as its reactor says, or not at all."""
    a, b = routers
    reactor = Reactor()
    b.register((Txs, GetBlocks), reactor, useful=useful)
    peer = await start(nursery, a, b)
    await eventually(lambda: b.get(a.host.node_id) is not None)
    sender = b.get(a.host.node_id)
    peer.send(Txs([b"\x01"]))
    peer.send(GetBlocks(1, 1))
    await eventually(lambda: len(reactor.received) == 2)
    assert set(sender.useful_at) == set(useful.values())


async def test_a_useful_kind_is_registered_and_delivers_a_known_use(routers):
    _, b = routers
    with pytest.raises(ValueError, match="Txs is useful but not registered here"):
        b.register((GetBlocks,), Reactor(), useful={Txs: "txs"})
    with pytest.raises(ValueError, match="delivers 'gossip'"):
        b.register((Txs,), Reactor(), useful={Txs: "gossip"})
    b.register((Txs, GetBlocks), Reactor())  # a refused registration took no kind


def test_no_module_of_p2p_names_a_message_kind_of_another_layer():
    """p2p knows no message of the layers above it, not even by name in a string (a
    renamed kind would silently stop meaning what p2p took it for); comments aside."""
    import iomtnode.node.services  # noqa: F401 - every layer's message kinds declared
    from iomtnode.p2p import messages
    from iomtnode.p2p.messages import MESSAGE_TYPES

    p2p = Path(messages.__file__).parent
    theirs = {kind.__name__ for kind in MESSAGE_TYPES.values()
              if not kind.__module__.startswith("iomtnode.p2p.")}
    assert theirs  # transactions, blocks, votes...
    named = set()
    for path in sorted(p2p.glob("*.py")):
        with path.open("rb") as source:
            for token in tokenize.tokenize(source.readline):
                if token.type in (tokenize.NAME, tokenize.STRING):
                    named |= {(path.name, name) for name in theirs
                              if re.search(rf"\b{name}\b", token.string)}
    assert named == set()


def test_every_constant_of_the_p2p_messages_is_used_by_p2p():
    """A protocol limit p2p declares is one p2p uses; one that only the layers above use
    belongs to them, or to core when several share it (p2p knows what their messages hold
    as little as what they mean)."""
    from iomtnode.p2p import messages

    p2p = Path(messages.__file__).parent
    constants = {name for name in vars(messages) if re.fullmatch(r"[A-Z][A-Z0-9_]+", name)}
    uses = {name: 0 for name in constants}
    for path in sorted(p2p.glob("*.py")):
        for name in constants:
            uses[name] += len(re.findall(rf"\b{name}\b", path.read_text()))
    # the declaration itself, or its import, is one use
    assert {name for name, count in uses.items() if count < 2} == set()
