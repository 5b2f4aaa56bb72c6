"""Where a localnet's nodes live on the network: loopback ports, or one namespace each.

``loopback`` (the default): every node on 127.0.0.1 with its own two ports. ``netns``: every
node in its own network namespace on a bridge (see :mod:`iomtnode.localnet.netns`), API and
p2p on the same two ports at its own IP. The mode is chosen at each start: addresses are
rewritten into localnet.json and the homes' config.toml (bootnodes included), and namespaces
a crashed run left behind are removed first (or refused while processes still use them).

The functions here run ``ip`` synchronously (milliseconds each); trio callers run them in a
worker thread.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import structlog

from ..config import load_config
from ..home import Home
from . import netns, procs
from .errors import LocalnetError
from .layout import (
    HOST,
    P2P_PATH,
    Manifest,
    NodeEntry,
    hostport_of,
    rewrite_configs,
    unused_loopback_host,
    ws_url,
)
from .ports import allocate_ports

log = structlog.get_logger(__name__)

WILDCARD = "0.0.0.0"  # inside a namespace: only the node's own address(es)


def host_of(url: str) -> str:
    return hostport_of(url).rsplit(":", 1)[0]


def node_ip(entry: NodeEntry) -> str:
    """The address the node's p2p listener is on (its namespace's IP in netns mode)."""
    return host_of(entry.p2p)


def set_address(entry: NodeEntry, ip: str) -> None:
    entry.move_api(f"{ip}:{netns.API_PORT}")
    entry.p2p = ws_url(f"{ip}:{netns.P2P_PORT}", P2P_PATH)


def node_command(manifest: Manifest, entry: NodeEntry) -> list[str]:
    """``iomtnode run`` for ``entry``; in netns mode inside its namespace, the API on every
    address of the namespace (so it stays reachable across :func:`change_ip`)."""
    if manifest.netns is None:
        return procs.node_command(entry)
    return [*netns.in_namespace(manifest.netns.namespace(entry.name)),
            *procs.node_command(entry, api_listen=f"{WILDCARD}:{netns.API_PORT}")]


def proxy_command(manifest: Manifest, name: str, delay_ms: float) -> list[str]:
    """The delay proxy of node ``name``, inside its namespace."""
    if manifest.netns is None:
        raise LocalnetError("a delay proxy runs only in --netns mode")
    return [*netns.in_namespace(manifest.netns.namespace(name)), sys.executable, "-m",
            "iomtnode.localnet.delayproxy", "--delay-ms", f"{delay_ms:g}"]


def remove_stale(manifest: Manifest) -> list[str]:
    """Remove the namespaces, links and delay proxies an earlier run of this localnet left
    (its controller crashed); refuse while processes still run in them."""
    if manifest.netns is None:
        return []
    prefix = manifest.netns.prefix
    busy = netns.busy_namespaces(prefix)
    if busy:
        shown = ", ".join(f"{ns} (pids {' '.join(map(str, p))})" for ns, p in busy.items())
        raise LocalnetError(f"namespaces of an earlier run still hold processes: {shown}; "
                            f"run: iomtnode localnet down --dir {manifest.dir}")
    return teardown(manifest)


def teardown(manifest: Manifest) -> list[str]:
    """Stop the delay proxies, delete the namespaces, veths and bridge that localnet.json
    names; record that none are left. Returns what was removed (names, ``proxy:NODE``)."""
    removed = []
    if manifest.proxies:
        procs.stop_refs_sync(list(manifest.proxies.values()), grace_s=2.0)
        removed += [f"proxy:{name}" for name in manifest.proxies]
    if manifest.netns is not None:
        removed += netns.destroy(manifest.netns.prefix)
        manifest.netns = None
    manifest.proxies = {}
    manifest.save()
    if removed:
        log.info("netns_removed", dir=str(manifest.dir), removed=removed)
    return removed


def free_loopback_address(manifest: Manifest) -> str:
    """``host:port`` on a 127.0.0.N no node listens on, with a port free there now."""
    host = unused_loopback_host(manifest)
    return f"{host}:{allocate_ports(1, host=host)[0]}"


def record_p2p(manifest: Manifest, name: str, address: str) -> str:
    """Record that ``name``'s p2p listener is at ``address`` (localnet.json, every
    config.toml's bootnodes); returns it as ``host:port``."""
    hostport = hostport_of(address)
    manifest.node(name).p2p = ws_url(hostport, P2P_PATH)
    manifest.save()
    rewrite_configs(manifest)
    return hostport


