"""Network namespaces for a localnet: each node in its own namespace, all on one bridge.

Topology of a localnet whose prefix is P and subnet 10.77.S.0/24 (both chosen when it
starts, so two localnets on one host never collide, and recorded in localnet.json)::

    root namespace   bridge Pbr, 10.77.S.1/24 (the host: API calls, the simulator)
                     veths Pv1, Pv2, ... enslaved to Pbr
    namespace P-node1  eth0 (the other end of Pv1) 10.77.S.11/24, lo
    namespace P-node2  eth0 (the other end of Pv2) 10.77.S.12/24, lo ...

Only names that start with the localnet's own prefix are ever created or deleted, and only
the localnet's own namespaces receive traffic. Everything here needs root (``ip netns``).

The pure parts (naming, address and subnet choice, parsing ``ip`` output) are separate from
the few functions that run ``ip``, so they are tested without root.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import LocalnetError

SUBNET_HEAD = "10.77"  # localnets take 10.77.S.0/24, S unused on this host
PREFIX_LEN = 24
BRIDGE_HOST = 1  # 10.77.S.1 is the host's address on the bridge
FIRST_NODE_HOST = 11  # nodes from 10.77.S.11 upward (S.2-S.10 left free for humans)
LAST_HOST = 254
IFACE = "eth0"  # the node's interface inside its namespace
API_PORT = 7545  # every node listens on the same ports, each on its own IP
P2P_PORT = 7001
NAME_HEAD = "iln"  # "iomtnode localnet"; prefix = NAME_HEAD + 4 hex digits
COMMAND_TIMEOUT_S = 15.0  # one `ip`/`nft` invocation; they take milliseconds
ROOT_HINT = ("--netns needs root (it creates network namespaces, a bridge and nftables "
             "rules): run it as root, e.g. `sudo iomtnode localnet up --netns`")


@dataclass
class NetnsInfo:
    """A localnet's namespaces as localnet.json records them, with its fault state.

    ``next_host`` is the next host number to hand out (addresses are not reused while the
    localnet runs, so an address a node left stays unused). ``blocked``, ``loss`` and
    ``delay`` are the faults in force (see :mod:`iomtnode.localnet.faults`).
    """

    prefix: str
    subnet: int  # S in 10.77.S.0/24
    next_host: int = FIRST_NODE_HOST
    blocked: list[tuple[str, str]] = field(default_factory=list)  # node pairs, sorted
    loss: dict[str, float] = field(default_factory=dict)  # node -> percent
    delay: dict[str, float] = field(default_factory=dict)  # node -> milliseconds

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def host_ip(self) -> str:
        return self.ip(BRIDGE_HOST)

    def ip(self, host: int) -> str:
        return f"{SUBNET_HEAD}.{self.subnet}.{host}"

    def namespace(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def veth(self, index: int) -> str:
        """The root-namespace end of the index-th node's (0-based) veth pair."""
        return f"{self.prefix}v{index + 1}"

    def take_ip(self, in_use: Iterable[str]) -> str:
        """A node address not in ``in_use``: the next never handed out, else (the subnet
        used up by moves) the lowest free one. Raises LocalnetError when all are taken."""
        used = set(in_use)
        for host in [*range(self.next_host, LAST_HOST + 1),
                     *range(FIRST_NODE_HOST, self.next_host)]:
            if self.ip(host) not in used:
                self.next_host = host + 1
                return self.ip(host)
        raise LocalnetError(f"no free address left in {self.ip(0)}/{PREFIX_LEN}")

    def to_json(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "subnet": self.subnet, "next_host": self.next_host,
                "blocked": [list(p) for p in self.blocked], "loss": dict(self.loss),
                "delay": dict(self.delay)}

    @classmethod
    def from_json(cls, doc: Any) -> NetnsInfo | None:
        if not isinstance(doc, dict):
            return None
        return cls(prefix=str(doc["prefix"]), subnet=int(doc["subnet"]),
                   next_host=int(doc.get("next_host", FIRST_NODE_HOST)),
                   blocked=[(str(a), str(b)) for a, b in doc.get("blocked", [])],
                   loss={str(k): float(v) for k, v in doc.get("loss", {}).items()},
                   delay={str(k): float(v) for k, v in doc.get("delay", {}).items()})


# ---- pure choices ------------------------------------------------------------------------

def choose_subnet(used: set[int], rng: random.Random) -> int:
    """A random S in 1..254 that no interface on this host uses (10.77.S.0/24)."""
    free = [s for s in range(1, 255) if s not in used]
    if not free:
        raise LocalnetError(f"every {SUBNET_HEAD}.S.0/24 subnet is in use on this host; "
                            f"stop other localnets (iomtnode localnet down --dir DIR)")
    return rng.choice(free)


def choose_prefix(taken: Iterable[str], rng: random.Random) -> str:
    """``iln`` + 4 hex digits that no existing namespace or link name starts with."""
    names = list(taken)
    for _ in range(1000):
        prefix = f"{NAME_HEAD}{rng.randrange(16 ** 4):04x}"
        if not any(n.startswith(prefix) for n in names):
            return prefix
    raise LocalnetError("no unused localnet name prefix found")  # pragma: no cover


