"""N real nodes (LevelDB in tmp_path) in one process on a :class:`~.memnet.MemoryNetwork`,
under a virtual clock.

Each test takes ``autojump_clock`` (pytest-trio's MockClock that jumps whenever every task
waits) and ``nursery``; :class:`Net` starts and stops nodes in it. Every node gets
:class:`~iomtnode.node.Clock` ``(net.now_ms, virtual=True)``: wall-clock ms follow trio's virtual
time from the genesis time on, and its blocking work runs inline (no worker thread for the
clock to jump over). Clients reach a node's API over the same memory network
(:meth:`Net.client`). Waits are on conditions (:meth:`Net.wait`) under ``trio.fail_after`` in
virtual seconds; a test's whole run takes a fraction of its virtual time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import trio

from iomtnode.client import ApiClient, open_client_on
from iomtnode.config import Config, parse_hostport
from iomtnode.consensus.machine import Params
from iomtnode.core.crypto import SigningKey
from iomtnode.core.genesis import Genesis
from iomtnode.home import Home, init_home
from iomtnode.node import Clock, Node, NodeInfo, Services

from ..core import sealkit as kit
from .memnet import MemoryNetwork

POLL_S = 0.01  # virtual seconds between checks of a condition over several nodes
BASE = Config(api_listen="127.0.0.1:0", p2p_listen="127.0.0.1:0", block_interval_s=0.02,
              empty_block_interval_s=0.3)
FAST = Params(timeout_propose_s=0.3, timeout_prevote_s=0.2, timeout_precommit_s=0.2,
              timeout_delta_s=0.1, timeout_cap_s=1.0)


class Running:
    """A started node: its services (``chain``, ``mempool``, ``p2p``, ``consensus``...) and
    what it was made of (``key``, ``genesis``, ``admin_token``, ``config``, ``home``)."""

    def __init__(self, node: Node, info: NodeInfo) -> None:
        self.node = node
        self.info = info
        self.services: Services = info.services

    def __getattr__(self, name: str) -> object:
        if name in Services.__slots__:
            return getattr(self.services, name)
        return getattr(self.node, name)


async def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30,
                   detail: Callable[[], str] = lambda: "") -> None:
    """Return once ``predicate()`` holds (checked every POLL_S of virtual time); raise
    AssertionError naming ``what`` (and ``detail()``) if it does not within ``timeout``."""
    try:
        with trio.fail_after(timeout):
            while not predicate():  # noqa: ASYNC110 - a condition over several nodes
                await trio.sleep(POLL_S)
    except trio.TooSlowError:
        raise AssertionError(f"not within {timeout} s: {what} {detail()}".rstrip()) from None


async def holds_for(predicate: Callable[[], object], seconds: float, what: str) -> None:
    """Check ``predicate()`` every POLL_S for ``seconds`` of virtual time (a window in which
    something must not happen); raise AssertionError naming ``what`` as soon as it fails."""
    with trio.move_on_after(seconds):
        while predicate():  # noqa: ASYNC110 - a condition over several nodes
            await trio.sleep(POLL_S)
        raise AssertionError(f"within {seconds} s: {what}")


class Net:
    """Nodes 0..n-1 with their own homes on one memory network; the first ``authorities``
    keys are the genesis authorities, and after them those of ``absent``, which never run (no
    block then gets a quorum without them). Nodes can be stopped and started again."""

    def __init__(self, tmp: Path, n: int, *, chain_id: str = "iomt-net", authorities: int = 1,
                 config: Config = BASE, params: Params | None = None,
                 virtual: bool = True, absent: Sequence[SigningKey] = ()) -> None:
        """``virtual=False``: for a test in real time (no ``autojump_clock``) whose nodes use
        worker threads and processes as in production."""
        self.network = MemoryNetwork()
        self.virtual = virtual
        self.config = config
        self.params = params
        self.t0 = int(time.time() * 1000)
        self.chain_id = chain_id
        self.keys = [SigningKey.generate() for _ in range(n)]
        self.genesis = Genesis(chain_id, self.t0, tuple(
            k.public for k in (*self.keys[:authorities], *absent)), 1)
        self.homes: list[Home] = [
            init_home(tmp / f"node{i}", genesis=self.genesis, key=k, config=config)
            for i, k in enumerate(self.keys)]
        self.nodes: list[Running | None] = [None] * n
        self.api: list[tuple[str, int]] = [("", 0)] * n
        self._scopes: list[trio.CancelScope | None] = [None] * n
        self._stopped: list[trio.Event | None] = [None] * n

    def now_ms(self) -> int:
        """The nodes' wall clock: the genesis time plus trio's (virtual) time."""
        return self.t0 + int(trio.current_time() * 1000)

    def make(self, i: int, bootnodes: tuple[str, ...] = (), *, home: Home | None = None,
             config: Config | None = None) -> Node:
        """Node ``i`` (not started), on this network with this net's clock."""
        config = replace(config or self.config, bootnodes=bootnodes)
        return Node(home or self.homes[i], config, clock=Clock(self.now_ms, virtual=self.virtual),
                    transport=self.network.transport(f"10.0.0.{i + 1}"),
                    consensus_params=self.params)

    async def start(self, nursery: trio.Nursery, i: int, bootnodes: tuple[str, ...] = (),
                    *, node: Node | None = None) -> Running:
        """Start node ``i`` (or ``node`` in its place) and return it once it serves."""
        node = node or self.make(i, bootnodes)
        scope, stopped = trio.CancelScope(), trio.Event()

        async def run(*, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED
                      ) -> None:
            try:
                with scope:
                    await node.run(task_status=task_status)
            finally:
                stopped.set()

        info = await nursery.start(run)
        running = Running(node, info)
        self.nodes[i], self._scopes[i], self._stopped[i] = running, scope, stopped
        host, _ = parse_hostport(node.config.api_listen)
        self.api[i] = (host, info.api_port)
        return running

    async def stop(self, i: int) -> None:
        """Cancel node ``i`` and wait until its store is closed."""
        scope, stopped = self._scopes[i], self._stopped[i]
        assert scope is not None and stopped is not None
        scope.cancel()
        with trio.fail_after(10):
            await stopped.wait()
        self.nodes[i] = None

    @asynccontextmanager
    async def client(self, i: int) -> AsyncIterator[ApiClient]:
        """A client of node ``i``'s API, over the memory network."""
        host, port = self.api[i]
        stream = await self.network.connect("10.0.9.9", host, port)
        async with open_client_on(stream, host) as client:
            yield client

    def node(self, i: int) -> Running:
        node = self.nodes[i]
        assert node is not None
        return node

    def live(self) -> list[Running]:
        return [n for n in self.nodes if n is not None]

    def p2p(self, i: int) -> str:
        p2p = self.node(i).p2p
        assert p2p is not None
        return p2p.address

    def heights(self) -> list[int | None]:
        return [n.chain.height if n is not None else None for n in self.nodes]

    async def wait(self, predicate: Callable[[], object], what: str, timeout: float = 30
                   ) -> None:
        """:func:`wait_for` with the nodes' heights in the failure."""
        await wait_for(predicate, what, timeout, lambda: f"(heights {self.heights()})")

    async def wait_height(self, height: int, nodes: list[Running] | None = None) -> None:
        nodes = self.live() if nodes is None else nodes
        await self.wait(lambda: all(n.chain.height >= height for n in nodes), f"height {height}")

    async def wait_mesh(self) -> None:
        """Until every live node is connected to every other."""
        n = len(self.live())
        await self.wait(lambda: all(len(node.p2p.host.peers()) == n - 1 for node in self.live()),
                        "full mesh")

    async def enroll(self, client: ApiClient, authority: SigningKey, device: SigningKey,
                     nodes: Sequence[Running] | None = None) -> SigningKey:
        """Admit ``device`` (approved by ``authority``) to a stream of its own and announce
        the stream's epoch 1 through ``client``; return once every one of ``nodes`` (default:
        the live ones) has committed both, so the device's readings (sealed to epoch 1, see
        ``sealkit.sealed_reading``) are accepted everywhere. Returns the stream key."""
        stream = SigningKey.generate()
        nodes = self.live() if nodes is None else nodes
        admission = kit.admit(authority, device.public, stream.public, self.chain_id)
        epoch = kit.announce(stream, self.chain_id)
        for tx in (admission, epoch):
            await client.call("submit_tx", tx=tx.raw.hex())
            await self.wait(lambda tx=tx: all(n.chain.store.tx_location(tx.id) for n in nodes),
                            f"{tx.kind_name} committed")
        return stream

    def same_chain(self, upto: int | None = None) -> bool:
        """Every live node has the same block at every height up to ``upto`` (default: the
        height they all have)."""
        live = self.live()
        if upto is None:
            upto = min(n.chain.height for n in live)
        hashes = {tuple(n.chain.block_at(h).hash for h in range(upto + 1)) for n in live}
        return len(hashes) == 1


async def start_net(net: Net, nursery: trio.Nursery) -> Net:
    """Start every node of ``net`` (all but the first boot from the first); wait for a mesh."""
    await net.start(nursery, 0)
    for i in range(1, len(net.nodes)):
        await net.start(nursery, i, (net.p2p(0),))
    await net.wait_mesh()
    return net
