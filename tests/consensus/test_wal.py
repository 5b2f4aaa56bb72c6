"""The consensus write-ahead record: a block is durable before its authority signs for it
or locks on it, so a restart of every authority at once, after all locked on a block,
still finalizes it; and it costs one synced write per block, not one per vote.

Authorities are A, B, C, D; height 1's round-0 proposer is B.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import trio

from iomtnode.consensus.held import META_WAL
from iomtnode.consensus.machine import Machine
from iomtnode.consensus.messages import ConsensusVote
from iomtnode.consensus.votes import NO_ROUND, Step
from iomtnode.core.vote import NIL, VoteType, decode_vote

from ..core.helpers import pub
from .harness import (
    CONFIG,
    ConsensusMessage,
    FakeNetwork,
    admit_tx,
    assert_one_chain,
    cluster,
    signed_by,
    wait_heights,
    wait_until,
)


async def start_under(net, network: type[FakeNetwork]) -> list:
    """Every node of ``net`` on ``network``, with one transaction waiting, started."""
    nodes = list(net.nodes.values())
    for node in nodes:
        node.network = network(net.bus, node.id, node.meta)
        node.mempool.add(admit_tx())
    await net.start()
    return nodes


def machines(nodes: list) -> list[Machine]:
    """The running machines of ``nodes``, in their order."""
    return [n.driver.machine for n in nodes
            if n.driver is not None and n.driver.machine is not None]


def power_cut(nodes: list) -> None:
    """Every node stops at once (what its drivers held in memory is gone); on restart its
    network delivers everything."""
    for node in nodes:
        node.stop()
        node.network = FakeNetwork(node.network.bus, node.id, node.meta)


class PrecommitsWithheld(FakeNetwork):
    """Own precommits are signed (after their signing state is persisted) but never leave
    the node: every authority locks, none decides."""

    def broadcast_consensus(self, msg: ConsensusMessage,
                            exclude: frozenset[bytes] = frozenset(),
                            only: frozenset[bytes] | None = None) -> None:
        if isinstance(msg, ConsensusVote):
            vote = decode_vote(msg.vote)
            if vote.type is VoteType.PRECOMMIT and vote.validator == self.me:
                return
        super().broadcast_consensus(msg, exclude, only)


async def test_a_whole_network_restart_after_all_locked_finalizes_the_locked_block(
        tmp_path, autojump_clock):
    async with cluster(tmp_path, signed_before=True) as net:
        nodes = await start_under(net, PrecommitsWithheld)

        def locked() -> set[bytes]:
            return {m.locked_value for m in machines(nodes)}

        await wait_until(lambda: NIL not in locked())
        [x] = locked()
        power_cut(nodes)  # a site power cut: every authority stops before deciding
        assert all(n.chain.height == 0 for n in nodes)
        await net.start()  # new drivers: what they held in memory is gone
        await wait_heights(nodes, 1)
        assert {n.chain.block_at(1).hash for n in nodes} == {x}
        assert_one_chain(nodes, net.genesis)


async def test_a_whole_network_restarted_at_once_decides_as_soon_as_its_nodes_connect(
        tmp_path, autojump_clock):
    """Restarted together, every authority sends its kept messages again before any peer
    is back; each sends them to a peer as it connects (Driver.peer_connected), so the
    locked block is final at once, not after the resend interval (60 s here)."""
    async with cluster(tmp_path, signed_before=True) as net:
        nodes = await start_under(net, PrecommitsWithheld)
        await wait_until(lambda: NIL not in {m.locked_value for m in machines(nodes)})
        power_cut(nodes)
        net.bus.partition(*net.names)  # the processes are up before their connections
        await net.start(config=replace(CONFIG, resend_interval_s=60.0))
        await trio.sleep(1.0)
        assert all(n.chain.height == 0 for n in nodes)  # nothing reached anyone
        net.bus.heal()  # every pair connects
        with trio.fail_after(5):  # virtual seconds; the resend would come at 60
            await wait_heights(nodes, 1)
        assert_one_chain(nodes, net.genesis)


async def test_each_block_signed_for_is_written_once(tmp_path, autojump_clock):
    async with cluster(tmp_path, signed_before=True) as net:
        writes: Counter[str] = Counter()
        for node in net.nodes.values():
            put = node.meta.put_meta

            def counting(name: str, value: bytes, put=put, who=node.name) -> None:
                writes[who] += name == META_WAL
                put(name, value)

            node.meta.put_meta = counting  # type: ignore[method-assign]
        await net.start()
        await wait_heights(net.nodes.values(), 5)
        for node in net.nodes.values():
            blocks = {h for hashes in net.bus.own_signatures(node.id).values()
                      for h in hashes if h != NIL}
            assert writes[node.name] == len(blocks) >= 5


async def test_the_last_writes_blocks_stay_until_the_signing_state_moves_on(tmp_path):
    """Locked on X, then signing for Y: the record written before Y's signature still holds
    X, since the signing state that names the lock on X is replaced only after that write
    (a crash between the two must find X's block); the write after drops X."""
    from iomtnode.chain.chain import Chain
    from iomtnode.consensus.held import HeldBlocks, _decode
    from iomtnode.core.block import decode_block
    from iomtnode.store import BlockStore

    from ..admission.chainkit import GENESIS
    from ..core.helpers import pub
    from .harness import MemoryMeta

    with BlockStore.open(tmp_path / "store") as store:
        chain = Chain(store, GENESIS)
        x, y, z = (chain.build([], pub("A"), GENESIS.time_ms + 1000 * i) for i in (1, 2, 3))
    meta = MemoryMeta()
    held = HeldBlocks(meta)
    held.reset(1)
    for round_, built in enumerate((x, y, z)):
        held.hold(round_, built, ())

    def recorded() -> set[bytes]:
        _, blocks = _decode(meta.get_meta(META_WAL))
        return {decode_block(raw).hash for raw in blocks}

    await held.make_durable([x.block.hash])  # locked on X
    assert recorded() == {x.block.hash}
    await held.make_durable([y.block.hash])  # signing for Y: the lock on X still recorded
    assert recorded() == {x.block.hash, y.block.hash}
    await held.make_durable([y.block.hash, z.block.hash])  # the state now names Y
    assert recorded() == {y.block.hash, z.block.hash}


class PolkaSeenByTwo(FakeNetwork):
    """Prevotes reach only B and C, and own precommits never leave the node: B and C see
    the polka and lock (precommit), A and D prevote and see nothing more."""

    def broadcast_consensus(self, msg: ConsensusMessage,
                            exclude: frozenset[bytes] = frozenset(),
                            only: frozenset[bytes] | None = None) -> None:
        if isinstance(msg, ConsensusVote):
            vote = decode_vote(msg.vote)
            if vote.type is VoteType.PRECOMMIT and vote.validator == self.me:
                return
            if vote.type is VoteType.PREVOTE:
                pair = frozenset({pub("B"), pub("C")})
                only = pair if only is None else pair & only
        super().broadcast_consensus(msg, exclude, only)


async def test_a_whole_network_restart_after_half_locked_finalizes(tmp_path, autojump_clock):
    """A site power cut when two authorities have locked (precommitted) a block and two have
    only prevoted it. Had each restarted authority sent again only its last vote, there
    would be two prevotes and two precommits of the round, neither a quorum, and no timeout
    of the round could fire (each waits for 2f+1 votes of some kind): the height stalled
    for good. Each sends again what its record kept (the proposal, its prevote), so the
    polka forms again and the height finalizes."""
    async with cluster(tmp_path, signed_before=True) as net:
        nodes = await start_under(net, PolkaSeenByTwo)
        await wait_until(lambda: sum(m.locked_value != NIL for m in machines(nodes)) == 2)
        power_cut(nodes)
        assert all(n.chain.height == 0 for n in nodes)
        await net.start()
        await wait_heights(nodes, 1)
        assert_one_chain(nodes, net.genesis)


class LockedThenRoundsPass(FakeNetwork):
    """Round 0: the proposal of B (the proposer) never reaches D; round 0's prevotes (A, B
    and C for the block, D nil) all reach B and C, who see the polka and lock, but A hears
    only A and B, and D only A, B and D: both time out and precommit nil. No proposal of a
    later round gets out, so rounds pass, all nil, with B and C locked on round 0's block."""

    def broadcast_consensus(self, msg: ConsensusMessage,
                            exclude: frozenset[bytes] = frozenset(),
                            only: frozenset[bytes] | None = None) -> None:
        signer, (_, round_, step), _ = signed_by(msg)
        hears = {"A": "AB", "B": "ABCD", "C": "ABCD", "D": "ABD"}
        if step is Step.PROPOSE:
            allowed = frozenset({pub("A"), pub("B"), pub("C")}) if round_ == 0 else frozenset()
        elif step is Step.PREVOTE and round_ == 0:
            allowed = frozenset(pub(n) for n, heard in hears.items()
                                if any(signer == pub(s) for s in heard))
        else:
            allowed = None
        if allowed is not None:
            only = allowed if only is None else allowed & only
        super().broadcast_consensus(msg, exclude, only)


async def test_a_whole_network_restart_rounds_after_half_locked_finalizes(
        tmp_path, autojump_clock):
    """B and C locked a block in round 0, A and D never saw its polka, and rounds 1 to 3
    passed nil before a site power cut. After it, B and C prevote only for their block,
    and only with a proof of lock from round 0 (or later) can A and D prevote for it: the
    round-0 prevotes must survive the restart, though they are older than the last two
    rounds."""
    async with cluster(tmp_path, signed_before=True) as net:
        nodes = await start_under(net, LockedThenRoundsPass)
        await wait_until(lambda: len(machines(nodes)) == 4
                         and all(m.round >= 3 for m in machines(nodes)), timeout=600)
        assert [m.locked_round for m in machines(nodes)] == [NO_ROUND, 0, 0, NO_ROUND]
        power_cut(nodes)
        assert all(n.chain.height == 0 for n in nodes)
        await net.start()
        await wait_heights(nodes, 1, timeout=600)
        assert_one_chain(nodes, net.genesis)


class ProposerCutAfterItsProposal(FakeNetwork):
    """B, round 0's proposer, is cut off right after its proposal: nothing it signs after
    it leaves, and what its home held then is kept aside (``at_proposal``), to be what it
    holds after the power cut. Prevotes reach only C and D, who lock; own precommits never
    leave."""

    at_proposal: dict[str, bytes] = {}

    def broadcast_consensus(self, msg: ConsensusMessage,
                            exclude: frozenset[bytes] = frozenset(),
                            only: frozenset[bytes] | None = None) -> None:
        signer, (_, _, step), _ = signed_by(msg)
        if signer == self.me == pub("B") and not exclude:
            if step is not Step.PROPOSE:
                return
            if not self.at_proposal:
                self.at_proposal.update(self.meta.values)
        if isinstance(msg, ConsensusVote):
            vote = decode_vote(msg.vote)
            if vote.type is VoteType.PRECOMMIT and vote.validator == self.me:
                return
            if vote.type is VoteType.PREVOTE:
                pair = frozenset({pub("C"), pub("D")})
                only = pair if only is None else pair & only
        super().broadcast_consensus(msg, exclude, only)


async def test_a_proposal_lost_with_its_proposer_costs_a_round_not_the_height(
        tmp_path, autojump_clock):
    """A proposal is kept only once the next record is written (its signature comes after
    the record that covers it, and that record cannot hold it), so a proposer stopped right
    after signing one does not send it again. The polka its round reached survives (the
    prevotes are kept or are last votes): the round times out and the next proposer,
    locked, proposes the block again with that proof of lock."""
    from iomtnode.consensus.signing import META_SIGNING_STATE, read_signing_record

    ProposerCutAfterItsProposal.at_proposal = {}
    async with cluster(tmp_path, signed_before=True) as net:
        nodes = await start_under(net, ProposerCutAfterItsProposal)

        def locked() -> list[bytes]:
            return [m.locked_value for m in machines(nodes)]

        await wait_until(lambda: sum(v != NIL for v in locked()) == 2)
        [x] = set(locked()) - {NIL}
        power_cut(nodes)  # a site power cut; B's home as right after its proposal
        b = net["B"]
        b.meta.values.clear()
        b.meta.values.update(ProposerCutAfterItsProposal.at_proposal)
        state = read_signing_record(b.meta.values[META_SIGNING_STATE], pub("B"))
        assert state is not None and (state.round, state.step) == (0, Step.PROPOSE)
        assert all(n.chain.height == 0 for n in nodes)
        await net.start()
        await wait_heights(nodes, 1)
        assert_one_chain(nodes, net.genesis)
        commit = nodes[0].chain.commit_at(1)
        assert commit is not None and commit.round >= 1  # round 0 had no proposal left
        assert nodes[0].chain.block_at(1).hash == x
