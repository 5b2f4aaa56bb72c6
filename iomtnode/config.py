"""Node settings: one frozen dataclass.

Precedence: flags > IOMTNODE_* environment variables > config.toml > defaults.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "IOMTNODE_"
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """A setting that is missing, of the wrong type or out of range (names the setting)."""


@dataclass(frozen=True, slots=True)
class Config:
    api_listen: str = "127.0.0.1:7545"
    api_max_connections: int = 256
    api_max_connections_per_ip: int = 32  # loopback too: local tools count
    api_idle_timeout_s: float = 300.0
    api_requests_per_s: float = 200.0  # per connection that proved no key the ledger knows
    p2p_listen: str = "127.0.0.1:7546"
    # the address peers are told to dial (HOST:PORT, HOST a DNS name or an IP); empty: the
    # listen address, or when that is a wildcard the local IP toward a known peer
    advertise_address: str = ""
    metrics_listen: str = ""  # Prometheus exposition at http://HOST:PORT/metrics; empty: off
    block_interval_s: float = 0.25
    empty_block_interval_s: float = 5.0
    mempool_max_txs: int = 50_000
    max_block_txs: int = 10_000
    log_level: str = "info"
    bootnodes: tuple[str, ...] = ()
    max_peers: int = 50
    outbound_slots: int = 10
    max_inbound_per_ip: int = 8
    max_inbound_per_netgroup: int = 16
    max_pending_per_ip: int = 4
    max_pending_per_netgroup: int = 8
    ban_s: float = 600.0
    address_ban_s: float = 600.0
    # consensus round timeouts (see consensus/machine.py Params) and message resending
    timeout_propose_s: float = 1.0
    timeout_prevote_s: float = 0.5
    timeout_precommit_s: float = 0.5
    timeout_delta_s: float = 0.5
    timeout_cap_s: float = 10.0
    resend_interval_s: float = 2.0
    fresh_grace_s: float = 0.0  # 0: twice the longest round-0 timeout
    # the API's TLS: PEM certificate (chain) and key files, relative to the home; both or none
    api_tls_cert: str = ""
    api_tls_key: str = ""
    audit_anchor_s: float = 60.0  # an authority's node anchors its audit log at least this often

    def __post_init__(self) -> None:
        for name in ("api_listen", "p2p_listen"):
            parse_hostport(getattr(self, name), name)
        for name in ("advertise_address", "metrics_listen"):
            if getattr(self, name):
                parse_hostport(getattr(self, name), name)
        for address in self.bootnodes:
            parse_hostport(address, "bootnodes entry")
        if not 1 <= self.api_max_connections <= 100_000:
            raise ConfigError("api_max_connections must be between 1 and 100,000")
        if not 1 <= self.api_max_connections_per_ip <= self.api_max_connections:
            raise ConfigError("api_max_connections_per_ip must be between 1 and "
                              "api_max_connections")
        if not 1 <= self.api_idle_timeout_s <= 86400:
            raise ConfigError("api_idle_timeout_s must be between 1 and 86400 seconds")
        if not 1 <= self.api_requests_per_s <= 1_000_000:
            raise ConfigError("api_requests_per_s must be between 1 and 1,000,000")
        if not 1 <= self.max_peers <= 1000:
            raise ConfigError("max_peers must be between 1 and 1000")
        if not 0 <= self.outbound_slots < self.max_peers:
            raise ConfigError("outbound_slots must be between 0 and max_peers - 1")
        for name in ("max_inbound_per_ip", "max_inbound_per_netgroup", "max_pending_per_ip",
                     "max_pending_per_netgroup"):
            if not 1 <= getattr(self, name) <= 1000:
                raise ConfigError(f"{name} must be between 1 and 1000")
        for name in ("ban_s", "address_ban_s"):
            if not 0 <= getattr(self, name) <= 30 * 86400:
                raise ConfigError(f"{name} must be between 0 and 30 days")
        if not 0.001 <= self.block_interval_s <= 60:
            raise ConfigError("block_interval_s must be between 0.001 and 60 seconds")
        if not self.block_interval_s <= self.empty_block_interval_s <= 3600:
            raise ConfigError("empty_block_interval_s must be between block_interval_s and 3600")
        if not 1 <= self.mempool_max_txs <= 10_000_000:
            raise ConfigError("mempool_max_txs must be between 1 and 10,000,000")
        if not 1 <= self.max_block_txs <= 10_000:
            raise ConfigError("max_block_txs must be between 1 and 10,000")
        for name in ("timeout_propose_s", "timeout_prevote_s", "timeout_precommit_s"):
            if not 0.01 <= getattr(self, name) <= 60:
                raise ConfigError(f"{name} must be between 0.01 and 60 seconds")
        if not 0 <= self.timeout_delta_s <= 60:
            raise ConfigError("timeout_delta_s must be between 0 and 60 seconds")
        longest = max(self.timeout_propose_s, self.timeout_prevote_s, self.timeout_precommit_s)
        if not longest <= self.timeout_cap_s <= 600:
            raise ConfigError("timeout_cap_s must be between the longest base timeout and 600")
        if not 0.05 <= self.resend_interval_s <= 60:
            raise ConfigError("resend_interval_s must be between 0.05 and 60 seconds")
        if not 0.1 <= self.audit_anchor_s <= 3600:
            raise ConfigError("audit_anchor_s must be between 0.1 and 3600 seconds")
        if not 0 <= self.fresh_grace_s <= 600:
            raise ConfigError("fresh_grace_s must be between 0 (automatic) and 600 seconds")
        if bool(self.api_tls_cert) != bool(self.api_tls_key):
            raise ConfigError("api_tls_cert and api_tls_key must be set together (or neither)")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")


TEMPLATE = """\
# iomtnode configuration. Every setting can also be given as a command-line flag
# (highest precedence) or an IOMTNODE_<NAME> environment variable (e.g.
# IOMTNODE_API_LISTEN), which override this file.

