"""Four authorities in one process (real nodes: LevelDB) on an in-memory network, under a
virtual clock: an authority restarted without its signing state, with its chain data or on a
whole new home holding the same key, observes until it knows the network's height, signs
only above it, and never signs two different things at one height, round and step."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest
import trio

from iomtnode.consensus.messages import ConsensusProposal, ConsensusVote
from iomtnode.consensus.reactor import PeerNetwork
from iomtnode.consensus.signing import SIGNING_STATE_FILE
from iomtnode.consensus.votes import Step
from iomtnode.home import init_home

from ..consensus.harness import signed_by
from .harness import Net, start_net
from .test_bft import authorities

pytestmark = pytest.mark.timeout(90)

Signed = dict[bytes, dict[tuple[int, int, Step], set[bytes]]]


@pytest.fixture
def signed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Signed]:
    """Every consensus message any node sends that its own key signed, across restarts:
    signer -> (height, round, step) -> block hashes."""
    seen: Signed = defaultdict(lambda: defaultdict(set))
    original = PeerNetwork.broadcast_consensus

    def recording(self: PeerNetwork, msg: ConsensusProposal | ConsensusVote,
                  exclude: frozenset[bytes] = frozenset(),
                  only: frozenset[bytes] | None = None) -> None:
        signer, at, block_hash = signed_by(msg)
        if signer == self._router.host.node_id:
            seen[signer][at].add(block_hash)
        original(self, msg, exclude, only)

    monkeypatch.setattr(PeerNetwork, "broadcast_consensus", recording)
    yield seen


def assert_never_signed_twice(signed: Signed) -> None:
    for signer, by_step in signed.items():
        twice = {at: h for at, h in by_step.items() if len(h) > 1}
        assert not twice, f"{signer.hex()[:16]} signed two things at {twice}"


def certified_by(net: Net, i: int, above: int) -> bool:
    """Whether node ``i``'s key is in a commit certificate of a block above ``above``."""
    chain = net.node(0).chain
    assert chain is not None
    for h in range(above + 1, chain.height + 1):
        commit = chain.commit_at(h)
        if commit is not None and any(a == net.keys[i].public for a, _ in commit.signatures):
            return True
    return False


@pytest.mark.parametrize("lost", ["signing_state_file", "whole_home"])
async def test_an_authority_without_its_signing_state_rejoins_without_double_signing(
        tmp_path, nursery, autojump_clock, signed, lost):
    net = await start_net(authorities(tmp_path), nursery)
    await net.wait_height(3)
    await net.stop(1)
    if lost == "signing_state_file":
        (net.homes[1].path / SIGNING_STATE_FILE).unlink()  # its chain data stays
    else:  # a new home, the same key: no chain data, no signing state
        net.homes[1] = init_home(tmp_path / "node1-new", genesis=net.genesis,
                                 key=net.keys[1], config=net.config, signed_before=True)
    others = [net.node(i) for i in (0, 2, 3)]
    head = max(n.chain.height for n in others)
    node = await net.start(nursery, 1, (net.p2p(0),))
    driver = node.consensus
    assert driver is not None
    await net.wait(lambda: driver.signing_floor is not None, "the signing floor fixed")
    floor = driver.signing_floor
    assert floor is not None and floor >= head + 1  # at least the height in progress
    assert not [at for at in signed[net.keys[1].public] if at[0] > head and at[0] <= floor]

    await net.wait_height(floor + 3)  # the others went on meanwhile; it caught up
    await net.wait(lambda: certified_by(net, 1, floor), "its precommits certify blocks again")
    assert min(at[0] for at in signed[net.keys[1].public] if at[0] > head) > floor
    assert net.same_chain()
    assert_never_signed_twice(signed)
    for n in net.live():
        assert n.consensus is not None and not n.consensus.evidence
        assert not n.p2p.host.scoreboard.penalties


async def test_a_new_network_is_not_held_back_by_its_fresh_authorities(
        tmp_path, nursery, autojump_clock, signed):
    """Every authority of a new network starts with the signing state `iomtnode init`
    wrote (nothing signed yet): none of them defers, height 1 is theirs to sign."""
    net = await start_net(authorities(tmp_path), nursery)
    with trio.fail_after(30):
        await net.wait_height(3)
    floors = [n.consensus.signing_floor for n in net.live() if n.consensus is not None]
    assert floors == [0, 0, 0, 0], floors
    assert_never_signed_twice(signed)


@pytest.mark.parametrize("n", [2, 3])
async def test_two_or_three_authorities_go_on_when_one_lost_its_signing_state(
        tmp_path, nursery, autojump_clock, n):
    """Every authority is in every quorum, so the others could not decide the heights up to
    a floor of K + 2 without it: the network stalled at its head for good. The floor is K
    there (fresh.py, "Two or three authorities")."""
    net = await start_net(authorities(tmp_path, n), nursery)
    await net.wait_height(3)
    await net.stop(1)
    (net.homes[1].path / SIGNING_STATE_FILE).unlink()
    head = max(net.node(i).chain.height for i in range(n) if i != 1)
    node = await net.start(nursery, 1, (net.p2p(0),))
    driver = node.consensus
    assert driver is not None
    await net.wait(lambda: driver.signing_floor is not None, "the signing floor fixed")
    assert driver.signing_floor == head
    await net.wait_height(head + 4)
    assert certified_by(net, 1, head)
    assert net.same_chain()  # its votes may differ from its lost state's at head + 1 and
    # head + 2 (peers may report that), but no second block can be final there
