"""A localnet on disk: N node homes sharing one genesis, fixed loopback ports, localnet.json.

Layout of a localnet directory::

    localnet.json   the manifest (mode 0600: it holds admin tokens), kept current while running
    Procfile        ``nodeI: iomtnode run --home nodeI`` lines, for ``cd DIR && honcho start``
    node1/ ...      ordinary node homes (see :mod:`iomtnode.home`), plus node.log
    simulate.log    the simulator's output, when one runs

Everything here is synchronous and starts no process, so a prepared directory can be run by
hand, by a Procfile or by :class:`iomtnode.localnet.net.Localnet`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, load_config, parse_hostport, render
from ..core.crypto import SigningKey
from ..core.genesis import Genesis
from ..home import Home, init_home
from ..store.files import write_atomic
from .errors import LocalnetDirError, LocalnetError
from .netns import NetnsInfo
from .ports import HOST, allocate_ports
from .rpc import Endpoint

MANIFEST_NAME = "localnet.json"
MANIFEST_VERSION = 1
CHAIN_ID = "iomt-localnet"
DEFAULT_BASE_PORT = 27000  # below Linux's ephemeral range (32768+), so dials rarely take them
MAX_NODES = 64
API_PATH = "/api/v1"
P2P_PATH = "/p2p/v1"


def node_name(index: int) -> str:
    """The name of the index-th node (0-based): node1, node2, ..."""
    return f"node{index + 1}"


def ws_url(hostport: str, path: str, *, tls: bool = False) -> str:
    """``ws://host:port/path`` for a ``host:port`` address (``wss://`` for the p2p path: peers
    speak TLS; and for an API with ``tls``)."""
    return f"{'wss' if tls or path == P2P_PATH else 'ws'}://{hostport}{path}"


def hostport_of(address: str) -> str:
    """``host:port`` of a ``ws://host:port/path`` URL (or of a plain ``host:port``)."""
    rest = address.split("://", 1)[-1]
    hostport = rest.split("/", 1)[0]
    parse_hostport(hostport, "address")  # validates
    return hostport


@dataclass
class ProcRef:
    """A process by pid plus its start time, so a pid reused by the OS is never mistaken."""

    pid: int
    start: int | None  # start time in clock ticks since boot (/proc/PID/stat field 22)

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start": self.start}

    @classmethod
    def from_json(cls, doc: Any) -> ProcRef | None:
        if not isinstance(doc, dict) or not isinstance(doc.get("pid"), int):
            return None
        return cls(doc["pid"], doc.get("start"))


@dataclass
class NodeEntry:
    """One node of a localnet, as localnet.json records it."""

    name: str
    node_id: str  # hex public key
    home: Path
    authority: bool
    api: str  # ws://host:port/api/v1, or wss:// for an API with TLS (then api_ca is set)
    p2p: str  # wss://host:port/p2p/v1
    admin_token: str
    proc: ProcRef | None = None
    api_ca: Path | None = None  # the node's api_tls_cert, trusted by the localnet's clients

    @property
    def api_listen(self) -> str:
        return hostport_of(self.api)

    @property
    def endpoint(self) -> Endpoint:
        """How a client reaches this node's API: its URL and the certificate to trust."""
        return Endpoint(self.api, self.api_ca)

    def move_api(self, hostport: str) -> None:
        """Put the API at ``hostport``, keeping its scheme (``wss://`` with TLS)."""
        self.api = ws_url(hostport, API_PATH, tls=self.api_ca is not None)

    @property
    def p2p_listen(self) -> str:
        return hostport_of(self.p2p)

    @property
    def log(self) -> Path:
        return self.home / "node.log"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "node_id": self.node_id, "home": str(self.home),
            "authority": self.authority, "api": self.api, "p2p": self.p2p,
            "admin_token": self.admin_token,
            "api_ca": str(self.api_ca) if self.api_ca else None,
            "pid": self.proc.pid if self.proc else None,
            "pid_start": self.proc.start if self.proc else None,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> NodeEntry:
        pid = doc.get("pid")
        return cls(
            name=doc["name"], node_id=doc["node_id"], home=Path(doc["home"]),
            authority=bool(doc["authority"]), api=doc["api"], p2p=doc["p2p"],
            admin_token=doc["admin_token"],
            proc=ProcRef(pid, doc.get("pid_start")) if isinstance(pid, int) else None,
            api_ca=Path(doc["api_ca"]) if doc.get("api_ca") else None,
        )


