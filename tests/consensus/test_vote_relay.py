"""Vote relay (:class:`iomtnode.consensus.relay.VoteRelay`): each vote relayed at once by
its two designated relayers only, a conflicting pair to everyone, and the fallback to the
peers that neither hold a vote nor are past it; in a fully connected network no other
vote is relayed, and in a line of four every node still decides.

Drivers over real chains and the in-test bus of :mod:`tests.consensus.harness`, under
trio's autojump clock. Node A is the one observed, at height 1.
"""

from __future__ import annotations

import itertools

import trio

from iomtnode.consensus.messages import ConsensusVote
from iomtnode.consensus.relay import RELAY_DELAY_S, VOTE_KEYS, VoteRelay
from iomtnode.core.crypto import blake2b256
from iomtnode.core.vote import VoteType, decode_vote, sign_vote

from ..core.helpers import CHAIN_ID, key, pub
from .harness import Cluster, assert_one_chain, cluster, wait_heights, wait_until

BLOCK = blake2b256(b"a block")
NAMES = "ABCD"


def vote(signer: str, vote_type: VoteType, round_: int = 0, height: int = 1,
         block: bytes = BLOCK) -> ConsensusVote:
    return ConsensusVote(sign_vote(key(signer), CHAIN_ID, vote_type, height, round_,
                                   block).encode())


def relayers(height: int, signer: bytes) -> tuple[bytes, bytes]:
    """The designated relayers (R1, R2) of ``signer``'s votes at ``height``."""
    relay = VoteRelay(network=None)  # type: ignore[arg-type]  # computes only
    relay.enter(height, [pub(n) for n in NAMES])
    found = relay.relayers(signer)
    assert found is not None
    return found


def signer_where(role: int | None) -> str:
    """A signer other than A whose votes A relays at height 1 as R1 (0), as R2 (1), or
    not at all (None)."""
    for name in NAMES[1:]:
        designated = relayers(1, pub(name))
        if (role is None and pub("A") not in designated) or (
                role is not None and designated[role] == pub("A")):
            return name
    raise AssertionError(f"no signer with A as {role}")


def relays_of(net: Cluster, sender: str, msg: ConsensusVote) -> list[frozenset[bytes]]:
    """The peers each broadcast of ``msg`` by ``sender`` skipped."""
    return [skip for s, m, skip in net.bus.skipped if s == pub(sender) and m == msg]


def others(*names: str) -> frozenset[bytes]:
    return frozenset(pub(n) for n in names)


async def test_the_designated_relayers_relay_at_once(tmp_path, autojump_clock):
    """As R1, A relays a vote at once to every peer but its signer and the peers that sent
    it (and not again when its fallback is due); as R2, to R1 alone."""
    async with cluster(tmp_path, signed_before=True) as net:
        a = net["A"]
        await net.start("A")
        assert a.driver is not None
        v1, v2 = signer_where(0), signer_where(1)
        first = vote(v1, VoteType.PREVOTE)
        second = vote(v2, VoteType.PREVOTE)
        began = trio.current_time()
        a.driver.on_message(pub(v1), first)
        a.driver.on_message(pub(v2), second)
        await wait_until(lambda: bool(relays_of(net, "A", second)), every=0.01)
        assert trio.current_time() - began < RELAY_DELAY_S
        assert relays_of(net, "A", first) == [others(v1)]
        r1 = relayers(1, pub(v2))[0]
        assert relays_of(net, "A", second) == [others(*NAMES) - {r1}]
        await trio.sleep(2 * RELAY_DELAY_S)  # the fallback: nobody left for the first
        assert all(skip >= others("B", "C", "D") for skip in relays_of(net, "A", first)[1:])


async def test_the_fallback_waits_and_skips_holders_and_peers_past_the_vote(
        tmp_path, autojump_clock):
    """A is not designated for V: V's prevote goes, after the fallback delay, only to the
    peers that neither hold it nor are past it. D's precommit of round 0 says D needs no
    more prevotes of round 0; a copy from another peer says that peer holds it."""
    async with cluster(tmp_path, signed_before=True) as net:
        a = net["A"]
        await net.start("A")
        assert a.driver is not None
        v = signer_where(None)
        copier, other = [n for n in "BCD" if n != v]
        a.driver.on_message(pub(other), vote(other, VoteType.PRECOMMIT))
        prevote = vote(v, VoteType.PREVOTE)
        began = trio.current_time()
        a.driver.on_message(pub(v), prevote)
        a.driver.on_message(pub(copier), prevote)  # a copy
        await wait_until(lambda: bool(relays_of(net, "A", prevote)), every=0.01)
        assert trio.current_time() - began >= RELAY_DELAY_S
        assert relays_of(net, "A", prevote) == [others(v, copier, other)]
        precommit = vote(v, VoteType.PRECOMMIT)  # relayed to A: goes on at once
        began = trio.current_time()
        a.driver.on_message(pub(copier), precommit)
        await wait_until(lambda: bool(relays_of(net, "A", precommit)), every=0.01)
        assert trio.current_time() - began < RELAY_DELAY_S
        assert relays_of(net, "A", precommit) == [others(v, copier)]  # `other` needs it