def parse_subnets(ip_addr_output: str) -> set[int]:
    """The S of every 10.77.S.x address in ``ip -o -4 addr show`` output."""
    pattern = rf"inet {re.escape(SUBNET_HEAD)}\.(\d+)\."
    return {int(m) for m in re.findall(pattern, ip_addr_output)}


def parse_namespaces(ip_netns_output: str) -> list[str]:
    """Names from ``ip netns list`` (lines like ``name`` or ``name (id: 3)``)."""
    return [line.split()[0] for line in ip_netns_output.splitlines() if line.strip()]


def parse_links(ip_link_output: str) -> list[str]:
    """Interface names from ``ip -o link show`` (``3: name@peer: <...>``)."""
    names = []
    for line in ip_link_output.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


# ---- running ip ---------------------------------------------------------------------------

def require_tools(*, euid: int | None = None,
                  which: Callable[[str], str | None] = shutil.which) -> None:
    """Raise LocalnetError saying what to do unless this process is root with ``ip`` and
    ``nft`` on PATH."""
    if (os.geteuid() if euid is None else euid) != 0:
        raise LocalnetError(ROOT_HINT)
    if which("ip") is None:
        raise LocalnetError("--netns needs the `ip` command: apt-get install -y iproute2")
    if which("nft") is None:
        raise LocalnetError("--netns needs the `nft` command: apt-get install -y nftables")


def run(args: Sequence[str], *, stdin: str | None = None) -> str:
    """Run one command (``ip ...``, ``nft ...``); its stdout, or LocalnetError with stderr."""
    try:
        done = subprocess.run(list(args), input=stdin, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalnetError(f"`{' '.join(args)}` failed: {exc}") from None
    if done.returncode != 0:
        raise LocalnetError(f"`{' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def in_namespace(namespace: str) -> list[str]:
    """The command prefix that runs a program inside ``namespace``."""
    return ["ip", "netns", "exec", namespace]


def namespaces() -> list[str]:
    return parse_namespaces(run(["ip", "netns", "list"]))


def links() -> list[str]:
    return parse_links(run(["ip", "-o", "link", "show"]))


def used_subnets() -> set[int]:
    return parse_subnets(run(["ip", "-o", "-4", "addr", "show"]))


def new_info(rng: random.Random | None = None) -> NetnsInfo:
    """A prefix and subnet unused on this host right now."""
    rng = rng or random.Random()
    return NetnsInfo(prefix=choose_prefix([*namespaces(), *links()], rng),
                     subnet=choose_subnet(used_subnets(), rng))


def create_bridge(info: NetnsInfo) -> None:
    run(["ip", "link", "add", info.bridge, "type", "bridge"])
    run(["ip", "addr", "add", f"{info.host_ip}/{PREFIX_LEN}", "dev", info.bridge])
    run(["ip", "link", "set", info.bridge, "up"])


def create_node(info: NetnsInfo, name: str, index: int, ip: str) -> None:
    """A namespace for node ``name`` with ``ip`` on eth0, its veth enslaved to the bridge."""
    ns, veth = info.namespace(name), info.veth(index)
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", IFACE, "netns", ns])
    run(["ip", "link", "set", veth, "master", info.bridge, "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "addr", "add", f"{ip}/{PREFIX_LEN}", "dev", IFACE])
    run(["ip", "-n", ns, "link", "set", IFACE, "up"])


def replace_ip(info: NetnsInfo, name: str, old: str, new: str) -> None:
    """Remove ``old`` from the node's eth0, then add ``new`` (the node's connections on the
    old address go silent, as when a host leaves a network and joins another)."""
    ns = info.namespace(name)
    run(["ip", "-n", ns, "addr", "del", f"{old}/{PREFIX_LEN}", "dev", IFACE])
    run(["ip", "-n", ns, "addr", "add", f"{new}/{PREFIX_LEN}", "dev", IFACE])


def leftovers(prefix: str) -> list[str]:
    """Namespaces and links of this host whose name starts with ``prefix``."""
    return sorted(n for n in [*namespaces(), *links()] if n.startswith(prefix))


def busy_namespaces(prefix: str) -> dict[str, list[int]]:
    """The localnet's namespaces that still hold processes: {namespace: pids}."""
    busy: dict[str, list[int]] = {}
    for ns in namespaces():
        if ns.startswith(f"{prefix}-"):
            pids = [int(p) for p in run(["ip", "netns", "pids", ns]).split()]
            if pids:
                busy[ns] = pids
    return busy


def destroy(prefix: str) -> list[str]:
    """Delete every namespace and link whose name starts with ``prefix`` (veths, bridge).

    Deleting a namespace removes its nftables tables and its end of the veth; the root end
    goes with it, or is deleted here. Returns the names removed.
    """
    removed = []
    for ns in namespaces():
        if ns.startswith(f"{prefix}-"):
            run(["ip", "netns", "del", ns])
            removed.append(ns)
    for link in links():  # veths whose namespace a process still held, then the bridge
        if link.startswith(prefix) and link != f"{prefix}br":
            try:
                run(["ip", "link", "del", link])
            except LocalnetError:  # gone with its namespace meanwhile
                continue
            removed.append(link)
    if f"{prefix}br" in links():
        run(["ip", "link", "del", f"{prefix}br"])
        removed.append(f"{prefix}br")
    return removed
