"""Vote relay (:class:`iomtnode.consensus.relay.VoteRelay`): each vote sent at once to its
two designated relayers and relayed by the first to all; a conflicting pair to everyone,
once; the fallback to the peers that neither hold a vote nor need it no more; in a fully
connected network nothing else is relayed; an authority that sends conflicting votes to
two nodes that are not its relayers is still named by every node; bounds.

Drivers over real chains and the in-test bus of :mod:`tests.consensus.harness`, under
trio's autojump clock. Node A is the one observed, at height 1.
"""

from __future__ import annotations

import itertools

import trio

from iomtnode.consensus.messages import ConsensusVote
from iomtnode.consensus.relay import (
    VOTE_FALLBACK_DELAY_S,
    VOTE_KEYS,
    VOTES_PER_AUTHORITY,
    VoteRelay,
)
from iomtnode.core.crypto import blake2b256
from iomtnode.core.vote import NIL, VoteType, decode_vote, sign_vote

from ..core.helpers import CHAIN_ID, key, pub
from .harness import Cluster, assert_one_chain, cluster, wait_heights, wait_until

BLOCK = blake2b256(b"a block")
NAMES = "ABCD"


def vote(signer: str, vote_type: VoteType, round_: int = 0, height: int = 1,
         block: bytes = BLOCK) -> ConsensusVote:
    return ConsensusVote(sign_vote(key(signer), CHAIN_ID, vote_type, height, round_,
                                   block).encode())


def relayers(height: int, signer: bytes, names: str = NAMES) -> tuple[bytes, bytes]:
    """The designated relayers (R1, R2) of ``signer``'s votes at ``height``."""
    relay = VoteRelay(network=None)  # type: ignore[arg-type]  # computes only
    relay.enter(height, [pub(n) for n in names])
    found = relay.relayers(signer)
    assert found is not None
    return found


def signer_where(role: int | None) -> str:
    """A signer other than A whose votes A relays at height 1 as R1 (0), as R2 (1), or
    only collects (None)."""
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


async def started_a(net: Cluster) -> None:
    await net.start("A")
    assert net["A"].driver is not None


async def test_each_vote_goes_at_once_to_its_relayers_and_by_the_first_to_all(
        tmp_path, autojump_clock):
    """As R1, A relays a vote at once to every peer but its signer and the peers that sent
    it (and not again when its fallback is due); as R2, to R1 alone; otherwise to R1 and
    R2."""
    async with cluster(tmp_path) as net:
        await started_a(net)
        a = net["A"].driver
        assert a is not None
        v1, v2, v3 = signer_where(0), signer_where(1), signer_where(None)
        msgs = [vote(v, VoteType.PREVOTE) for v in (v1, v2, v3)]
        began = trio.current_time()
        for v, msg in zip((v1, v2, v3), msgs, strict=True):
            a.on_message(pub(v), msg)
        await wait_until(lambda: all(relays_of(net, "A", m) for m in msgs), every=0.01)
        assert trio.current_time() - began < VOTE_FALLBACK_DELAY_S
        assert relays_of(net, "A", msgs[0]) == [others(v1)]
        assert relays_of(net, "A", msgs[1]) == [others(*NAMES) - {relayers(1, pub(v2))[0]}]
        assert relays_of(net, "A", msgs[2]) == [others(*NAMES) - set(relayers(1, pub(v3)))]
        await trio.sleep(2 * VOTE_FALLBACK_DELAY_S)  # the fallback: nobody left for R1's
        assert all(skip >= others("B", "C", "D") for skip in relays_of(net, "A", msgs[0])[1:])


async def test_the_fallback_waits_and_skips_holders_and_peers_that_hold_the_polka(
        tmp_path, autojump_clock):
    """Five authorities. A, not a relayer of V, sends V's prevote at once to V's relayers,
    and after the fallback delay to W, the one peer left: a nil precommit of W, or a vote
    of a later round, does not spare it (W may still need the round's prevotes for a
    proof of lock); W's precommit for a block in V's round does (it holds the polka)."""
    names = "ABCDE"
    async with cluster(tmp_path, names) as net:
        await started_a(net)
        a = net["A"].driver
        assert a is not None
        v = next(n for n in names[1:] if pub("A") not in relayers(1, pub(n), names))
        r1, r2 = relayers(1, pub(v), names)
        [w] = [n for n in names[1:] if n != v and pub(n) not in (r1, r2)]
        a.on_message(pub(w), vote(w, VoteType.PRECOMMIT, block=NIL))
        a.on_message(pub(w), vote(w, VoteType.PREVOTE, round_=1))
        prevote = vote(v, VoteType.PREVOTE)
        began = trio.current_time()
        a.on_message(pub(v), prevote)
        await wait_until(lambda: len(relays_of(net, "A", prevote)) == 2, every=0.05)
        assert trio.current_time() - began >= VOTE_FALLBACK_DELAY_S - 0.05
        now, fallback = relays_of(net, "A", prevote)
        assert others(*names) - now - {pub("A")} == {r1, r2}
        assert others(*names) - fallback - {pub("A")} == {pub(w)}
        later = vote(v, VoteType.PREVOTE, round_=2)
        a.on_message(pub(w), vote(w, VoteType.PRECOMMIT, round_=2))  # for a block
        a.on_message(pub(v), later)
        await trio.sleep(2 * VOTE_FALLBACK_DELAY_S)
        assert all(pub(w) in skip for skip in relays_of(net, "A", later))