def place(manifest: Manifest, env: Mapping[str, str], netns_mode: bool) -> None:
    """Where the nodes listen at this start and how their APIs are reached: in namespaces
    (``netns_mode``) or on loopback ports, ``wss://`` for an API with TLS (see
    :func:`use_api_tls`, checked before any namespace is made)."""
    use_api_tls(manifest, env, netns_mode=netns_mode)
    (use_netns if netns_mode else use_loopback)(manifest)


def use_api_tls(manifest: Manifest, env: Mapping[str, str], *, netns_mode: bool) -> None:
    """Speak to each node's API as its ``iomtnode run`` will serve it: ``wss://``, trusting
    its own certificate, when its config (config.toml, then ``IOMTNODE_*`` in ``env``) sets
    ``api_tls_cert``; plain ``ws://`` otherwise. Recorded in localnet.json, so the commands
    that attach later (``status``, ``chaos``) do the same.

    In ``netns_mode`` a node's address is picked afresh at each start (and changed by
    ``change_ip``), so no certificate made beforehand can name it: refused, naming the node
    and the setting."""
    for entry in manifest.nodes:
        config = load_config(Home(entry.home).config_path, env=env)
        if config.api_tls_cert and netns_mode:
            raise LocalnetError(
                f"{entry.name} sets api_tls_cert: in --netns mode a node's address is chosen at "
                f"each start and its API certificate cannot name it; start without --netns, "
                f"or unset api_tls_cert and api_tls_key in {Home(entry.home).config_path}")
        entry.api_ca = entry.home / config.api_tls_cert if config.api_tls_cert else None
        entry.move_api(entry.api_listen)
    manifest.save()


def use_loopback(manifest: Manifest) -> None:
    """Put every node back on loopback ports if an earlier netns run moved them."""
    if all(host_of(n.api).startswith("127.") and host_of(n.p2p).startswith("127.")
           for n in manifest.nodes):
        return
    ports = allocate_ports(2 * len(manifest.nodes))
    for i, entry in enumerate(manifest.nodes):
        entry.move_api(f"{HOST}:{ports[2 * i]}")
        entry.p2p = ws_url(f"{HOST}:{ports[2 * i + 1]}", P2P_PATH)
    manifest.save()
    rewrite_configs(manifest)


def use_netns(manifest: Manifest) -> None:
    """Create a fresh namespace per node on a new bridge, with addresses unused on this host,
    and point localnet.json and the configs at them. On failure, removes what it made."""
    netns.require_tools()
    info = netns.new_info()
    for entry in manifest.nodes:
        set_address(entry, info.take_ip(node_ip(n) for n in manifest.nodes if n is not entry))
    manifest.netns = info
    manifest.save()  # before creating anything: `localnet down` can always clean up
    rewrite_configs(manifest)
    try:
        netns.create_bridge(info)
        for index, entry in enumerate(manifest.nodes):
            netns.create_node(info, entry.name, index, node_ip(entry))
    except BaseException:
        teardown(manifest)
        raise
    log.info("netns_created", prefix=info.prefix, bridge=info.bridge,
             subnet=f"{info.ip(0)}/{netns.PREFIX_LEN}", nodes=len(manifest.nodes))


def add_node(manifest: Manifest, entry: NodeEntry) -> None:
    """Give a node added to a running netns localnet its namespace and address."""
    info = manifest.netns
    if info is None:
        return
    set_address(entry, info.take_ip(node_ip(n) for n in manifest.nodes))
    manifest.save()
    rewrite_configs(manifest)
    netns.create_node(info, entry.name, manifest.nodes.index(entry), node_ip(entry))


def change_ip(manifest: Manifest, name: str) -> tuple[str, str]:
    """Give node ``name``'s namespace a new address in place of its old one; record it.
    Returns ``(old_ip, new_ip)``."""
    info = manifest.netns
    if info is None:
        raise LocalnetError("change_ip of a namespace needs --netns")
    entry = manifest.node(name)
    old = node_ip(entry)
    new = info.take_ip(node_ip(n) for n in manifest.nodes)
    netns.replace_ip(info, name, old, new)
    set_address(entry, new)
    manifest.save()
    rewrite_configs(manifest)
    return old, new
