"""Consensus drivers over real chains (LevelDB in tmp_path) and an in-test message bus,
for trio's autojump clock.

Authorities are named by one letter each ("ABCD", "ABCDEFG"); their keys derive from
the names. The proposer of height h, round r is names[(h + r) % n]. A :class:`Cluster`
holds one :class:`TNode` per name; links between nodes can be cut (:meth:`Bus.partition`)
and healed; :func:`sync_blocks` stands in for block relay and sync along the links.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import trio
from trio.testing import MockClock

from iomtnode.admission.blocktxs import chain_txs, serve
from iomtnode.admission.inbox import Progress
from iomtnode.admission.mempool import Mempool
from iomtnode.admission.messages import BlockTxs, GetBlockTxs
from iomtnode.chain.chain import Chain
from iomtnode.chain.feed import BlockFeed, each_block
from iomtnode.chain.writer import ChainWriter
from iomtnode.consensus.driver import ConsensusMessage, Driver, DriverConfig
from iomtnode.consensus.messages import ConsensusProposal, ConsensusVote
from iomtnode.consensus.proposals import compact_proposal
from iomtnode.consensus.signing import META_SIGNING_STATE, Signer, read_signing_record
from iomtnode.consensus.votes import (
    SigningState,
    Step,
    decode_proposal,
    sign_proposal,
    step_of,
)
from iomtnode.core.block import Block, Commit, decode_header
from iomtnode.core.crypto import SigningKey, blake2b256
from iomtnode.core.evidence import Evidence
from iomtnode.core.genesis import Genesis
from iomtnode.core.vote import NIL, decode_vote, sign_vote
from iomtnode.store import BlockStore

from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import admit

GENESIS_MS = 1_700_000_000_000
CONFIG = DriverConfig(block_interval_s=0.1, empty_block_interval_s=0.5, max_block_txs=100)
OUTSIDER = b"\x99" * 32  # a peer id that is no authority
SignedAt = tuple[int, int, Step]  # (height, round, step)


def genesis_of(names: str) -> Genesis:
    return Genesis(CHAIN_ID, GENESIS_MS, tuple(pub(n) for n in names), 1)


def jump_clock() -> MockClock:
    """trio's autojump clock, jumping only after 20 ms of real idleness: block commits fsync
    in a worker thread, and a clock that jumped meanwhile would fire every timeout. (The
    ``autojump_clock`` fixture of these tests.)"""
    return MockClock(autojump_threshold=0.02)


def key_of(public: bytes) -> SigningKey:
    """The key of an authority named by one letter, from its public key."""
    name = next(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if pub(c) == public)
    return key(name)


def signed_by(msg: ConsensusMessage) -> tuple[bytes, SignedAt, bytes]:
    """(signer, (height, round, step), block hash) of a consensus message."""
    if isinstance(msg, ConsensusProposal):
        p = decode_proposal(msg.proposal)
        return p.proposer, (p.height, p.round, Step.PROPOSE), p.block_hash
    v = decode_vote(msg.vote)
    return v.validator, (v.height, v.round, step_of(v.type)), v.block_hash


class MemoryMeta:
    """A signing state store in memory: a home's ``signing_state`` file, to lose at will."""

    def __init__(self, state: SigningState | None = None) -> None:
        self.values: dict[str, bytes] = {}
        if state is not None:
            self.values[META_SIGNING_STATE] = state.to_bytes()

    def get_meta(self, name: str) -> bytes | None:
        return self.values.get(name)

    def put_meta(self, name: str, value: bytes) -> None:
        self.values[name] = value


