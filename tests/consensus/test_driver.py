"""The consensus driver with real chains (LevelDB in tmp_path) over an in-test message bus,
under trio's autojump clock.

Authorities are A, B, C, D (keys derived from the names). The proposer of height h,
round r is [A, B, C, D][(h + r) % 4]: height 1 round 0 is B, height 3 round 0 is D.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from iomtnode.admission.mempool import Mempool
from iomtnode.chain.chain import Chain
from iomtnode.chain.feed import BlockFeed
from iomtnode.chain.writer import ChainWriter
from iomtnode.consensus.driver import ConsensusMessage, Driver, DriverConfig
from iomtnode.consensus.signing import (
    META_SIGNING_STATE,
    Signer,
    SigningLock,
    SigningLockedError,
    UnrecordedSignatureError,
)
from iomtnode.consensus.votes import SigningState, Step, decode_proposal, sign_proposal, step_of
from iomtnode.core.block import Block, Commit
from iomtnode.core.crypto import blake2b256
from iomtnode.core.genesis import Genesis
from iomtnode.core.tx import AdmitDevice, sign_tx
from iomtnode.core.vote import VoteType, decode_vote, sign_vote
from iomtnode.p2p import score
from iomtnode.p2p.messages import ConsensusProposal, ConsensusVote
from iomtnode.store import BlockStore

from ..core.helpers import CHAIN_ID, key, pub

NAMES = "ABCD"
GENESIS = Genesis(CHAIN_ID, 1_700_000_000_000, tuple(pub(n) for n in NAMES), 1)
CONFIG = DriverConfig(block_interval_s=0.1, empty_block_interval_s=0.5, max_block_txs=100)
OUTSIDER = b"\x99" * 32  # a peer id that is no authority


@pytest.fixture
def autojump_clock() -> MockClock:
    """trio's autojump clock, jumping only after 20 ms of real idleness: block commits fsync
    in a worker thread, and a clock that jumped meanwhile would fire every timeout."""
    return MockClock(autojump_threshold=0.02)


def signed_by(msg: ConsensusMessage) -> tuple[bytes, tuple[int, int, Step], bytes]:
    """(signer, (height, round, step), block hash) of a consensus message."""
    if isinstance(msg, ConsensusProposal):
        p = decode_proposal(msg.proposal)
        return p.proposer, (p.height, p.round, Step.PROPOSE), p.block_hash
    v = decode_vote(msg.vote)
    return v.validator, (v.height, v.round, step_of(v.type)), v.block_hash


@dataclass
class Bus:
    """Delivers each broadcast to the linked drivers (all, unless ``links`` is given)."""

    nodes: dict[bytes, TNode] = field(default_factory=dict)
    links: set[frozenset[bytes]] | None = None
    sent: list[tuple[bytes, ConsensusMessage]] = field(default_factory=list)
    on_own: Callable[[bytes, ConsensusMessage], None] | None = None

    def linked(self, a: bytes, b: bytes) -> bool:
        return self.links is None or frozenset((a, b)) in self.links

    def deliver(self, sender: bytes, msg: ConsensusMessage, exclude: bytes | None) -> None:
        self.sent.append((sender, msg))
        for peer_id, node in self.nodes.items():
            if peer_id not in (sender, exclude) and node.driver and self.linked(sender, peer_id):
                node.driver.on_message(sender, msg)


@dataclass
class FakeNetwork:
    """One node's view of the bus. Checks, for each message this node signed, that its
    persisted signing state already covers it (persist before sign)."""

    bus: Bus
    me: bytes
    store: BlockStore
    penalties: list[tuple[bytes, int, str]] = field(default_factory=list)

    def broadcast_consensus(self, msg: ConsensusMessage, exclude: bytes | None = None) -> None:
        signer, at, _ = signed_by(msg)
        if exclude is None:  # made here (a relay names its source)
            assert signer == self.me
            raw = self.store.get_meta(META_SIGNING_STATE)
            assert raw is not None and not SigningState.from_bytes(raw).permits(*at), at
            if self.bus.on_own is not None:
                self.bus.on_own(self.me, msg)
        self.bus.deliver(self.me, msg, exclude)

    def penalize_peer(self, peer_id: bytes, points: int, reason: str) -> None:
        self.penalties.append((peer_id, points, reason))


@dataclass
class TNode:
    name: str
    store: BlockStore
    chain: Chain
    mempool: Mempool
    feed: BlockFeed
    writer: ChainWriter
    network: FakeNetwork
    driver: Driver | None = None
    scope: trio.CancelScope | None = None

    @property
    def id(self) -> bytes:
        return pub(self.name)

    def new_driver(self, config: DriverConfig = CONFIG) -> Driver:
        signer = Signer(key(self.name), CHAIN_ID, self.store)  # loads the persisted state
        self.driver = Driver(self.chain, self.mempool, self.writer, self.network, signer,
                             config)
        return self.driver

    async def start(self, nursery: trio.Nursery, config: DriverConfig = CONFIG) -> None:
        driver = self.new_driver(config)
        scope = self.scope = trio.CancelScope()

        async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await driver.run(task_status=task_status)

        await nursery.start(run)

    def stop(self) -> None:
        assert self.scope is not None
        self.scope.cancel()
        self.driver = None


@contextlib.asynccontextmanager
async def network(tmp_path: Path) -> AsyncIterator[tuple[Bus, dict[str, TNode], trio.Nursery]]:
    """Four nodes A-D (no driver started yet) and a nursery for their tasks, which is
    cancelled before the stores close."""
    bus = Bus()
    nodes: dict[str, TNode] = {}
    with contextlib.ExitStack() as stack:
        for name in NAMES:
            store = stack.enter_context(BlockStore.open(tmp_path / name))
            chain = Chain(store, GENESIS)
            mempool = Mempool(chain, now_ms=lambda: GENESIS.time_ms + 10_000)
            feed = BlockFeed(chain.height)
            writer = ChainWriter(chain, mempool, feed)
            node = TNode(name, store, chain, mempool, feed, writer,
                         FakeNetwork(bus, pub(name), store))
            nodes[name] = bus.nodes[node.id] = node
        async with trio.open_nursery() as nursery:
            yield bus, nodes, nursery
            nursery.cancel_scope.cancel()


async def relay_blocks(nodes: dict[str, TNode]) -> None:
    """Stand-in for compact block relay: every commit is applied on the other nodes."""
    send, receive = trio.open_memory_channel[tuple[Block, Commit, str]](math.inf)
    for node in nodes.values():
        node.writer.add_listener(
            lambda block, commit, source, name=node.name: send.send_nowait((block, commit, name)))
    async for block, commit, source in receive:
        for node in nodes.values():
            if node.name != source:
                await node.writer.apply(block, commit, pub(source), lambda tx: False)


async def wait_heights(nodes: dict[str, TNode], height: int, names: str = NAMES) -> None:
    with trio.fail_after(120):
        for name in names:
            await nodes[name].feed.wait_for_height(height)


def assert_same_chain(nodes: dict[str, TNode], height: int, names: str = NAMES) -> None:
    for h in range(1, height + 1):
        hashes = {nodes[n].chain.block_at(h).hash for n in names}
        assert len(hashes) == 1, f"height {h} differs: {hashes}"
        commit = nodes[names[0]].chain.commit_at(h)
        assert commit is not None
        commit.verify(GENESIS.authorities, CHAIN_ID)


def admit_tx() -> bytes:
    device = key("device1")
    return sign_tx(AdmitDevice(pub("A"), device.public, device.public, "wearable", "acme"),
                   key("A"), CHAIN_ID).raw


# scenarios -------------------------------------------------------------------------------


async def test_four_authorities_finalize_the_same_blocks(tmp_path, autojump_clock):
    async with network(tmp_path) as (_bus, nodes, nursery):
        for node in nodes.values():
            node.mempool.add(admit_tx())  # pending: the first height starts after 0.1 s
        for node in nodes.values():
            await node.start(nursery)
        await wait_heights(nodes, 5)
        assert_same_chain(nodes, 5)
        a = nodes["A"]
        assert len(a.chain.block_at(1).txs) == 1 and a.chain.device(key("device1").public)
        assert all(len(a.chain.block_at(h).txs) == 0 for h in range(2, 6))  # heartbeats
        assert a.chain.block_at(1).header.proposer == pub("B")  # (1 + 0) % 4
        assert not any(n.network.penalties for n in nodes.values())
        assert all(n.driver and not n.driver.evidence for n in nodes.values())


async def test_one_silent_authority_of_four_costs_rounds_not_progress(
        tmp_path, autojump_clock):
    async with network(tmp_path) as (_bus, nodes, nursery):
        for name in "ABC":  # D never speaks
            await nodes[name].start(nursery)
        await wait_heights(nodes, 5, "ABC")
        assert_same_chain(nodes, 5, "ABC")
        commit = nodes["A"].chain.commit_at(3)
        assert commit is not None and commit.round >= 1  # D was the proposer of round 0
        assert nodes["A"].chain.block_at(3).header.proposer != pub("D")


async def test_relay_reaches_authorities_that_are_not_connected(
        tmp_path, autojump_clock):
    async with network(tmp_path) as (bus, nodes, nursery):
        line = ["A", "B", "C", "D"]  # A - B - C - D: only neighbours are connected
        bus.links = {frozenset((pub(x), pub(y))) for x, y in itertools.pairwise(line)}
        for node in nodes.values():
            await node.start(nursery)
        await wait_heights(nodes, 4)
        assert_same_chain(nodes, 4)


async def test_a_restarted_authority_never_double_signs(tmp_path, autojump_clock):
    """A, B and C run (D is silent), so every decision needs A. A crashes right after its
    prevote at height 2 and restarts at once; the proposal is resent only 30 s later, so
    for A's propose timeout (1 s) it has none: a prevote for nil there would conflict."""
    config = replace(CONFIG, resend_interval_s=30.0)
    async with network(tmp_path) as (bus, nodes, nursery):
        nursery.start_soon(relay_blocks, nodes)
        a = nodes["A"]
        crashed = trio.Event()

        def crash_after_first_prevote_at_2(sender: bytes, msg: ConsensusMessage) -> None:
            _, (height, _, step), _ = signed_by(msg)
            if sender == a.id and (height, step) == (2, Step.PREVOTE) and not crashed.is_set():
                a.stop()  # cancelled mid-height, its prevote persisted and sent
                crashed.set()

        bus.on_own = crash_after_first_prevote_at_2
        for name in "ABC":
            await nodes[name].start(nursery, config)
        await crashed.wait()
        sent_before = len(bus.sent)
        await a.start(nursery, config)  # the same store: the persisted signing state
        await wait_heights(nodes, 5, "ABC")
        assert_same_chain(nodes, 5, "ABC")
        signed: dict[tuple[int, int, Step], set[bytes]] = defaultdict(set)
        for _, msg in bus.sent:
            signer, at, block_hash = signed_by(msg)
            if signer == a.id:
                signed[at].add(block_hash)
        assert all(len(hashes) == 1 for hashes in signed.values()), signed
        assert any(sender == a.id for sender, _ in bus.sent[sent_before:])  # it went on