@dataclass
class Manifest:
    """localnet.json: the network's nodes, where they listen and which processes run them."""

    dir: Path
    chain_id: str
    genesis_hash: str
    nodes: list[NodeEntry]
    devices: int = 0
    rate: float = 0.0
    simulator: ProcRef | None = None
    supervisor: ProcRef | None = None  # a foreground `localnet up`, stopped by `down`
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    netns: NetnsInfo | None = None  # set while the nodes run in network namespaces
    proxies: dict[str, ProcRef] = field(default_factory=dict)  # node -> its delay proxy

    @property
    def path(self) -> Path:
        return self.dir / MANIFEST_NAME

    def node(self, name: str) -> NodeEntry:
        for entry in self.nodes:
            if entry.name == name:
                return entry
        names = ", ".join(n.name for n in self.nodes)
        raise LocalnetError(f"no node named {name!r} in {self.path} (nodes: {names})")

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION, "dir": str(self.dir), "chain_id": self.chain_id,
            "genesis_hash": self.genesis_hash, "created_ms": self.created_ms,
            "devices": self.devices, "rate": self.rate,
            "simulator": self.simulator.to_json() if self.simulator else None,
            "supervisor": self.supervisor.to_json() if self.supervisor else None,
            "nodes": [n.to_json() for n in self.nodes],
            "netns": self.netns.to_json() if self.netns else None,
            "proxies": {name: ref.to_json() for name, ref in self.proxies.items()},
        }

    def save(self) -> None:
        """Write localnet.json atomically and durably, mode 0600 (it holds the admin tokens):
        a temporary file of this process (``localnet chaos`` may save from another), synced,
        renamed over it, and the directory synced, so that after a crash or power cut
        ``localnet down`` still finds every process."""
        write_atomic(self.path, (json.dumps(self.to_json(), indent=2) + "\n").encode(), 0o600,
                     tmp=self.path.with_name(f".{MANIFEST_NAME}.{os.getpid()}.tmp"))

    @classmethod
    def load(cls, directory: Path | str) -> Manifest:
        directory = Path(directory).resolve()
        path = directory / MANIFEST_NAME
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise LocalnetDirError(f"{directory} is not a localnet ({MANIFEST_NAME} missing); "
                                f"run: iomtnode localnet prepare --dir {directory}") from None
        except (OSError, ValueError) as exc:
            raise LocalnetDirError(f"cannot read {path}: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != MANIFEST_VERSION:
            raise LocalnetDirError(f"{path} is not a version {MANIFEST_VERSION} localnet manifest")
        try:
            return cls(
                dir=directory, chain_id=doc["chain_id"], genesis_hash=doc["genesis_hash"],
                nodes=[NodeEntry.from_json(n) for n in doc["nodes"]],
                devices=int(doc.get("devices", 0)), rate=float(doc.get("rate", 0)),
                simulator=ProcRef.from_json(doc.get("simulator")),
                supervisor=ProcRef.from_json(doc.get("supervisor")),
                created_ms=int(doc.get("created_ms", 0)),
                netns=NetnsInfo.from_json(doc.get("netns")),
                proxies={str(name): ref for name, raw in (doc.get("proxies") or {}).items()
                         if (ref := ProcRef.from_json(raw)) is not None},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LocalnetDirError(f"{path} is malformed: {exc!r}") from None


def unused_loopback_host(manifest: Manifest) -> str:
    """A 127.0.0.N (all of 127/8 is loopback on Linux) that no node listens on yet."""
    used = {hostport_of(a).rsplit(":", 1)[0] for n in manifest.nodes for a in (n.api, n.p2p)}
    for i in range(2, 255):
        if f"127.0.0.{i}" not in used:
            return f"127.0.0.{i}"
    raise LocalnetError("no unused 127.0.0.N address left to move a node to")


def procfile(names: list[str], home_prefix: str) -> str:
    """Procfile lines ``nodeI: iomtnode run --home PREFIX/nodeI`` (PREFIX '' for none)."""
    lines = []
    for name in names:
        home = f"{home_prefix.rstrip('/')}/{name}" if home_prefix else name
        lines.append(f"{name}: iomtnode run --home {home}")
    return "\n".join(lines) + "\n"


def node_config(entry: NodeEntry, peers: list[NodeEntry], base: Config | None = None) -> Config:
    """The config of ``entry``: its own listeners, every other node's p2p address as bootnode,
    and connection limits that fit every node of the localnet on one IP address.

    The defaults suit a real network, where one IP (or /24) holding many of a node's peers is
    suspect. Here every node is on 127.0.0.1: each may have every other as an inbound peer and
    in its handshake at once (a restart of all), and a ban by address would shut them all out,
    so bans are by node id only. Every client of a local network (load generators,
    benchmarks, the CLI) comes from one address too, so a node takes as many API connections
    from one IP as it takes in all.
    """
    base = base or Config()
    others = len(peers) - 1
    return dataclasses.replace(
        base, api_listen=entry.api_listen, p2p_listen=entry.p2p_listen,
        bootnodes=tuple(p.p2p_listen for p in peers if p.name != entry.name),
        max_peers=max(base.max_peers, others + base.outbound_slots + 1),
        max_inbound_per_ip=max(base.max_inbound_per_ip, others),
        max_inbound_per_netgroup=max(base.max_inbound_per_netgroup, others),
        max_pending_per_ip=max(base.max_pending_per_ip, others),
        max_pending_per_netgroup=max(base.max_pending_per_netgroup, others),
        address_ban_s=0.0,
        api_max_connections_per_ip=base.api_max_connections,
    )


def rewrite_configs(manifest: Manifest) -> None:
    """Re-render every home's config.toml with the current listen addresses and bootnodes.

    Other settings already in config.toml are kept (IOMTNODE_* variables are not folded in).
    """
    for entry in manifest.nodes:
        path = Home(entry.home).config_path
        current = load_config(path, env={})
        path.write_text(render(node_config(entry, manifest.nodes, current)))


def prepare(directory: Path | str, nodes: int, *, authorities: int | None = None,
            base_port: int | None = DEFAULT_BASE_PORT, chain_id: str = CHAIN_ID,
            config: Config | None = None) -> Manifest:
    """Create a localnet in a new (or empty) ``directory`` and write its localnet.json.

    The first ``authorities`` nodes (default: every node) are the genesis
    authorities, admission threshold 1. Ports are two per node (api, p2p), free at the
    time of the call.
    """
    if not 1 <= nodes <= MAX_NODES:
        raise LocalnetError(f"--nodes must be between 1 and {MAX_NODES}")
    k = nodes if authorities is None else authorities
    if not 1 <= k <= nodes:
        raise LocalnetError(f"--authorities must be between 1 and the number of nodes ({nodes})")
    directory = Path(directory).resolve()
    if (directory / MANIFEST_NAME).exists():
        raise LocalnetDirError(f"{directory} is already a localnet; reuse it with `localnet up`, "
                            f"or remove it first")
    if directory.exists() and any(directory.iterdir()):
        raise LocalnetDirError(f"{directory} exists and is not empty; pick a new directory")
    keys = [SigningKey.generate() for _ in range(nodes)]
    genesis = Genesis(chain_id=chain_id, time_ms=int(time.time() * 1000),
                      authorities=tuple(key.public for key in keys[:k]), admission_threshold=1)
    ports = allocate_ports(2 * nodes, base=base_port or None)  # 0 or None: picked at random
    entries = [
        NodeEntry(name=node_name(i), node_id=keys[i].public.hex(),
                  home=directory / node_name(i), authority=i < k,
                  api=ws_url(f"{HOST}:{ports[2 * i]}", API_PATH),
                  p2p=ws_url(f"{HOST}:{ports[2 * i + 1]}", P2P_PATH), admin_token="")
        for i in range(nodes)
    ]
    directory.mkdir(parents=True, exist_ok=True)
    for entry, key in zip(entries, keys, strict=True):
        home = init_home(entry.home, genesis=genesis, key=key,
                         config=node_config(entry, entries, config))
        entry.admin_token = home.admin_token()
    manifest = Manifest(dir=directory, chain_id=chain_id, genesis_hash=genesis.hash.hex(),
                        nodes=entries)
    manifest.save()
    (directory / "Procfile").write_text(
        f"# run this localnet without Python's supervision: cd {directory} && honcho start\n"
        + procfile([e.name for e in entries], ""))
    return manifest


def add_node_home(manifest: Manifest) -> NodeEntry:
    """Make a home for one more node of ``manifest``'s chain (a fresh key, so not an
    authority: the genesis is unchanged) on two free ports, every other node its bootnode;
    add it to the manifest and save it. Starts no process."""
    if len(manifest.nodes) >= MAX_NODES:
        raise LocalnetError(f"a localnet holds at most {MAX_NODES} nodes")
    genesis = Home(manifest.nodes[0].home).load_genesis()
    key = SigningKey.generate()
    name = node_name(len(manifest.nodes))
    api, p2p = allocate_ports(2)
    entry = NodeEntry(name=name, node_id=key.public.hex(), home=manifest.dir / name,
                      authority=False, api=ws_url(f"{HOST}:{api}", API_PATH),
                      p2p=ws_url(f"{HOST}:{p2p}", P2P_PATH), admin_token="")
    home = init_home(entry.home, genesis=genesis, key=key,
                     config=node_config(entry, manifest.nodes))
    entry.admin_token = home.admin_token()
    manifest.nodes.append(entry)
    manifest.save()
    return entry


def open_or_prepare(directory: Path | str, nodes: int | None, **prepare_args: Any
                    ) -> Manifest:
    """The localnet in ``directory``, prepared first if the directory is new or empty.

    An existing localnet is reused as it is; ``nodes`` (if given) must match it.
    """
    directory = Path(directory).resolve()
    if (directory / MANIFEST_NAME).exists():
        manifest = Manifest.load(directory)
        if nodes is not None and nodes != len(manifest.nodes):
            raise LocalnetDirError(f"{directory} holds a {len(manifest.nodes)}-node localnet, not "
                                f"{nodes}; drop --nodes to reuse it or pick a new directory")
        for entry in manifest.nodes:
            Home(entry.home).check()
        return manifest
    with contextlib.suppress(FileNotFoundError):
        if any(directory.iterdir()):
            raise LocalnetDirError(f"{directory} is not empty and holds no {MANIFEST_NAME}; "
                                f"pick a new directory")
    return prepare(directory, 4 if nodes is None else nodes, **prepare_args)