@dataclass
class Bus:
    """Delivers each broadcast to the linked running drivers (all, unless cut), and each
    request or answer for a proposed block's transactions to its one addressee."""

    nodes: dict[bytes, TNode] = field(default_factory=dict)
    links: set[frozenset[bytes]] | None = None  # None: every pair is linked
    sent: list[tuple[bytes, ConsensusMessage]] = field(default_factory=list)
    # (sender, receiver, message) of each broadcast message a running driver was given
    delivered: list[tuple[bytes, bytes, ConsensusMessage]] = field(default_factory=list)
    # (sender, message, excluded peers) of each broadcast that skipped some peers
    skipped: list[tuple[bytes, ConsensusMessage, frozenset[bytes]]] = field(
        default_factory=list)
    # (sender, addressee, message) of each request or answer sent, delivered or not
    direct: list[tuple[bytes, bytes, GetBlockTxs | BlockTxs]] = field(
        default_factory=list)
    on_own: Callable[[bytes, ConsensusMessage], None] | None = None
    changed: trio.Event = field(default_factory=trio.Event)  # links, commits, restarts

    def linked(self, a: bytes, b: bytes) -> bool:
        return self.links is None or frozenset((a, b)) in self.links

    def deliver(self, sender: bytes, msg: ConsensusMessage, exclude: frozenset[bytes],
                only: Iterable[bytes] | None = None) -> None:
        self.sent.append((sender, msg))
        if exclude:
            self.skipped.append((sender, msg, exclude))
        targets = set(only) if only is not None else None
        for peer_id, node in self.nodes.items():
            if peer_id == sender or peer_id in exclude or node.driver is None:
                continue
            if self.linked(sender, peer_id) and (targets is None or peer_id in targets):
                self.delivered.append((sender, peer_id, msg))
                node.driver.on_message(sender, msg)

    def send(self, sender: bytes, to: bytes, msg: GetBlockTxs | BlockTxs) -> bool:
        """Deliver ``msg`` to ``to`` alone, if it runs; False if not linked (a node not
        running is a connected peer that stays silent)."""
        self.direct.append((sender, to, msg))
        if not self.linked(sender, to):
            return False
        node = self.nodes.get(to)
        if node is not None and node.driver is not None:
            if isinstance(msg, GetBlockTxs):  # answered as the node's BlockTxsReactor does
                for answer in serve((node.driver.held_txs, chain_txs(node.chain)), msg):
                    self.send(to, sender, answer)
            else:
                node.driver.on_message(sender, msg)
        return True

    def partition(self, *groups: str) -> None:
        """Link only nodes within the same group (groups of names, e.g. "ABC", "D")."""
        before = self.links
        self.links = {frozenset((pub(a), pub(b))) for group in groups
                      for a, b in itertools.combinations(group, 2)}
        self._connect_new(before)
        self.poke()

    def heal(self) -> None:
        before, self.links = self.links, None
        self._connect_new(before)
        self.poke()

    def connected(self, node_id: bytes) -> None:
        """``node_id`` (just started) and each running node linked to it connect: both
        drivers are told, as the p2p router tells the consensus reactor."""
        for other in self.nodes:
            if other != node_id and self.linked(node_id, other):
                self._tell(node_id, other)

    def _connect_new(self, before: set[frozenset[bytes]] | None) -> None:
        """Each running pair linked now and not ``before`` connects (see :meth:`connected`)."""
        if before is None:
            return
        for a, b in itertools.combinations(self.nodes, 2):
            if self.linked(a, b) and frozenset((a, b)) not in before:
                self._tell(a, b)

    def _tell(self, a: bytes, b: bytes) -> None:
        node_a, node_b = self.nodes[a], self.nodes[b]
        if node_a.driver is not None and node_b.driver is not None:
            node_a.driver.peer_connected(b)
            node_b.driver.peer_connected(a)

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def own_signatures(self, signer: bytes) -> dict[SignedAt, set[bytes]]:
        """What ``signer`` signed (as sent, relays included), by (height, round, step)."""
        signed: dict[SignedAt, set[bytes]] = defaultdict(set)
        for _, msg in self.sent:
            who, at, block_hash = signed_by(msg)
            if who == signer:
                signed[at].add(block_hash)
        return signed