# peers' messages -------------------------------------------------------------------------


async def test_bad_messages_cost_the_peer_and_are_not_relayed(tmp_path, autojump_clock):
    async with network(tmp_path) as (bus, nodes, nursery):
        a = nodes["A"]
        await a.start(nursery)
        forged = sign_vote(key("X"), CHAIN_ID, VoteType.PREVOTE, 1, 0, blake2b256(b"b"))
        raw = forged.encode()
        raw = raw[: raw.index(forged.validator)] + pub("B") + raw[
            raw.index(forged.validator) + 32:]  # claims to be B's
        outsider = sign_vote(key("X"), CHAIN_ID, VoteType.PREVOTE, 1, 0, blake2b256(b"b"))
        wrong_chain = sign_vote(key("C"), "other-chain", VoteType.PREVOTE, 1, 0,
                                blake2b256(b"b"))
        other_block = nodes["B"].chain.build([], pub("B"), GENESIS.time_ms + 1).block
        proposal = sign_proposal(key("B"), CHAIN_ID, 1, 0, blake2b256(b"not that block"))
        for msg in (ConsensusVote(raw), ConsensusVote(outsider.encode()),
                    ConsensusVote(wrong_chain.encode()), ConsensusVote(b"\x01garbage"),
                    ConsensusProposal(proposal.encode(), other_block.encode())):
            a.driver.on_message(OUTSIDER, msg)
        await trio.sleep(0.01)
        reasons = sorted((points, reason.split(":")[0]) for _, points, reason in
                         a.network.penalties)
        assert reasons == [(score.INVALID_MESSAGE, "consensus proposal"),
                           (score.INVALID_MESSAGE, "consensus vote"),
                           (score.INVALID_MESSAGE, "consensus vote"),
                           (score.BAD_SIGNATURE, "consensus vote"),
                           (score.BAD_SIGNATURE, "consensus vote")]
        assert not [m for s, m in bus.sent if s == a.id and signed_by(m)[0] != a.id]


