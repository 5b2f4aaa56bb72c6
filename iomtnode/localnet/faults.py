"""Network faults of a localnet, undone by ``heal``: two ways to break the same links.

- :class:`RefuseFaults` (loopback): nodes refuse each other by node id through the admin API
  (``admin_refuse_peers``); the processes share one loopback, so nothing lower is possible.
  Loss and delay need real links and raise :class:`LocalnetError`.
- :class:`NftFaults` (``--netns``): real packets are dropped or delayed by nftables rules in
  the node namespaces (see :mod:`iomtnode.localnet.nft`); the nodes are not told. The fault
  state lives in localnet.json, so another process attached to the localnet (``localnet
  chaos``) adds to it, and ``heal`` clears all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Protocol

import structlog
import trio

from . import netns, procs
from .delayproxy import MAX_DELAY_MS
from .errors import LocalnetError
from .layout import Manifest
from .nft import BASIS_POINTS, NodeRules, render
from .topology import node_ip, proxy_command
from .view import LocalnetView

log = structlog.get_logger(__name__)

MIN_LOSS_PERCENT = 100 / BASIS_POINTS  # 0.01 %: one packet in BASIS_POINTS, the finest draw
PROXY_START_S = 10.0  # the delay proxy must be listening this soon after it starts
PROXY_LISTENING = b"delay_proxy_listening"  # its log line once the listener is bound


class Faults(Protocol):
    async def block(self, pairs: Sequence[tuple[str, str]]) -> None: ...
    async def heal(self) -> None: ...
    async def loss(self, percent: float, names: Sequence[str]) -> None: ...
    async def delay(self, ms: float, names: Sequence[str]) -> None: ...
    async def node_up(self, name: str) -> None: ...
    async def readdressed(self) -> None: ...
    async def close(self) -> None: ...


def check_pairs(manifest: Manifest, pairs: Sequence[tuple[str, str]]) -> None:
    for a, b in pairs:
        manifest.node(a)  # each raises for an unknown name
        manifest.node(b)
        if a == b:
            raise LocalnetError(f"a node cannot drop itself ({a})")


class RefuseFaults:
    """Loopback faults: refused node ids, re-sent to a node when it starts or resumes."""

    def __init__(self, net: LocalnetView) -> None:
        self._net = net
        self._refused: dict[str, set[str]] = {n: set() for n in net.names}
        self._pending: set[str] = set()  # refused sets to send once the node answers again

    async def _apply(self, name: str) -> None:
        if self._net.state(name) != "up":
            self._pending.add(name)  # sent when it resumes or restarts
            return
        ids = sorted(self._net.node(n).node_id for n in self._refused.get(name, ()))
        await self._net.admin(name, "admin_refuse_peers", node_ids=ids)
        self._pending.discard(name)

    async def block(self, pairs: Sequence[tuple[str, str]]) -> None:
        check_pairs(self._net.manifest, pairs)
        for a, b in pairs:
            self._refused.setdefault(a, set()).add(b)
            self._refused.setdefault(b, set()).add(a)
        async with trio.open_nursery() as nursery:
            for name in sorted({n for pair in pairs for n in pair}):
                nursery.start_soon(self._apply, name)

    async def heal(self) -> None:
        """Clear every node's refused set (also on nodes another process cut off)."""
        for refused in self._refused.values():
            refused.clear()
        async with trio.open_nursery() as nursery:
            for name in self._net.names:
                nursery.start_soon(self._apply, name)

    async def loss(self, percent: float, names: Sequence[str]) -> None:
        raise LocalnetError("loss needs --netns: packets can only be dropped on real links "
                            "(start the localnet with `localnet up --netns`, as root)")

    async def delay(self, ms: float, names: Sequence[str]) -> None:
        raise LocalnetError("delay needs --netns: traffic can only be delayed on real links "
                            "(start the localnet with `localnet up --netns`, as root)")

    async def node_up(self, name: str) -> None:
        if self._refused.get(name) or name in self._pending:
            await self._apply(name)
        self._pending.discard(name)

    async def readdressed(self) -> None:
        return None  # refusals are by node id

    async def close(self) -> None:
        return None  # the refusals end with the processes


def node_rules(manifest: Manifest, name: str) -> NodeRules:
    """The nftables rules of node ``name`` from the fault state in ``manifest.netns``."""
    info = manifest.netns
    if info is None:
        raise LocalnetError("nftables faults need --netns")
    ip = {n.name: node_ip(n) for n in manifest.nodes}
    blocked = {ip[b if a == name else a] for a, b in info.blocked if name in (a, b)}
    return NodeRules(host_ip=info.host_ip, blocked=tuple(sorted(blocked)),
                     loss_percent=info.loss.get(name, 0.0),
                     lossy_peers=tuple(sorted(ip[n] for n in info.loss if n != name)),
                     delayed=name in info.delay)