@dataclass
class FakeNetwork:
    """One node's view of the bus. Checks, for each message this node signed, that its
    persisted signing state already covers it (persist before sign). (A message sent
    without ``exclude`` and signed by another is a proof-of-lock prevote forwarded; a
    proposal sent again skips the peers known to hold it, and is not checked again.)"""

    bus: Bus
    me: bytes
    meta: MemoryMeta
    penalties: list[tuple[bytes, int, str]] = field(default_factory=list)
    committed_peers: dict[bytes, int] = field(default_factory=dict)  # peer_committed

    def send_consensus(self, peer_id: bytes, msg: GetBlockTxs | BlockTxs) -> bool:
        return self.bus.send(self.me, peer_id, msg)

    def broadcast_consensus(self, msg: ConsensusMessage,
                            exclude: frozenset[bytes] = frozenset(),
                            only: frozenset[bytes] | None = None) -> None:
        signer, at, _ = signed_by(msg)
        if not exclude and signer == self.me:  # made here (a relay names its source)
            raw = self.meta.get_meta(META_SIGNING_STATE)
            assert raw is not None, at
            state = read_signing_record(raw, self.me)
            assert state is not None and not state.permits(*at), at
            if self.bus.on_own is not None:
                self.bus.on_own(self.me, msg)
        self.bus.deliver(self.me, msg, exclude, only)

    def penalize_peer(self, peer_id: bytes, points: int, reason: str) -> None:
        self.penalties.append((peer_id, points, reason))

    def peer_committed(self, peer_id: bytes, height: int) -> None:
        self.committed_peers[peer_id] = max(height, self.committed_peers.get(peer_id, 0))


@dataclass
class EquivocatingNetwork(FakeNetwork):
    """The network of a Byzantine authority, the equivocating test double: each proposal
    and vote its driver signs goes to one half of the other nodes, and a conflicting twin
    (same height, round and step; another block: nil for a vote for a block, a made-up
    block hash for a nil vote, another valid block for a proposal), signed with the same
    key, goes to the other half. Its relays of others' messages are honest. Twins are
    deterministic, so resends repeat them exactly."""

    chain: Chain | None = None  # to build the other block of a twin proposal
    twins: int = 0

    def broadcast_consensus(self, msg: ConsensusMessage,
                            exclude: frozenset[bytes] = frozenset(),
                            only: frozenset[bytes] | None = None) -> None:
        signer, _, _ = signed_by(msg)
        if signer != self.me or (exclude and not isinstance(msg, ConsensusProposal)):
            super().broadcast_consensus(msg, exclude, only)  # a relay (own: resends)
            return
        others = sorted(p for p in self.bus.nodes if p != self.me)
        twin = self._twin(msg)
        self.bus.deliver(self.me, msg, frozenset(), only=others[::2])
        if twin is not None:
            self.twins += 1
            self.bus.deliver(self.me, twin, frozenset(), only=others[1::2])

    def _twin(self, msg: ConsensusMessage) -> ConsensusMessage | None:
        me = key_of(self.me)
        if isinstance(msg, ConsensusVote):
            v = decode_vote(msg.vote)
            other = blake2b256(b"twin" + msg.vote) if v.is_nil else NIL
            return ConsensusVote(sign_vote(me, CHAIN_ID, v.type, v.height, v.round,
                                           other).encode())
        p = decode_proposal(msg.proposal)
        assert self.chain is not None
        if self.chain.height + 1 != p.height:
            return None
        original = decode_header(msg.header)
        block = self.chain.build([], self.me, original.time_ms + 1).block
        twin = sign_proposal(me, CHAIN_ID, p.height, p.round, block.hash)
        return compact_proposal(twin.encode(), block)