async def test_valid_messages_are_relayed_once_and_equivocation_is_reported(
        tmp_path, autojump_clock):
    async with network(tmp_path) as (bus, nodes, nursery):
        a = nodes["A"]
        await a.start(nursery)
        x = sign_vote(key("B"), CHAIN_ID, VoteType.PREVOTE, 1, 0, blake2b256(b"x"))
        y = sign_vote(key("B"), CHAIN_ID, VoteType.PREVOTE, 1, 0, blake2b256(b"y"))
        for msg in (ConsensusVote(x.encode()), ConsensusVote(x.encode()),
                    ConsensusVote(y.encode())):
            a.driver.on_message(pub("C"), msg)
        await trio.sleep(0.01)
        relayed = [m for s, m in bus.sent if s == a.id and signed_by(m)[0] == pub("B")]
        assert relayed == [ConsensusVote(x.encode()), ConsensusVote(y.encode())]
        assert [e["authority"] for e in a.driver.evidence] == [pub("B").hex()]
        assert a.driver.evidence[0]["height"] == 1 and a.driver.evidence[0]["type"] == "prevote"
        assert not a.network.penalties


async def test_next_height_messages_wait_for_their_height(tmp_path, autojump_clock):
    async with network(tmp_path) as (bus, nodes, nursery):
        a = nodes["A"]
        await a.start(nursery)
        early = sign_vote(key("B"), CHAIN_ID, VoteType.PREVOTE, 2, 7, blake2b256(b"x"))
        a.driver.on_message(pub("C"), ConsensusVote(early.encode()))
        await trio.sleep(0.01)
        assert not [m for s, m in bus.sent if s == a.id]  # not relayed while unverifiable
        # height 1 finalized by B, C and D elsewhere reaches A (as relay or sync would)
        for name in "BCD":
            await nodes[name].start(nursery)
        nursery.start_soon(relay_blocks, nodes)
        await wait_heights(nodes, 1, "A")
        await trio.sleep(0.01)  # A replays what it kept for height 2: verified, then relayed
        assert ConsensusVote(early.encode()) in [m for s, m in bus.sent if s == a.id]