async def test_a_peer_at_the_next_height_is_sent_nothing_of_this_one(tmp_path,
                                                                    autojump_clock):
    async with cluster(tmp_path, signed_before=True) as net:
        a = net["A"]
        await net.start("A")
        assert a.driver is not None
        v = signer_where(None)
        ahead = next(n for n in "BCD" if n != v)
        a.driver.on_message(pub(ahead), vote(ahead, VoteType.PREVOTE, height=2))
        prevote = vote(v, VoteType.PREVOTE)
        a.driver.on_message(pub(v), prevote)
        await wait_until(lambda: bool(relays_of(net, "A", prevote)), every=0.01)
        assert relays_of(net, "A", prevote) == [others(v, ahead)]


async def test_conflicting_votes_go_to_everyone(tmp_path, autojump_clock):
    """V equivocates: A, not designated for V, hears one vote from V and the other from a
    peer, and sends both at once to every peer not known to hold them."""
    async with cluster(tmp_path, signed_before=True) as net:
        a = net["A"]
        await net.start("A")
        assert a.driver is not None
        v = signer_where(None)
        peer = next(n for n in "BCD" if n != v)
        x = vote(v, VoteType.PREVOTE)
        y = vote(v, VoteType.PREVOTE, block=blake2b256(b"another block"))
        began = trio.current_time()
        a.driver.on_message(pub(v), x)
        a.driver.on_message(pub(peer), y)
        await wait_until(lambda: bool(relays_of(net, "A", y)), every=0.01)
        assert trio.current_time() - began < RELAY_DELAY_S
        assert relays_of(net, "A", x) == [others(v)]
        assert relays_of(net, "A", y) == [others(v, peer)]
        await wait_until(lambda: len(a.reported) == 1)


async def test_in_a_full_mesh_only_the_designated_relayers_relay(tmp_path, autojump_clock):
    """Every authority sends its votes to all, and each vote is relayed by its two
    designated relayers only: about 2 N (N-1) messages per step, not N (N-1)^2."""
    async with cluster(tmp_path) as net:
        await net.start()
        await wait_heights(net.nodes.values(), 5)
        assert_one_chain(net.nodes.values(), net.genesis)
        relayed = [(s, decode_vote(m.vote)) for s, _, m in net.bus.delivered
                   if isinstance(m, ConsensusVote) and decode_vote(m.vote).validator != s]
        assert relayed
        for sender, v in relayed:
            assert sender in relayers(v.height, v.validator), "relayed by another node"
        per_vote = {(s, v.validator, v.height, v.round, v.type) for s, v in relayed}
        assert len(per_vote) <= len(relayed)
        copies = [r for s, r, m in net.bus.delivered if isinstance(m, ConsensusVote)]
        votes = {m.vote for _, _, m in net.bus.delivered if isinstance(m, ConsensusVote)}
        assert len(copies) <= 2 * 3 * len(votes)  # each vote: 3 receivers, twice each


async def test_in_a_line_votes_are_relayed_and_every_node_decides(tmp_path,
                                                                   autojump_clock):
    """A - B - C - D: A decides only with votes of C or D, which reach it by relay."""
    async with cluster(tmp_path) as net:
        line = ["A", "B", "C", "D"]
        net.bus.links = {frozenset((pub(x), pub(y))) for x, y in itertools.pairwise(line)}
        await net.start()
        await wait_heights(net.nodes.values(), 4)
        assert_one_chain(net.nodes.values(), net.genesis)
        heard_by_a = {decode_vote(m.vote).validator for _, r, m in net.bus.delivered
                      if isinstance(m, ConsensusVote) and r == pub("A")}
        assert heard_by_a & others("C", "D")


class Recorder:
    """A network that records broadcasts (the relay's only use of it)."""

    def __init__(self) -> None:
        self.sent: list[tuple[ConsensusVote, frozenset[bytes]]] = []

    def broadcast_consensus(self, msg: ConsensusVote, exclude: frozenset[bytes]) -> None:
        self.sent.append((msg, exclude))


def test_what_the_vote_relay_remembers_of_a_height_is_bounded():
    """An authority voting in round after round cannot grow the relay's memory past
    VOTE_KEYS votes (holders and first votes by round and step)."""
    network = Recorder()
    relay = VoteRelay(network, own=pub("A"))  # type: ignore[arg-type]
    relay.enter(1, [pub(n) for n in NAMES])
    for round_ in range(VOTE_KEYS + 10):
        msg = vote("B", VoteType.PREVOTE, round_=round_)
        relay.relay(blake2b256(msg.vote), msg, decode_vote(msg.vote), pub("C"))
    assert len(relay._holders) == VOTE_KEYS and len(relay._first) == VOTE_KEYS
    assert len(network.sent) == VOTE_KEYS + 10  # each relayed once, at once (from C)
