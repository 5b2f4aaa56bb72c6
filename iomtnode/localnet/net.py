"""``Localnet``: N real ``iomtnode run`` processes, on loopback or in network namespaces,
with chaos controls.

::

    async with Localnet.start(nodes=4, path=tmp, netns=True) as net:
        await net.wait_for_height(5)
        await net.partition(["node1", "node2"], ["node3", "node4"])
        await net.heal()
        await net.loss(30.0); await net.delay(50.0, ["node2"]); await net.heal()
        await net.change_ip("node3"); await net.kill("node2"); await net.restart("node2")
        await net.check_invariants(k=3)

Loopback (the default): link faults are refusals by node id through the admin API.
``netns=True`` (root): each node in its own network namespace on a bridge, and link faults
are real dropped or delayed packets (see :mod:`iomtnode.localnet.faults`).

Resource handling: every process started here is stopped when the ``start`` block exits,
normally or by an exception or cancellation (SIGTERM, then SIGKILL after a bounded wait),
unless :meth:`Localnet.detach` was called; then the namespaces, bridge and delay proxies are
removed. ``attach`` controls a running localnet by the pids in its localnet.json and leaves
it running on exit. localnet.json is rewritten after every change (pids, addresses,
faults), so other processes (``localnet status``, ``down``) see the truth, and ``down``
removes what a crashed controller left.

Error handling: every wait has a deadline and ends in :class:`LocalnetTimeout` naming the
node and what it was waiting for; a node that exits while starting raises
:class:`LocalnetError` with the end of its log.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
import trio

from . import netns as netns_tools
from . import observe, procs, topology
from .errors import LocalnetError, LocalnetTimeout
from .faults import Faults, NftFaults, RefuseFaults
from .layout import Manifest, NodeEntry, add_node_home, open_or_prepare
from .rpc import CALL_TIMEOUT_S, call_api
from .view import NodeState

__all__ = ["Localnet", "LocalnetError", "LocalnetTimeout", "NodeState"]

log = structlog.get_logger(__name__)

START_TIMEOUT_S = 30.0  # a node's API must answer this soon after its process starts
WAIT_TIMEOUT_S = 60.0


class Localnet:
    """Control of a localnet's node processes. Make one with :meth:`start` or :meth:`attach`."""

    def __init__(self, manifest: Manifest, *, env: Mapping[str, str] | None = None,
                 owner: bool, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.manifest = manifest
        self._env = procs.child_env(env)
        self._owner = owner  # stop every process on exit
        self._start_timeout_s = start_timeout_s
        self._children: dict[str, trio.Process] = {}  # key: node name or "simulator"
        self._paused: set[str] = set()  # the fallback where /proc cannot tell
        self._unannounced: set[str] = set()  # paused while its address changed
        self._faults: Faults = NftFaults(self) if manifest.netns else RefuseFaults(self)

    # ---- lifecycle -------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def start(cls, nodes: int | None = None, *, path: Path | str,
                    authorities: int | None = None, devices: int = 0, rate: float = 0.0,
                    base_port: int | None = None, env: Mapping[str, str] | None = None,
                    start_timeout_s: float = START_TIMEOUT_S, supervisor: bool = False,
                    netns: bool = False) -> AsyncIterator[Localnet]:
        """Prepare ``path`` if it is new (else reuse its homes), start every node and wait
        until each API answers, then the simulator (``devices`` > 0 and ``rate`` > 0) against
        node1. ``supervisor`` records this process in localnet.json for ``localnet down``.
        ``netns``: each node in its own network namespace (root; raises LocalnetError
        saying what to do otherwise)."""
        if netns:
            netns_tools.require_tools()
        manifest = open_or_prepare(Path(path), nodes, authorities=authorities,
                                   base_port=base_port)
        live = [n.name for n in manifest.nodes if procs.pid_state(n.proc) != "gone"]
        if live:
            raise LocalnetError(f"{', '.join(live)} of {manifest.dir} still running; "
                                f"run: iomtnode localnet down --dir {manifest.dir}")
        await trio.to_thread.run_sync(topology.remove_stale, manifest)
        await trio.to_thread.run_sync(topology.place, manifest, procs.child_env(env), netns)
        manifest.devices, manifest.rate = devices, rate
        manifest.supervisor = procs.ref_of(os.getpid()) if supervisor else None
        net = cls(manifest, env=env, owner=True, start_timeout_s=start_timeout_s)
        try:
            async with trio.open_nursery() as nursery:
                for entry in manifest.nodes:
                    nursery.start_soon(net._start_node, entry.name)
            await net._start_simulator()
            log.info("localnet_started", dir=str(manifest.dir), nodes=len(manifest.nodes),
                     netns=manifest.netns.prefix if manifest.netns else None)
            yield net
        finally:
            if net._owner:
                await net.stop_all()

    @classmethod
    @asynccontextmanager
    async def attach(cls, path: Path | str, *, env: Mapping[str, str] | None = None
                     ) -> AsyncIterator[Localnet]:
        """Control the running localnet in ``path``; it keeps running after the block."""
        yield cls(Manifest.load(Path(path)), env=env, owner=False)

    def detach(self) -> None:
        """Leave the processes running when the ``start`` block exits (``up --detach``)."""
        self._owner = False

    async def stop_all(self) -> None:
        """Stop the simulator, then every node (shielded; tolerant of dead processes); then
        remove the namespaces, bridge and delay proxies of a netns localnet."""
        with trio.CancelScope(shield=True):
            self.refresh_from_disk()  # what `localnet chaos` restarted or added, too
            await self._stop_simulator()
            async with trio.open_nursery() as nursery:
                for entry in self.manifest.nodes:
                    nursery.start_soon(self.stop, entry.name)
            await self._faults.close()
            self.manifest.supervisor = None
            await trio.to_thread.run_sync(topology.teardown, self.manifest)
            log.info("localnet_stopped", dir=str(self.manifest.dir))

    # ---- nodes -----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.manifest.nodes]

    @property
    def env(self) -> dict[str, str]:
        """The environment every process of this localnet starts with."""
        return self._env

    @property
    def netns(self) -> bool:
        """Whether the nodes run in network namespaces (``start(netns=True)``)."""
        return self.manifest.netns is not None

    def node(self, name: str) -> NodeEntry:
        return self.manifest.node(name)

    def state(self, name: str) -> NodeState:
        """``up``, ``paused`` (SIGSTOP) or ``down`` (not running)."""
        entry = self.node(name)
        child = self._children.get(name)
        if child is not None and child.poll() is not None:  # reaps our own child
            del self._children[name]
        found = procs.pid_state(entry.proc)
        if found == "gone":
            return "down"
        return "paused" if found == "stopped" or name in self._paused else "up"

    def refresh_from_disk(self) -> None:
        """Adopt pids, addresses and faults that another process (``localnet chaos``) wrote."""
        observe.refresh_from_disk(self)

    async def call(self, name: str, method: str, *, timeout_s: float = CALL_TIMEOUT_S,
                   **params: Any) -> Any:
        """One API call on ``name`` (raises ApiError or NodeUnreachable)."""
        return await call_api(self.node(name).endpoint, method, timeout_s=timeout_s, **params)

    async def admin(self, name: str, method: str, **params: Any) -> Any:
        """An admin API call on ``name``, with its admin token."""
        return await self.call(name, method, token=self.node(name).admin_token, **params)

    async def status(self, name: str, *, timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """The node's ``status`` answer."""
        return await self.call(name, "status", timeout_s=timeout_s)

    async def _start_node(self, name: str) -> None:
        entry = self.node(name)
        child = await procs.spawn(topology.node_command(self.manifest, entry), entry.log,
                                  self._env)
        self._children[name] = child
        entry.proc = procs.ref_of(child.pid)
        self._paused.discard(name)
        self._unannounced.discard(name)  # it starts on its current address
        self.manifest.save()
        await observe.wait_up(self, name, child, self._start_timeout_s)
        await self._faults.node_up(name)
        log.info("node_started", node=name, pid=child.pid, api=entry.api)

    async def add_node(self) -> str:
        """Make one more node on this chain (a fresh home and key, not an authority, every
        other node its bootnode; in netns mode its own namespace), start it and wait until
        its API answers; returns its name. It catches up by block sync and is stopped with
        the others."""
        entry = add_node_home(self.manifest)
        await trio.to_thread.run_sync(topology.add_node, self.manifest, entry)
        await self._start_node(entry.name)
        return entry.name

    async def kill(self, name: str, *more: str) -> None:
        """SIGKILL ``name`` and ``more``, all before waiting for any; their homes stay."""
        entries = [self.node(n) for n in (name, *more)]
        await procs.kill_all({e.name: (e.proc, self._children.pop(e.name, None))
                              for e in entries if e.proc is not None})
        for entry in entries:
            entry.proc = None
            self._paused.discard(entry.name)
            log.info("node_killed", node=entry.name)
        self.manifest.save()

    async def stop(self, name: str) -> None:
        """Stop ``name`` gracefully (SIGTERM; SIGKILL after a bounded wait)."""
        entry = self.node(name)
        child = self._children.pop(name, None)
        if child is not None and entry.proc is not None and child.pid == entry.proc.pid:
            code: Any = await procs.stop_process(child)
        else:  # not ours, or adopted from localnet.json after our child died
            if child is not None:
                await procs.stop_process(child)  # reaps it
            if entry.proc is None:
                return
            code = await procs.stop_ref(entry.proc)
        entry.proc = None
        self._paused.discard(name)
        self.manifest.save()
        log.info("node_stopped", node=name, result=code)

    async def restart(self, name: str, *more: str) -> None:
        """Start ``name`` and ``more`` again at once on their homes (stopping any running)."""
        async with trio.open_nursery() as nursery:
            for each in (name, *more):
                nursery.start_soon(self._restart_one, each)
        if self.manifest.nodes[0].name in (name, *more):
            await self._restart_simulator()  # it streamed to the old node1 and dies with it

    async def _restart_one(self, name: str) -> None:
        if self.state(name) != "down":
            await self.stop(name)
        await self._start_node(name)
        log.info("node_restarted", node=name)

    async def pause(self, name: str) -> None:
        """SIGSTOP ``name``: its sockets stay open but nothing answers."""
        entry = self.node(name)
        if entry.proc is None or not procs.signal_ref(entry.proc, signal.SIGSTOP):
            raise LocalnetError(f"{name} is not running; cannot pause it")
        self._paused.add(name)
        log.info("node_paused", node=name)

    async def resume(self, name: str) -> None:
        """SIGCONT ``name`` after :meth:`pause`."""
        entry = self.node(name)
        if entry.proc is None or not procs.signal_ref(entry.proc, signal.SIGCONT):
            raise LocalnetError(f"{name} is not running; cannot resume it")
        self._paused.discard(name)
        await self._faults.node_up(name)
        if name in self._unannounced:
            await self._announce_listen(name)
        log.info("node_resumed", node=name)

    # ---- the simulator ---------------------------------------------------------------

    async def _start_simulator(self) -> None:
        m = self.manifest
        if m.devices <= 0 or m.rate <= 0 or procs.pid_state(m.simulator) != "gone":
            return
        target = m.nodes[0]
        child = await procs.spawn(procs.simulator_command(target, m.devices, m.rate),
                                  m.dir / "simulate.log", self._env)
        self._children["simulator"] = child
        m.simulator = procs.ref_of(child.pid)
        m.save()
        log.info("simulator_started", pid=child.pid, devices=m.devices, rate=m.rate,
                 node=target.name)

    async def _stop_simulator(self) -> None:
        child = self._children.pop("simulator", None)
        if child is not None:
            await procs.stop_process(child)
        if self.manifest.simulator is not None:  # no-op if that was the child
            await procs.stop_ref(self.manifest.simulator)
        self.manifest.simulator = None

    async def _restart_simulator(self) -> None:
        if self.manifest.devices > 0:
            await self._stop_simulator()
            await self._start_simulator()

    # ---- the network -----------------------------------------------------------------

    async def drop_peer(self, a: str, b: str) -> None:
        """Cut the link between ``a`` and ``b`` (both ways) until :meth:`heal`."""
        await self._faults.block([(a, b)])
        log.info("peers_dropped", a=a, b=b)

    async def partition(self, *groups: Sequence[str]) -> None:
        """Cut every link between nodes of different ``groups`` until :meth:`heal`."""
        pairs = [(a, b) for i, g in enumerate(groups) for h in groups[i + 1:]
                 for a in g for b in h]
        await self._faults.block(pairs)
        log.info("network_partitioned", groups=[list(g) for g in groups])

    async def isolate(self, name: str) -> None:
        """Cut every link of ``name`` to the other nodes until :meth:`heal` (its API stays
        reachable)."""
        self.node(name)
        await self._faults.block([(name, other) for other in self.names if other != name])
        log.info("node_isolated", node=name)

    async def loss(self, percent: float, names: Sequence[str] | None = None) -> None:
        """Drop ``percent`` of the packets on the links of ``names`` (default: every node)
        at random until :meth:`heal`. Needs netns mode."""
        targets = list(names) if names is not None else self.names
        await self._faults.loss(percent, targets)
        log.info("loss_added", percent=percent, nodes=targets)

    async def delay(self, ms: float, names: Sequence[str] | None = None) -> None:
        """Delay the p2p traffic into each of ``names`` (default: every node) by ``ms``
        milliseconds one way until :meth:`heal`; their open p2p connections are reset and
        re-dialed through the delay proxy. Needs netns mode."""
        targets = list(names) if names is not None else self.names
        await self._faults.delay(ms, targets)
        log.info("delay_added", ms=ms, nodes=targets)

    async def heal(self) -> None:
        """Undo every link fault: partitions, cut links, isolation, loss and delay (also
        faults another process made)."""
        await self._faults.heal()
        log.info("network_healed")

    async def move(self, name: str) -> str:
        """Move ``name``'s p2p listener to a new address and record it in localnet.json and
        config.toml; returns the new ``host:port``. Loopback: a new 127.0.0.N and free
        port. Netns: :meth:`change_ip`."""
        if self.netns:
            return await self.change_ip(name)
        address = topology.free_loopback_address(self.manifest)
        result = await self.admin(name, "admin_set_listen", address=address)
        moved = topology.record_p2p(self.manifest, name, result.get("p2p_address") or address)
        log.info("node_moved", node=name, p2p=moved)
        return moved

    async def change_ip(self, name: str) -> str:
        """Change ``name``'s IP under its live connections; returns the new ``host:port``.

        Netns: the old address is removed from the node's namespace and a new one added
        (its connections go silent), then the node is told through ``admin_set_listen``,
        as an OS reports a network change: it re-binds, publishes a new peer record and
        re-dials, and its peers re-dial the new address. A paused node is told when it
        resumes. Link faults follow the node. Loopback: :meth:`move`."""
        if not self.netns:
            return await self.move(name)
        old, new = await trio.to_thread.run_sync(topology.change_ip, self.manifest, name)
        await self._faults.readdressed()
        if self.state(name) == "up":
            await self._announce_listen(name)
        elif self.state(name) == "paused":
            self._unannounced.add(name)
        if name == self.manifest.nodes[0].name:
            await self._restart_simulator()  # its API connection was on the old address
        moved = self.node(name).p2p_listen
        log.info("node_ip_changed", node=name, old=old, new=new)
        return moved

    async def _announce_listen(self, name: str) -> None:
        await self.admin(name, "admin_set_listen", address=self.node(name).p2p_listen)
        self._unannounced.discard(name)

    # ---- observing -------------------------------------------------------------------

    async def wait_for_height(self, height: int, names: Sequence[str] | None = None, *,
                              timeout_s: float = WAIT_TIMEOUT_S) -> dict[str, int]:
        """Wait until each node of ``names`` (default: every running one) is at ``height``
        or above; return their heights. Raises LocalnetTimeout naming the laggards."""
        return await observe.wait_for_height(self, height, names, timeout_s)

    async def check_invariants(self, k: int = 3, names: Sequence[str] | None = None, *,
                               within_s: float = 0.0) -> dict[str, Any]:
        """Check that every running node (or ``names``) has the same block hash at every
        height they all have, and a head within ``k`` of the highest. Retries for up to
        ``within_s`` (a network settling after chaos); raises InvariantError with details."""
        return await observe.check_invariants(self, k, names, within_s)

    async def snapshot(self) -> list[dict[str, Any]]:
        """One row per node: name, state, pid, api, p2p and (if it answers) its status."""
        return await observe.snapshot(self)

    async def resources(self, name: str) -> dict[str, Any]:
        """``{pid, fds, rss_bytes, peers, remote_addresses}`` of running node ``name``:
        /proc figures of its process and the other ends of its p2p connections."""
        return await observe.resources(self, name)
