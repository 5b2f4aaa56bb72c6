"""Free loopback ports for a localnet's listeners.

Ports are chosen, released, then bound by the node processes a moment later. A port the OS
hands out for ``bind(0)`` comes from its ephemeral range, which every outgoing connection
and every other ``bind(0)`` on the machine also draws from, so in that moment another
process could take it (two test workers starting localnets at once did). So without a base,
ports are drawn at random below the ephemeral range, where the OS never hands out ports.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

from .errors import LocalnetError

HOST = "127.0.0.1"
PICKED_PORTS_LOW = 10_000  # random ports are drawn from here up to the ephemeral range
EPHEMERAL_LOW = 32_768  # Linux's default first ephemeral port, if the kernel does not say
PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
MAX_DRAWS = 1_000  # random ports tried before giving up


def port_is_free(host: str, port: int) -> bool:
    """Whether a listener could bind ``host:port`` now (with SO_REUSEADDR, as trio binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_low() -> int:
    """The first port of the OS's ephemeral range."""
    try:
        return int(PORT_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return EPHEMERAL_LOW


def allocate_ports(count: int, *, host: str = HOST, base: int | None = None) -> list[int]:
    """``count`` distinct ports free on ``host`` right now.

    With ``base``, the first free ports from ``base`` upward (stable across runs, good for a
    Procfile); without, free ports drawn at random below the OS's ephemeral range (see the
    module's introduction). All are held bound until all are chosen.
    """
    if base is None:
        high = max(ephemeral_low(), PICKED_PORTS_LOW + 1)
        candidates = (random.randrange(PICKED_PORTS_LOW, high) for _ in range(MAX_DRAWS))
    else:
        candidates = iter(range(base, 65536))
    held: list[socket.socket] = []
    try:
        for port in candidates:
            if len(held) == count:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            held.append(s)
        if len(held) < count:
            where = f"from {base} upward" if base is not None else "below the ephemeral range"
            raise LocalnetError(f"not enough free ports on {host} {where}")
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()
