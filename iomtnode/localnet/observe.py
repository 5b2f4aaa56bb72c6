"""Watching a localnet: its processes starting, heights, the invariants, one row per
node, a node's resources, and what other processes wrote to localnet.json.

Each function takes the :class:`~iomtnode.localnet.net.Localnet` it observes; the Localnet
methods of the same names call them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import structlog
import trio

from . import procs
from .errors import LocalnetError, LocalnetTimeout
from .invariants import InvariantError, invariant_report
from .layout import Manifest
from .rpc import NodeUnreachable, gather
from .view import LocalnetView

log = structlog.get_logger(__name__)

POLL_S = 0.2


def running(net: LocalnetView, names: Sequence[str] | None) -> list[str]:
    return list(names) if names is not None else [
        n for n in net.names if net.state(n) == "up"]


def refresh_from_disk(net: LocalnetView) -> None:
    """Adopt into ``net.manifest`` the pids, addresses and netns faults on disk."""
    mine = net.manifest
    try:
        disk = Manifest.load(mine.dir)
    except LocalnetError:
        return
    for entry in mine.nodes:
        other = next((n for n in disk.nodes if n.name == entry.name), None)
        if other is None:
            continue
        if other.proc != entry.proc and procs.pid_state(other.proc) != "gone":
            entry.proc = other.proc
        entry.p2p, entry.api, entry.api_ca = other.p2p, other.api, other.api_ca
    if disk.simulator != mine.simulator and procs.pid_state(disk.simulator) != "gone":
        mine.simulator = disk.simulator
    if mine.netns and disk.netns and disk.netns.prefix == mine.netns.prefix:
        mine.netns, mine.proxies = disk.netns, disk.proxies


async def wait_up(net: LocalnetView, name: str, child: trio.Process, timeout_s: float) -> None:
    """Wait until ``name``'s API answers; raise with its log if ``child`` exits first."""
    entry = net.node(name)
    with trio.move_on_after(timeout_s):
        while True:
            if child.poll() is not None:
                raise LocalnetError(
                    f"{name} exited with code {child.returncode} while starting; end of "
                    f"{entry.log}:\n{procs.log_tail(entry.log)}")
            try:
                await net.call(name, "status", timeout_s=2.0)
                return
            except NodeUnreachable:
                await trio.sleep(POLL_S / 2)
    raise LocalnetTimeout(f"{name}'s API {entry.api} did not answer within "
                          f"{timeout_s} s of starting; see {entry.log}")


async def wait_for_height(net: LocalnetView, height: int, names: Sequence[str] | None,
                          timeout_s: float) -> dict[str, int]:
    targets = running(net, names)
    heights: dict[str, Any] = {n: None for n in targets}
    with trio.move_on_after(timeout_s):
        while True:
            for name in targets:
                if net.state(name) == "down":
                    raise LocalnetError(f"{name} is down while waiting for height {height};"
                                        f" see {net.node(name).log}")
            found = await gather({n: partial(net.status, n, timeout_s=2.0) for n in targets})
            for name, status in found.items():
                if isinstance(status, dict):
                    heights[name] = status["height"]
            if all(h is not None and h >= height for h in heights.values()):
                return heights
            await trio.sleep(POLL_S)
    raise LocalnetTimeout(f"height {height} not reached within {timeout_s} s: " + ", ".join(
        f"{n}={'no answer' if h is None else h}" for n, h in heights.items()))


async def check_invariants(net: LocalnetView, k: int, names: Sequence[str] | None,
                           within_s: float) -> dict[str, Any]:
    deadline = trio.current_time() + within_s
    while True:
        apis = {n: net.node(n).endpoint for n in running(net, names)}
        report = await invariant_report(apis, k)
        if not report["violations"]:
            log.info("invariants_held", heights=report["heights"], k=k)
            return report
        if trio.current_time() >= deadline:
            log.warning("invariants_violated", violations=report["violations"])
            raise InvariantError(report)
        await trio.sleep(0.5)


async def snapshot(net: LocalnetView) -> list[dict[str, Any]]:
    up = [n for n in net.names if net.state(n) == "up"]
    found = await gather({n: partial(net.status, n, timeout_s=0.9) for n in up})
    rows = []
    for entry in net.manifest.nodes:
        status = found.get(entry.name)
        rows.append({
            "name": entry.name, "state": net.state(entry.name),
            "pid": entry.proc.pid if entry.proc else None, "api": entry.api,
            "p2p": entry.p2p, "authority": entry.authority,
            "status": status if isinstance(status, dict) else None,
        })
    return rows


def process_figures(pid: int, proc_root: Path = Path("/proc")) -> dict[str, int]:
    """``fds`` (open file descriptors) and ``rss_bytes`` (resident memory) of ``pid``."""
    base = proc_root / str(pid)
    try:
        fds = len(os.listdir(base / "fd"))
        status = (base / "status").read_text()
    except OSError as exc:
        raise LocalnetError(f"cannot read {base}: {exc}") from None
    rss_kb = next((int(line.split()[1]) for line in status.splitlines()
                   if line.startswith("VmRSS:")), 0)
    return {"fds": fds, "rss_bytes": rss_kb * 1024}


async def resources(net: LocalnetView, name: str) -> dict[str, Any]:
    """``{pid, fds, rss_bytes, peers, remote_addresses}`` of a running node: its process
    from /proc, its connections from ``admin_peers`` (``remote_addresses``: the other end
    of each, ``host:port``, sorted)."""
    entry = net.node(name)
    if entry.proc is None or net.state(name) == "down":
        raise LocalnetError(f"{name} is not running")
    figures = process_figures(entry.proc.pid)
    peers = (await net.admin(name, "admin_peers"))["peers"]
    return {"pid": entry.proc.pid, **figures, "peers": len(peers),
            "remote_addresses": sorted(p["address"] for p in peers)}