class NftFaults:
    """Netns faults: nftables tables in the node namespaces, delay proxies beside them."""

    def __init__(self, net: LocalnetView) -> None:
        self._net = net
        self._proxies: dict[str, trio.Process] = {}  # the ones this process started

    @property
    def _manifest(self) -> Manifest:
        return self._net.manifest

    @property
    def _info(self) -> netns.NetnsInfo:
        info = self._manifest.netns
        if info is None:
            raise LocalnetError("this localnet's namespaces are gone; start it again")
        return info

    async def _apply(self, names: Sequence[str]) -> None:
        """Load the rules of ``names`` in all their namespaces at once. A connection
        dialed while one end's namespace has its new rules and the other's not yet is
        treated differently at each end (a delay's cut may reset only the far end, and a
        node waiting for a handshake answer then waits for its handshake timeout), so
        that moment is kept short."""
        self._manifest.save()
        failed: list[LocalnetError] = []

        async def load(name: str, script: str) -> None:
            command = [*netns.in_namespace(self._info.namespace(name)), "nft", "-f", "-"]
            try:
                await trio.to_thread.run_sync(partial(netns.run, command, stdin=script))
            except LocalnetError as exc:
                failed.append(exc)

        scripts = {name: render(node_rules(self._manifest, name)) for name in names}
        async with trio.open_nursery() as nursery:
            for name, script in scripts.items():
                nursery.start_soon(load, name, script)
        if failed:
            raise failed[0]

    def _sync(self) -> None:
        """Adopt localnet.json first: faults another process added stay in force."""
        self._net.refresh_from_disk()

    async def block(self, pairs: Sequence[tuple[str, str]]) -> None:
        check_pairs(self._manifest, pairs)
        self._sync()
        for a, b in pairs:
            pair = (min(a, b), max(a, b))
            if pair not in self._info.blocked:
                self._info.blocked.append(pair)
        await self._apply(sorted({n for pair in pairs for n in pair}))

    async def heal(self) -> None:
        """Stop every delay proxy (also ones another process made), then drop every table.

        In that order: while the rules still translate the addresses of a connection
        through a proxy, both of its ends see it close when the proxy exits. A table dropped
        first would leave the redirected end, and a dial that reached the proxy just before,
        talking to nobody until a packet of theirs drew a reset or a timeout expired.
        """
        self._sync()
        info = self._info
        info.blocked.clear()
        info.loss.clear()
        info.delay.clear()
        async with trio.open_nursery() as nursery:
            for name in list(self._manifest.proxies):
                nursery.start_soon(self._stop_proxy, name)
        await self._apply(self._net.names)  # saves localnet.json; nothing is redirected

    async def loss(self, percent: float, names: Sequence[str]) -> None:
        if not MIN_LOSS_PERCENT <= percent <= 100:  # below: a draw of 0 in 10,000, no loss
            raise LocalnetError(f"loss must be a percentage from {MIN_LOSS_PERCENT} to 100, "
                                f"not {percent}")
        for name in names:
            self._manifest.node(name)
        self._sync()
        for name in names:
            self._info.loss[name] = float(percent)
        await self._apply(self._net.names)  # the others spare these nodes' packets

    async def delay(self, ms: float, names: Sequence[str]) -> None:
        """Start a delay proxy for each node (a new one if its delay changed), then load
        rules that redirect the node's new p2p connections to it and reset the ones it has,
        which both ends then re-dial through the proxy (see :mod:`.nft`)."""
        if not 0 < ms <= MAX_DELAY_MS:
            raise LocalnetError(f"delay must be above 0 and at most {MAX_DELAY_MS:g} ms, "
                                f"not {ms}")
        for name in names:
            self._manifest.node(name)
        self._sync()
        failed: list[LocalnetError] = []

        async def replace(name: str) -> None:
            await self._stop_proxy(name)
            try:
                await self._start_proxy(name, ms)
            except LocalnetError as exc:
                failed.append(exc)

        async with trio.open_nursery() as nursery:  # at once: each starts a Python process
            for name in names:
                if self._info.delay.get(name) != ms:
                    nursery.start_soon(replace, name)
        if failed:
            raise failed[0]  # the proxies that did start are stopped by heal or close
        for name in names:
            self._info.delay[name] = float(ms)
        await self._apply(names)  # cuts the nodes' open p2p connections (see nft)

    async def node_up(self, name: str) -> None:
        return None  # the rules live in the namespace and outlive the node's process

    async def readdressed(self) -> None:
        self._sync()
        await self._apply(self._net.names)

    async def close(self) -> None:
        """Stop every delay proxy (the tables go with the namespaces)."""
        for name in list(self._manifest.proxies):
            await self._stop_proxy(name)
        self._manifest.save()

    async def _start_proxy(self, name: str, ms: float) -> None:
        entry = self._manifest.node(name)
        log_path = entry.home / "delayproxy.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        child = await procs.spawn(proxy_command(self._manifest, name, ms), log_path,
                                  self._net.env)
        self._proxies[name] = child
        self._manifest.proxies[name] = procs.ref_of(child.pid)
        self._manifest.save()
        with trio.move_on_after(PROXY_START_S):
            while PROXY_LISTENING not in log_path.read_bytes()[offset:]:
                if child.poll() is not None:
                    break
                await trio.sleep(0.05)
            else:
                log.info("delay_proxy_started", node=name, pid=child.pid, delay_ms=ms)
                return
        await self._stop_proxy(name)
        raise LocalnetError(f"the delay proxy of {name} did not start; end of {log_path}:\n"
                            f"{procs.log_tail(log_path)}")

    async def _stop_proxy(self, name: str) -> None:
        child = self._proxies.pop(name, None)
        if child is not None:
            await procs.stop_process(child, grace_s=2.0)
        ref = self._manifest.proxies.pop(name, None)
        if ref is not None:
            await procs.stop_ref(ref, grace_s=2.0)  # "not running" if that was the child