@dataclass
class TNode:
    name: str
    bus: Bus
    store: BlockStore
    chain: Chain
    mempool: Mempool
    feed: BlockFeed
    writer: ChainWriter
    network: FakeNetwork
    meta: MemoryMeta
    driver: Driver | None = None
    scope: trio.CancelScope | None = None
    reported: list[Evidence] = field(default_factory=list)  # what on_evidence was given

    @property
    def id(self) -> bytes:
        return pub(self.name)

    def peer_heads(self) -> dict[bytes, int]:
        """The heads of the running nodes linked to this one (their p2p status)."""
        return {n.id: n.chain.height for n in self.bus.nodes.values()
                if n is not self and n.driver is not None and self.bus.linked(self.id, n.id)}

    def new_driver(self, config: DriverConfig = CONFIG, *, heads: bool = False,
                   inbox: Progress | None = None) -> Driver:
        signer = Signer(key(self.name), CHAIN_ID, self.meta)  # loads the persisted state
        self.driver = Driver(self.chain, self.mempool, self.writer, self.network, signer,
                             config, now_ms=lambda: GENESIS_MS + int(trio.current_time() * 1000),
                             on_evidence=self.reported.append,
                             peer_heads=self.peer_heads if heads else None, inbox=inbox,
                             wal=self.meta)  # the home's consensus_wal, beside signing_state
        return self.driver

    async def start(self, nursery: trio.Nursery, config: DriverConfig = CONFIG, *,
                    heads: bool = False, inbox: Progress | None = None) -> None:
        driver = self.new_driver(config, heads=heads, inbox=inbox)
        scope = self.scope = trio.CancelScope()

        async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await driver.run(task_status=task_status)

        await nursery.start(run)
        self.bus.connected(self.id)
        self.bus.poke()

    def stop(self) -> None:
        """Crash: the driver stops at once (its store and signing state stay)."""
        assert self.scope is not None
        self.scope.cancel()
        self.driver = None


class Cluster:
    """One :class:`TNode` per name over one bus; stores close when the block exits."""

    def __init__(self, tmp: Path, names: str, stack: contextlib.ExitStack,
                 nursery: trio.Nursery, *, signed_before: bool) -> None:
        self.tmp = tmp
        self.names = names
        self.genesis = genesis_of(names)
        self.bus = Bus()
        self.nursery = nursery
        self._stack = stack
        self.nodes: dict[str, TNode] = {}
        for name in names:
            meta = MemoryMeta(SigningState() if signed_before else None)
            self.nodes[name] = self._make(name, tmp / name, meta)

    def _make(self, name: str, path: Path, meta: MemoryMeta) -> TNode:
        store = self._stack.enter_context(BlockStore.open(path))
        chain = Chain(store, self.genesis)
        mempool = Mempool(chain, now_ms=lambda: GENESIS_MS + 10_000)
        feed = BlockFeed(chain.height)
        writer = ChainWriter(chain, feed, mempool.verifier, inline=True)  # a virtual clock
        feed.listen(mempool.committed)
        feed.listen(lambda committed: self.bus.poke())
        node = TNode(name, self.bus, store, chain, mempool, feed, writer,
                     FakeNetwork(self.bus, pub(name), meta), meta)
        self.bus.nodes[node.id] = node
        return node

    def make_byzantine(self, name: str) -> EquivocatingNetwork:
        """Give ``name`` (not started) the equivocating network (:class:`EquivocatingNetwork`)."""
        node = self.nodes[name]
        assert node.driver is None
        node.network = EquivocatingNetwork(self.bus, node.id, node.meta, chain=node.chain)
        return node.network

    def __getitem__(self, name: str) -> TNode:
        return self.nodes[name]

    def new_home(self, name: str, *, keep_data: bool) -> TNode:
        """Replace ``name`` (stopped) by the same key with no signing state: with its chain
        data (a deleted ``signing_state`` file), or on an empty store (a new home)."""
        old = self.nodes[name]
        assert old.driver is None, "stop the node first"
        if keep_data:
            old.meta.values.clear()
            old.network.meta = old.meta
            return old
        node = self._make(name, self.tmp / f"{name}-new", MemoryMeta())
        self.nodes[name] = node
        return node

    async def start(self, names: str | None = None, config: DriverConfig = CONFIG, *,
                    heads: bool = False) -> None:
        for name in names or self.names:
            await self.nodes[name].start(self.nursery, config, heads=heads)

    def running(self) -> list[TNode]:
        return [n for n in self.nodes.values() if n.driver is not None]


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, names: str = "ABCD", *, signed_before: bool = True,
                  sync: bool = False) -> AsyncIterator[Cluster]:
    """Nodes for ``names`` (no driver started yet). ``signed_before``: each starts with a
    persisted signing state (nothing signed), as ``iomtnode init`` writes it; else with
    none, as homes that lost it. ``sync``: run :func:`sync_blocks`, else
    :func:`relay_blocks`."""
    with contextlib.ExitStack() as stack:
        async with trio.open_nursery() as nursery:
            net = Cluster(tmp_path, names, stack, nursery, signed_before=signed_before)
            nursery.start_soon(sync_blocks if sync else relay_blocks, net)
            yield net
            nursery.cancel_scope.cancel()


