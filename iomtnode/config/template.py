"""config.toml as ``init`` writes it: every setting with a comment saying what it does (the
comments are also the descriptions docs/configuration.md is made of)."""

from __future__ import annotations

from .formats import CONFIG_VERSION
from .settings import Config, values_of

TEMPLATE = """\
# iomtnode configuration. Every setting can also be given as a command-line flag
# (highest precedence) or an IOMTNODE_<NAME> environment variable (e.g.
# IOMTNODE_API_LISTEN), which override this file. `iomtnode config show` prints every
# setting's value and where it came from; `iomtnode config validate` checks this file.

# The format of this file (iomtnode refuses a file of a newer format; docs/upgrading.md).
version = {version}

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

# While transactions are waiting, a block is proposed as soon as the previous one is final,
# but no sooner than this many seconds after the previous one was: at most one block per
# interval (each block costs every authority its votes and a synced write).
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

# Inbound connections at most from one IP address and from one /24 (IPv6 /48), and inbound
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
    """config.toml holding ``config``: every setting, commented, in format
    :data:`~.formats.CONFIG_VERSION`."""
    values = values_of(config) | {"version": CONFIG_VERSION}
    values["bootnodes"] = ", ".join(f'"{b}"' for b in config.bootnodes)
    return TEMPLATE.format(**values)