# Client API (JSON-RPC 2.0 over websocket at ws://HOST:PORT/api/v1).
api_listen = "{api_listen}"

# TLS for the client API: a PEM certificate (chain, the server's first) and its PEM private
# key, relative to this home or absolute. With both set the API speaks wss:// (TLS 1.3 only)
# and clients' key proofs are bound to this certificate; empty: plain ws://.
api_tls_cert = "{api_tls_cert}"
api_tls_key = "{api_tls_key}"

# Client connections at most, and at most from one IP address (127.0.0.1 included:
# raise it for local tools that open many connections).
api_max_connections = {api_max_connections}
api_max_connections_per_ip = {api_max_connections_per_ip}

# Seconds a client connection may send nothing while it holds no subscription.
api_idle_timeout_s = {api_idle_timeout_s}

# Requests a second per connection that proved no key the ledger knows (an authority, an
# active device or its patient), after a burst of 1000; further requests wait.
api_requests_per_s = {api_requests_per_s}

# Peer-to-peer listener (websocket at /p2p/v1).
p2p_listen = "{p2p_listen}"

# The address other nodes are told to dial, HOST:PORT, where HOST is a DNS name (resolved
# again on every dial) or an IP: set it behind NAT, in a container or a Kubernetes pod.
# Empty: the listen address, or when that is 0.0.0.0 the local IP toward a known peer.
advertise_address = "{advertise_address}"

# Prometheus metrics at http://HOST:PORT/metrics (docs/metrics.md); empty: no endpoint.
metrics_listen = "{metrics_listen}"

# Seconds between blocks while transactions are waiting (the least gap between blocks).
block_interval_s = {block_interval_s}

# Seconds after which an empty block is made when nothing is waiting.
empty_block_interval_s = {empty_block_interval_s}

# Pending transactions the mempool holds; more are refused until the next block.
mempool_max_txs = {mempool_max_txs}

# Transactions in one block (at most 10000).
max_block_txs = {max_block_txs}

# debug, info, warning or error.
log_level = "{log_level}"