async def test_a_peer_at_the_next_height_is_sent_nothing_of_this_one(tmp_path,
                                                                    autojump_clock):
    async with cluster(tmp_path) as net:
        await started_a(net)
        a = net["A"].driver
        assert a is not None
        v = signer_where(None)
        ahead = next(n for n in "BCD" if n != v)
        a.on_message(pub(ahead), vote(ahead, VoteType.PREVOTE, height=2))
        prevote = vote(v, VoteType.PREVOTE)
        a.on_message(pub(v), prevote)
        await wait_until(lambda: len(relays_of(net, "A", prevote)) == 2, every=0.05)
        assert pub(ahead) in relays_of(net, "A", prevote)[1]


async def test_a_conflicting_pair_goes_to_everyone_once(tmp_path, autojump_clock):
    """V equivocates: A hears one vote from V and the other from a peer, and sends both at
    once to every peer not known to hold them; a third conflicting vote is not relayed."""
    async with cluster(tmp_path) as net:
        await started_a(net)
        a = net["A"]
        assert a.driver is not None
        v = signer_where(None)
        peer = next(n for n in "BCD" if n != v)
        x = vote(v, VoteType.PREVOTE)
        y = vote(v, VoteType.PREVOTE, block=blake2b256(b"another block"))
        z = vote(v, VoteType.PREVOTE, block=blake2b256(b"a third block"))
        began = trio.current_time()
        a.driver.on_message(pub(v), x)
        a.driver.on_message(pub(peer), y)
        a.driver.on_message(pub(peer), z)
        await wait_until(lambda: bool(relays_of(net, "A", y)), every=0.01)
        assert trio.current_time() - began < VOTE_FALLBACK_DELAY_S
        assert relays_of(net, "A", x)[-1] == others(v) | set(relayers(1, pub(v)))
        assert relays_of(net, "A", y) == [others(v, peer)]
        assert relays_of(net, "A", z) == []
        await wait_until(lambda: len(a.reported) == 1)


async def test_conflicting_votes_kept_from_the_relayers_are_still_caught_by_everyone(
        tmp_path, autojump_clock):
    """Five authorities, V silent but for two conflicting prevotes it sends to two nodes
    that are not its relayers, one each: both reach its relayers at once, and every honest
    node names V."""
    names = "ABCDE"
    async with cluster(tmp_path, names) as net:
        v = "E"
        honest = [n for n in names if n != v]
        await net.start("".join(honest))
        r1, r2 = relayers(1, pub(v), names)
        first, second = [n for n in honest if pub(n) not in (r1, r2)][:2]
        x = vote(v, VoteType.PREVOTE)
        y = vote(v, VoteType.PREVOTE, block=blake2b256(b"another block"))
        for name, msg in ((first, x), (second, y)):
            driver = net[name].driver
            assert driver is not None
            driver.on_message(pub(v), msg)
        await wait_until(lambda: all(net[n].reported for n in honest), timeout=5,
                         every=0.01)
        assert {e.validator for n in honest for e in net[n].reported} == {pub(v)}


async def test_in_a_full_mesh_only_relayers_relay_to_all(tmp_path, autojump_clock):
    """Every authority sends its votes to all; a node that is not a vote's R1 sends it to
    R1 and R2 alone: about 3 N (N-1) messages per step, not N (N-1)^2."""
    async with cluster(tmp_path) as net:
        await net.start()
        await wait_heights(net.nodes.values(), 5)
        assert_one_chain(net.nodes.values(), net.genesis)
        relayed = [(s, r, decode_vote(m.vote)) for s, r, m in net.bus.delivered
                   if isinstance(m, ConsensusVote) and decode_vote(m.vote).validator != s]
        assert relayed
        for sender, receiver, v in relayed:
            r1, r2 = relayers(v.height, v.validator)
            assert sender == r1 or receiver in (r1, r2), "relayed to a node that has it"
        votes = {m.vote for _, _, m in net.bus.delivered if isinstance(m, ConsensusVote)}
        copies = [m for _, _, m in net.bus.delivered if isinstance(m, ConsensusVote)]
        assert len(copies) <= 3 * 3 * len(votes)


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
        self.only: list[frozenset[bytes] | None] = []

    def broadcast_consensus(self, msg: ConsensusVote, exclude: frozenset[bytes],
                            only: frozenset[bytes] | None = None) -> None:
        self.sent.append((msg, exclude))
        self.only.append(only)


