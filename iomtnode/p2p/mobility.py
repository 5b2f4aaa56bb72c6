"""Noticing that this node moved: the local address it reaches its peers from changed.

A gateway in an ambulance listens on a wildcard address (``0.0.0.0``) and its routable
address changes as it moves between networks. No error tells a process so: TCP
connections on the old address just go silent. The watcher asks the kernel which local
address it would use to reach a known peer (a UDP ``connect`` sends nothing) and, when
that changes, the node publishes a new peer record and re-dials its peers from the new
address (see :meth:`~.router.Router.address_changed`).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import structlog
import trio

log = structlog.get_logger(__name__)

WATCH_INTERVAL_S = 1.0  # how often the local address is looked up (a syscall, no traffic)
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def is_wildcard(host: str) -> bool:
    return host in WILDCARD_HOSTS


def local_ip_toward(remote_ip: str) -> str | None:
    """The local address the kernel would send from to reach ``remote_ip`` (None if none)."""
    family = socket.AF_INET6 if ":" in remote_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((remote_ip, 9))  # UDP: picks a route, sends nothing
            return str(probe.getsockname()[0])
        except OSError:
            return None


class AddressWatcher:
    """Calls ``on_change(new_ip)`` when ``probe()`` starts answering another address."""

    def __init__(self, probe: Callable[[], str | None],
                 on_change: Callable[[str], Awaitable[None]], current: str | None,
                 interval_s: float = WATCH_INTERVAL_S) -> None:
        self._probe = probe
        self._on_change = on_change
        self.current = current
        self._interval_s = interval_s

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        while True:
            ip = self._probe()
            if ip is not None and ip != self.current:
                log.info("local_address_changed", old=self.current, new=ip)
                self.current = ip
                await self._on_change(ip)
            await trio.sleep(self._interval_s)