# Peers to dial at start and whenever disconnected, as HOST:PORT of their p2p listener.
# Host names are resolved again on every dial (gateways move).
bootnodes = [{bootnodes}]

# Connected peers at most; of them, outbound_slots are kept for peers this node dials
# (inbound connections never take them; when inbound is full a newcomer evicts the least
# useful inbound peer from the most crowded network, see docs/p2p.md).
max_peers = {max_peers}
outbound_slots = {outbound_slots}

# Inbound connections at most from one IP address and from one /24 (IPv6 /64), and inbound
# handshakes in progress at once from each. A localnet, whose nodes all share 127.0.0.1,
# raises them to fit its nodes.
max_inbound_per_ip = {max_inbound_per_ip}
max_inbound_per_netgroup = {max_inbound_per_netgroup}
max_pending_per_ip = {max_pending_per_ip}
max_pending_per_netgroup = {max_pending_per_netgroup}

# Seconds a misbehaving peer's node id, and the IP address it came from, stay banned the
# first time (a repeat offender's ban doubles each time, up to a week). address_ban_s = 0
# bans by node id only (nodes that share one address, as a localnet's do).
ban_s = {ban_s}
address_ban_s = {address_ban_s}

# Consensus (networks of two or more authorities). Each round waits at most
# timeout_propose_s for the proposal, then timeout_prevote_s / timeout_precommit_s when
# votes are split; every later round waits timeout_delta_s longer, up to timeout_cap_s.
timeout_propose_s = {timeout_propose_s}
timeout_prevote_s = {timeout_prevote_s}
timeout_precommit_s = {timeout_precommit_s}
timeout_delta_s = {timeout_delta_s}
timeout_cap_s = {timeout_cap_s}

# Seconds between resends of this authority's votes while a height is undecided (peers
# that missed them, e.g. after a restart, catch up).
resend_interval_s = {resend_interval_s}

# An authority whose home has no signing state (new, or the file was lost) only observes
# for this many seconds (0: twice the longest round-0 timeout) and until it has heard from
# a quorum, then signs only above a floor past anything it could have signed before.
fresh_grace_s = {fresh_grace_s}

# Seconds an authority's node waits at most before anchoring the records of its audit log
# (reads of patients' records) on the ledger; 1,000 new records are anchored at once.
audit_anchor_s = {audit_anchor_s}
"""


def render(config: Config) -> str:
    values = dataclasses.asdict(config)
    values["bootnodes"] = ", ".join(f'"{b}"' for b in config.bootnodes)
    return TEMPLATE.format(**values)


def parse_hostport(value: str, name: str = "address") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _coerce(name: str, raw: Any, kind: type) -> Any:
    try:
        if kind is float and isinstance(raw, int | float | str) and not isinstance(raw, bool):
            return float(raw)
        if kind is int and isinstance(raw, int | str) and not isinstance(raw, bool):
            return int(raw)
        if kind is str and isinstance(raw, str):
            return raw
        if kind is tuple:  # a list of strings; from the environment, comma-separated
            items = raw.split(",") if isinstance(raw, str) else raw
            if isinstance(items, list | tuple) and all(isinstance(i, str) for i in items):
                return tuple(i.strip() for i in items if i.strip())
    except ValueError:
        pass
    raise ConfigError(f"setting {name} must be a {kind.__name__}, got {raw!r}")


def load_config(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Settings from ``path`` (if it exists), then ``env``, then ``overrides`` (None = unset)."""
    values: dict[str, Any] = {}
    if path is not None and path.exists():
        try:
            values.update(tomllib.loads(path.read_text()))
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
    env = os.environ if env is None else env
    fields = {f.name: f.type for f in dataclasses.fields(Config)}
    kinds = {"str": str, "float": float, "int": int, "tuple[str, ...]": tuple}
    for name in fields:
        if ENV_PREFIX + name.upper() in env:
            values[name] = env[ENV_PREFIX + name.upper()]
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    typed = {name: _coerce(name, v, kinds[str(fields[name])]) for name, v in values.items()}
    return Config(**typed)