def test_what_the_vote_relay_remembers_of_a_height_is_bounded():
    """An authority voting in round after round cannot grow the relay's memory past
    VOTE_KEYS votes, nor push out another authority's first votes: C's equivocation after
    B's flood is still caught."""
    network = Recorder()
    relay = VoteRelay(network, own=pub("A"))  # type: ignore[arg-type]
    relay.enter(1, [pub(n) for n in NAMES])
    c_first = vote("C", VoteType.PREVOTE)
    relay.relay(blake2b256(c_first.vote), c_first, decode_vote(c_first.vote), pub("D"))
    for round_ in range(VOTE_KEYS + 10):
        msg = vote("B", VoteType.PREVOTE, round_=round_)
        relay.relay(blake2b256(msg.vote), msg, decode_vote(msg.vote), pub("D"))
    assert len(relay._holders) == VOTE_KEYS
    assert len(relay._first[pub("B")]) == VOTES_PER_AUTHORITY
    sent = len(network.sent)
    c_second = vote("C", VoteType.PREVOTE, block=blake2b256(b"another block"))
    relay.relay(blake2b256(c_second.vote), c_second, decode_vote(c_second.vote), pub("D"))
    assert [m for m, _ in network.sent[sent:]] == [c_first, c_second]


async def test_fallbacks_waiting_are_bounded():
    """Votes straight from their signer wait for their fallback: at most VOTE_KEYS wait."""
    relay = VoteRelay(Recorder(), own=pub("A"))  # type: ignore[arg-type]
    relay.enter(1, [pub(n) for n in NAMES])
    for round_ in range(VOTE_KEYS + 10):
        msg = vote("B", VoteType.PREVOTE, round_=round_)
        relay.relay(blake2b256(msg.vote), msg, decode_vote(msg.vote), pub("B"))
    assert len(relay._due) == VOTE_KEYS


async def test_a_vote_from_its_signer_goes_on_to_authorities_only(autojump_clock):
    """The relayers' copies are for the authorities: a node that is not one (it follows the
    blocks and their certificates) had the vote from its signer, and gets no copy from R1
    or from the collectors, which would send it one per authority."""
    for role in (0, 1, None):  # A as R1, as R2, as a collector
        network = Recorder()
        relay = VoteRelay(network, own=pub("A"))  # type: ignore[arg-type]
        relay.enter(1, [pub(n) for n in NAMES])
        signer = signer_where(role)
        msg = vote(signer, VoteType.PREVOTE)
        relay.relay(blake2b256(msg.vote), msg, decode_vote(msg.vote), pub(signer))
        assert network.only == [others(*NAMES)], role


async def test_a_node_that_is_not_an_authority_sends_its_copies_to_everyone(autojump_clock):
    """It may be a sentry: the authorities behind it reach the others only through it."""
    for own in (pub("E"), None):
        network = Recorder()
        relay = VoteRelay(network, own=own)  # type: ignore[arg-type]
        relay.enter(1, [pub(n) for n in NAMES])
        msg = vote("B", VoteType.PREVOTE)
        relay.relay(blake2b256(msg.vote), msg, decode_vote(msg.vote), pub("B"))
        assert network.only == [None]
        assert network.sent[0][1] == others(*NAMES) - set(relayers(1, pub("B")))


async def test_a_peer_that_sends_a_message_of_the_next_height_is_told_to_be_past_this_one(
        tmp_path, autojump_clock):
    """Block sync learns it (a node whose precommit was counted is sent neither the deciding
    votes again nor the block, and peers' heads are otherwise told only on connecting)."""
    async with cluster(tmp_path) as net:
        await started_a(net)
        a = net["A"].driver
        assert a is not None
        a.on_message(pub("C"), vote("B", VoteType.PREVOTE, height=2))  # C relays B's
        await wait_until(lambda: bool(net["A"].network.committed_peers), every=0.01)
        assert net["A"].network.committed_peers == {pub("C"): 1}
