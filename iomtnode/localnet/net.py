"""``Localnet``: N real ``iomtnode run`` processes on loopback, with chaos controls.

::

    async with Localnet.start(nodes=4, path=tmp) as net:
        await net.wait_for_height(5)
        await net.partition(["node1", "node2"], ["node3", "node4"])
        await net.heal()
        await net.kill("node2"); await net.restart("node2")
        await net.check_invariants(k=3)

Resource handling: every process started here is stopped when the ``start`` block exits,
normally or by an exception or cancellation (SIGTERM, then SIGKILL after a bounded wait),
unless :meth:`Localnet.detach` was called. ``attach`` controls a running localnet by the pids
in its localnet.json and leaves it running on exit. localnet.json is rewritten after every
change (pids, addresses), so other processes (``localnet status``, ``down``) see the truth.

Error handling: every wait has a deadline and ends in :class:`LocalnetTimeout` naming the
node and what it was waiting for; a node that exits while starting raises
:class:`LocalnetError` with the end of its log.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

import structlog
import trio

from . import procs
from .invariants import InvariantError, invariant_report
from .layout import (
    P2P_PATH,
    LocalnetError,
    Manifest,
    NodeEntry,
    add_node_home,
    allocate_ports,
    hostport_of,
    open_or_prepare,
    rewrite_configs,
    unused_loopback_host,
    ws_url,
)
from .rpc import CALL_TIMEOUT_S, NodeUnreachable, call_api, gather

log = structlog.get_logger(__name__)

NodeState = Literal["up", "paused", "down"]
START_TIMEOUT_S = 30.0  # a node's API must answer this soon after its process starts
WAIT_TIMEOUT_S = 60.0
POLL_S = 0.2


class LocalnetTimeout(LocalnetError):
    """A localnet wait that ran out of time (names the node and the condition)."""


class Localnet:
    """Control of a localnet's node processes. Make one with :meth:`start` or :meth:`attach`."""

    def __init__(self, manifest: Manifest, *, env: Mapping[str, str] | None = None,
                 owner: bool, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.manifest = manifest
        self._env = procs.child_env(env)
        self._owner = owner  # stop every process on exit
        self._start_timeout_s = start_timeout_s
        self._children: dict[str, trio.Process] = {}  # key: node name or "simulator"
        self._refused: dict[str, set[str]] = {n.name: set() for n in manifest.nodes}
        self._paused: set[str] = set()  # the fallback where /proc cannot tell
        self._pending: set[str] = set()  # refused sets to send once the node answers again

    # ---- lifecycle -------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def start(cls, nodes: int | None = None, *, path: Path,
                    authorities: int | None = None, devices: int = 0, rate: float = 0.0,
                    base_port: int | None = None, env: Mapping[str, str] | None = None,
                    start_timeout_s: float = START_TIMEOUT_S, supervisor: bool = False
                    ) -> AsyncIterator[Localnet]:
        """Prepare ``path`` if it is new (else reuse its homes), start every node and wait
        until each API answers, then the simulator (``devices`` > 0 and ``rate`` > 0) against
        node1. ``supervisor`` records this process in localnet.json for ``localnet down``."""
        manifest = open_or_prepare(path, nodes, authorities=authorities, base_port=base_port)
        live = [n.name for n in manifest.nodes if procs.pid_state(n.proc) != "gone"]
        if live:
            raise LocalnetError(f"{', '.join(live)} of {manifest.dir} still running; "
                                f"run: iomtnode localnet down --dir {manifest.dir}")
        manifest.devices, manifest.rate = devices, rate
        manifest.supervisor = procs.ref_of(os.getpid()) if supervisor else None
        net = cls(manifest, env=env, owner=True, start_timeout_s=start_timeout_s)
        try:
            async with trio.open_nursery() as nursery:
                for entry in manifest.nodes:
                    nursery.start_soon(net._start_node, entry.name)
            await net._start_simulator()
            log.info("localnet_started", dir=str(manifest.dir), nodes=len(manifest.nodes))
            yield net
        finally:
            if net._owner:
                await net.stop_all()

    @classmethod
    @asynccontextmanager
    async def attach(cls, path: Path, *, env: Mapping[str, str] | None = None
                     ) -> AsyncIterator[Localnet]:
        """Control the running localnet in ``path``; it keeps running after the block."""
        yield cls(Manifest.load(path), env=env, owner=False)

    def detach(self) -> None:
        """Leave the processes running when the ``start`` block exits (``up --detach``)."""
        self._owner = False

    async def stop_all(self) -> None:
        """Stop the simulator, then every node (shielded; tolerant of dead processes)."""
        with trio.CancelScope(shield=True):
            await self._stop_simulator()
            async with trio.open_nursery() as nursery:
                for entry in self.manifest.nodes:
                    nursery.start_soon(self.stop, entry.name)
            self.manifest.supervisor = None
            self.manifest.save()
            log.info("localnet_stopped", dir=str(self.manifest.dir))

    # ---- nodes -----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.manifest.nodes]

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
        """Adopt pids and addresses that another process (e.g. ``localnet chaos``) wrote."""
        try:
            disk = Manifest.load(self.manifest.dir)
        except LocalnetError:
            return
        for entry in self.manifest.nodes:
            other = next((n for n in disk.nodes if n.name == entry.name), None)
            if other is None:
                continue
            if other.proc != entry.proc and procs.pid_state(other.proc) != "gone":
                entry.proc = other.proc
            entry.p2p = other.p2p
        if disk.simulator != self.manifest.simulator and procs.pid_state(disk.simulator) != "gone":
            self.manifest.simulator = disk.simulator

    async def call(self, name: str, method: str, *, timeout_s: float = CALL_TIMEOUT_S,
                   **params: Any) -> Any:
        """One API call on ``name`` (raises ApiError or NodeUnreachable)."""
        return await call_api(self.node(name).api, method, timeout_s=timeout_s, **params)

    async def admin(self, name: str, method: str, **params: Any) -> Any:
        """An admin API call on ``name``, with its admin token."""
        return await self.call(name, method, token=self.node(name).admin_token, **params)

    async def status(self, name: str, *, timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """The node's ``status`` answer."""
        return await self.call(name, "status", timeout_s=timeout_s)

    async def _start_node(self, name: str) -> None:
        entry = self.node(name)
        child = await procs.spawn(procs.node_command(entry), entry.log, self._env)
        self._children[name] = child
        entry.proc = procs.ref_of(child.pid)
        self._paused.discard(name)
        self.manifest.save()
        await self._wait_up(name, child)
        if self._refused[name]:
            await self._apply_refused(name)
        self._pending.discard(name)  # a fresh process refuses no one
        log.info("node_started", node=name, pid=child.pid, api=entry.api)

    async def _wait_up(self, name: str, child: trio.Process) -> None:
        entry = self.node(name)
        with trio.move_on_after(self._start_timeout_s):
            while True:
                if child.poll() is not None:
                    raise LocalnetError(
                        f"{name} exited with code {child.returncode} while starting; end of "
                        f"{entry.log}:\n{procs.log_tail(entry.log)}")
                try:
                    await self.call(name, "status", timeout_s=2.0)
                    return
                except NodeUnreachable:
                    await trio.sleep(POLL_S / 2)
        raise LocalnetTimeout(f"{name}'s API {entry.api} did not answer within "
                              f"{self._start_timeout_s} s of starting; see {entry.log}")

    async def add_node(self) -> str:
        """Make one more node on this chain (a fresh home and key, not an authority, every
        other node its bootnode), start it and wait until its API answers; returns its name.
        It catches up by block sync and is stopped with the others."""
        entry = add_node_home(self.manifest)
        self._refused[entry.name] = set()
        await self._start_node(entry.name)
        return entry.name

    async def kill(self, name: str) -> None:
        """SIGKILL ``name`` and wait until it is gone (its home stays for :meth:`restart`)."""
        entry = self.node(name)
        if entry.proc is not None and procs.signal_ref(entry.proc, signal.SIGKILL):
            child = self._children.pop(name, None)
            if child is not None:
                with trio.move_on_after(procs.KILL_WAIT_S):
                    await child.wait()  # reaps it, so the check below is immediate
            if not await procs.wait_gone(entry.proc, procs.KILL_WAIT_S):
                raise LocalnetTimeout(f"{name} (pid {entry.proc.pid}) outlived SIGKILL for "
                                      f"{procs.KILL_WAIT_S} s")
        entry.proc = None
        self._paused.discard(name)
        self.manifest.save()
        log.info("node_killed", node=name)

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

    async def restart(self, name: str) -> None:
        """Start ``name`` again on the same home and addresses (stopping it first if it runs)."""
        if self.state(name) != "down":
            await self.stop(name)
        await self._start_node(name)
        if name == self.manifest.nodes[0].name and self.manifest.devices > 0:
            await self._stop_simulator()  # it streamed to the old node1 and dies with it
            await self._start_simulator()
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
        if name in self._pending:
            await self._apply_refused(name)
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

    # ---- the network -----------------------------------------------------------------

    async def _apply_refused(self, name: str) -> None:
        if self.state(name) != "up":
            self._pending.add(name)  # sent when it resumes or restarts
            return
        ids = sorted(self.node(n).node_id for n in self._refused[name])
        await self.admin(name, "admin_refuse_peers", node_ids=ids)
        self._pending.discard(name)

    async def drop_peer(self, a: str, b: str) -> None:
        """Make ``a`` and ``b`` refuse each other (both ways) until :meth:`heal`."""
        await self._refuse([(a, b)])
        log.info("peers_dropped", a=a, b=b)

    async def partition(self, *groups: Sequence[str]) -> None:
        """Cut every link between nodes of different ``groups`` until :meth:`heal`."""
        pairs = [(a, b) for i, g in enumerate(groups) for h in groups[i + 1:]
                 for a in g for b in h]
        await self._refuse(pairs)
        log.info("network_partitioned", groups=[list(g) for g in groups])

    async def _refuse(self, pairs: list[tuple[str, str]]) -> None:
        touched: set[str] = set()
        for a, b in pairs:
            self.node(a)  # each raises for an unknown name
            self.node(b)
            if a == b:
                raise LocalnetError(f"a node cannot drop itself ({a})")
            self._refused[a].add(b)
            self._refused[b].add(a)
            touched |= {a, b}
        async with trio.open_nursery() as nursery:
            for name in sorted(touched):
                nursery.start_soon(self._apply_refused, name)

    async def heal(self) -> None:
        """Clear every node's refused set (also on nodes another process cut off)."""
        for refused in self._refused.values():
            refused.clear()
        async with trio.open_nursery() as nursery:
            for name in self.names:
                nursery.start_soon(self._apply_refused, name)
        log.info("network_healed")

    async def move(self, name: str) -> str:
        """Move ``name``'s p2p listener to a new loopback address (127.0.0.N) and free port;
        record it in localnet.json and config.toml. Returns the new ``host:port``."""
        host = unused_loopback_host(self.manifest)
        address = f"{host}:{allocate_ports(1, host=host)[0]}"
        result = await self.admin(name, "admin_set_listen", address=address)
        moved = hostport_of(result.get("p2p_address") or address)
        self.node(name).p2p = ws_url(moved, P2P_PATH)
        self.manifest.save()
        rewrite_configs(self.manifest)
        log.info("node_moved", node=name, p2p=moved)
        return moved

    # ---- observing -------------------------------------------------------------------

    def _running(self, names: Sequence[str] | None) -> list[str]:
        return list(names) if names is not None else [
            n for n in self.names if self.state(n) == "up"]

    async def wait_for_height(self, height: int, names: Sequence[str] | None = None, *,
                              timeout_s: float = WAIT_TIMEOUT_S) -> dict[str, int]:
        """Wait until each node of ``names`` (default: every running one) is at ``height``
        or above; return their heights. Raises LocalnetTimeout naming the laggards."""
        targets = self._running(names)
        heights: dict[str, Any] = {n: None for n in targets}
        with trio.move_on_after(timeout_s):
            while True:
                for name in targets:
                    if self.state(name) == "down":
                        raise LocalnetError(f"{name} is down while waiting for height {height};"
                                            f" see {self.node(name).log}")
                found = await gather({n: partial(self.status, n, timeout_s=2.0) for n in targets})
                for name, status in found.items():
                    if isinstance(status, dict):
                        heights[name] = status["height"]
                if all(h is not None and h >= height for h in heights.values()):
                    return heights
                await trio.sleep(POLL_S)
        raise LocalnetTimeout(f"height {height} not reached within {timeout_s} s: " + ", ".join(
            f"{n}={'no answer' if h is None else h}" for n, h in heights.items()))

    async def check_invariants(self, k: int = 3, names: Sequence[str] | None = None, *,
                               within_s: float = 0.0) -> dict[str, Any]:
        """Check that every running node (or ``names``) has the same block hash at every
        height they all have, and a head within ``k`` of the highest. Retries for up to
        ``within_s`` (a network settling after chaos); raises InvariantError with details."""
        deadline = trio.current_time() + within_s
        while True:
            urls = {n: self.node(n).api for n in self._running(names)}
            report = await invariant_report(urls, k)
            if not report["violations"]:
                log.info("invariants_held", heights=report["heights"], k=k)
                return report
            if trio.current_time() >= deadline:
                log.warning("invariants_violated", violations=report["violations"])
                raise InvariantError(report)
            await trio.sleep(0.5)

    async def snapshot(self) -> list[dict[str, Any]]:
        """One row per node: name, state, pid, api, p2p and (if it answers) its status."""
        up = [n for n in self.names if self.state(n) == "up"]
        found = await gather({n: partial(self.status, n, timeout_s=0.9) for n in up})
        rows = []
        for entry in self.manifest.nodes:
            status = found.get(entry.name)
            rows.append({
                "name": entry.name, "state": self.state(entry.name),
                "pid": entry.proc.pid if entry.proc else None, "api": entry.api,
                "p2p": entry.p2p, "authority": entry.authority,
                "status": status if isinstance(status, dict) else None,
            })
        return rows