async def relay_blocks(net: Cluster) -> None:
    """Stand-in for compact block relay: every commit is applied on every other node at
    once, running or not, linked or not."""
    send, receive = trio.open_memory_channel[tuple[Block, Commit, str]](float("inf"))
    for node in net.nodes.values():
        node.feed.listen(each_block(
            lambda block, commit, source, name=node.name: send.send_nowait((block, commit, name))))
    async for block, commit, source in receive:
        for node in net.nodes.values():
            if node.name != source:
                await node.writer.apply(block, commit, pub(source), lambda tx: False)


async def sync_blocks(net: Cluster) -> None:
    """Stand-in for relay and sync along the links: a running node takes the blocks it
    lacks from a running, linked node that has them, whenever something changed."""
    while True:
        changed = net.bus.changed
        for target in net.running():
            for source in net.running():
                if source is target or not net.bus.linked(source.id, target.id):
                    continue
                while target.chain.height < source.chain.height:
                    h = target.chain.height + 1
                    commit = source.chain.commit_at(h)
                    assert commit is not None
                    await target.writer.apply(source.chain.block_at(h), commit, source.id,
                                              lambda tx: False)
        with trio.move_on_after(0.5):
            await changed.wait()


async def wait_heights(nodes: Iterable[TNode], height: int, timeout: float = 120) -> None:
    """Wait (trio clock) until each node's chain reaches ``height``."""
    with trio.fail_after(timeout):
        for node in nodes:
            await node.feed.wait_for_height(height)


async def wait_until(predicate: Callable[[], bool], timeout: float = 60,
                     every: float = 0.1) -> None:
    """Re-check ``predicate`` every ``every`` seconds (trio clock) until it holds; fail
    after ``timeout``. (Each check is a jump of the autojump clock: not too often.)"""
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - a condition over several drivers
            await trio.sleep(every)


def assert_one_chain(nodes: Iterable[TNode], genesis: Genesis) -> int:
    """No two different blocks at any height on any of ``nodes``, and every block's
    certificate verifies against the authorities; returns the lowest head."""
    nodes = list(nodes)
    top = max(n.chain.height for n in nodes)
    for h in range(1, top + 1):
        hashes = {n.chain.block_at(h).hash for n in nodes if n.chain.height >= h}
        assert len(hashes) == 1, f"height {h} differs: {hashes}"
        holder = next(n for n in nodes if n.chain.height >= h)
        commit = holder.chain.commit_at(h)
        assert commit is not None
        commit.verify(genesis.authorities, CHAIN_ID)
    return min(n.chain.height for n in nodes)


def assert_no_double_signing(bus: Bus, names: str) -> None:
    for name in names:
        signed = bus.own_signatures(pub(name))
        twice = {at: hashes for at, hashes in signed.items() if len(hashes) > 1}
        assert not twice, f"{name} signed two things at {twice}"


def admit_tx() -> bytes:
    device = key("device1")
    return admit(key("A"), device.public, pub("stream1"), CHAIN_ID).raw
