"""``status`` as JSON: one view of every service's figures (:class:`NodeStatus`), with
the keys and values scripts and the benchmark read."""

from __future__ import annotations

from typing import Any

from ..p2p.stats import P2PStats
from .interfaces import NodeStatus


def peers_to_json(p2p: P2PStats) -> list[dict[str, Any]]:
    return [{"node_id": p.node_id.hex(), "address": p.address, "outbound": p.outbound}
            for p in p2p.peers]


def deciding_round(status: NodeStatus) -> int:
    """The round being decided at height + 1 (its proposer: authorities[(height + 1 +
    round) mod N]); 0 on a node that only follows."""
    deciding = status.consensus.deciding
    if deciding is not None and deciding[0] == status.chain.height + 1:
        return deciding[1]
    return 0


def status_to_json(status: NodeStatus) -> dict[str, Any]:
    """Chain id, height, head hash, finalized height, authorities, mempool size, peers..."""
    chain, admission, node = status.chain, status.admission, status.node
    last_commit = node.last_commit
    return {
        "chain_id": chain.chain_id,
        "genesis_hash": chain.genesis_hash.hex(),
        "node_id": status.node_id.hex(),
        "version": status.version,
        "height": chain.height,
        "head_hash": chain.head_hash.hex(),
        "head_time_ms": chain.head_time_ms,
        "finalized_height": chain.height,  # a block is committed only with its certificate
        "authorities": [a.hex() for a in chain.authorities],
        "round": deciding_round(status),
        "authorities_with_evidence": [a.hex() for a in chain.authorities_with_evidence],
        "mempool_size": admission.pending_txs,
        # accepted transactions dropped, ever (each with its reason: get_tx_status)
        "dropped_txs": admission.dropped_txs,
        "committed_txs": chain.committed_txs,
        # transactions that reached admission since the start (from clients, the node
        # itself and peers), and of those the refused (by reason: the metrics)
        "received_txs": sum(admission.received_txs.values()),
        "rejected_txs": sum(admission.rejected_txs.values()),
        # its committed transactions and the wall-clock ms just after its latest commit
        # (None before its first since it started): an exact point of its progress
        "last_commit": None if last_commit is None
        else {"committed_txs": last_commit[0], "time_ms": last_commit[1]},
        # transaction signatures this node has checked: about one per transaction
        # (a bench checks this against the readings it finalized)
        "signatures_verified": admission.signatures_verified,
        "peers": peers_to_json(status.p2p),
        "p2p_address": status.p2p.address,
        "sync_target": status.sync.target,
        "catch_ups": list(status.sync.catch_ups),
        # from a reading's own timestamp (its device's clock) to this node
        "gossip_delay_ms": node.gossip_delay_ms,
        "commit_delay_ms": node.commit_delay_ms,
        # from the peer that admitted a client's transaction to its admission here (the
        # peer's stamp on its push: the gossip hop, with the clocks of both)
        "delivery_delay_ms": node.delivery_delay_ms,
        # equivocations this node saw in consensus (on the ledger: get_evidence)
        "evidence_seen": list(status.consensus.evidence_seen),
    }
