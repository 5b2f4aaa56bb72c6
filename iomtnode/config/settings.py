"""Node settings: one frozen dataclass whose every field is a key of config.toml.

Precedence: flags > ``IOMTNODE_*`` environment variables > config.toml > defaults (see
:mod:`.load`). A :class:`Config` holds only values that pass every rule of :mod:`.checks`:
constructing one that breaks any raises :class:`~.errors.ConfigError` naming them all.
No setting is a secret (the admin token and the keys are files of the home), so every
value may be printed (``iomtnode config show``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .checks import check
from .errors import ConfigError

ENV_PREFIX = "IOMTNODE_"
# the flags of ``iomtnode run`` (and ``config show``) that override a setting
# the flags that set a setting: run's own, and the global --log-level (iomtnode --log-level X run)
FLAGS = {"api_listen": "--api", "p2p_listen": "--p2p", "log_level": "--log-level"}


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
    block_interval_s: float = 0.05
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
        issues = check(values_of(self))
        if issues:
            raise ConfigError.of(issues)


def values_of(config: Config) -> dict[str, Any]:
    """Every setting of ``config`` by name (shallow: a tuple stays the same tuple)."""
    return {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}


def env_name(setting: str) -> str:
    """The environment variable that sets ``setting``: ``IOMTNODE_<NAME>``."""
    return ENV_PREFIX + setting.upper()


# each setting's type as config.toml holds it: str, int, float or tuple (a list of strings)
KINDS: dict[str, type] = {
    field.name: {"str": str, "int": int, "float": float, "tuple[str, ...]": tuple}[str(field.type)]
    for field in dataclasses.fields(Config)
}
DEFAULTS = values_of(Config())