# the signer ------------------------------------------------------------------------------


def test_the_signing_lock_refuses_a_second_holder(tmp_path):
    path = tmp_path / "signing.lock"
    with SigningLock.acquire(path), pytest.raises(SigningLockedError,
                                                  match="locked by another process"):
        SigningLock.acquire(path)
    SigningLock.acquire(path).release()  # free again once released


def test_the_signer_signs_only_what_it_recorded(tmp_path):
    with BlockStore.open(tmp_path / "db") as store:
        signer = Signer(key("A"), CHAIN_ID, store)
        with pytest.raises(UnrecordedSignatureError):
            signer.vote(VoteType.PREVOTE, 1, 0, blake2b256(b"x"))
        signer.record(SigningState(1, 0, Step.PREVOTE, blake2b256(b"x")))
        assert signer.vote(VoteType.PREVOTE, 1, 0, blake2b256(b"x")).validator == pub("A")
        with pytest.raises(UnrecordedSignatureError):
            signer.vote(VoteType.PRECOMMIT, 1, 0, blake2b256(b"x"))
        with pytest.raises(ValueError, match="going back"):
            signer.record(SigningState(1, 0, Step.PROPOSE, blake2b256(b"x")))
        again = Signer(key("A"), CHAIN_ID, store)  # as after a restart
        assert again.state == SigningState(1, 0, Step.PREVOTE, blake2b256(b"x"))
