"""The node's metrics: every figure its services keep, read when Prometheus scrapes.

:class:`NodeCollector` is a prometheus-client collector. It keeps no metric objects of its
own and the services call nothing of prometheus-client: at each scrape it reads the node's
:class:`~iomtnode.api.interfaces.NodeStatus` (the same record ``status`` shows, read at one
moment, with no other task running in between) and the API server's figures, and turns them
into metric families. So the hot paths pay nothing for metrics beyond the plain counters
their services keep anyway.

:data:`METRICS` is the list, a stable contract (docs/metrics.md shows it, and a test checks
that the two agree): names are ``iomtnode_*`` with their unit (``_seconds``, ``_bytes``) and
``_total`` for counters; labels take a small fixed set of values each (a direction, a
message kind, a source, a rule's name), never a device, patient or peer id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from ..admission.service import REASONS
from ..api.interfaces import NodeStatus, StatusSource
from ..api.server import ApiStats
from ..api.status import deciding_round
from ..metrics import Histogram

Kind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric of the contract: its name as exposed (a counter's with ``_total``; a
    histogram's without its ``_bucket``, ``_sum`` and ``_count`` series), type, labels and
    meaning."""

    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str


def _spec(name: str, kind: Kind, help: str, *labels: str) -> Spec:
    return Spec(name, kind, labels, help)


BUILD_INFO = _spec("iomtnode_build_info", "gauge", "Always 1; the node's version.", "version")
IS_AUTHORITY = _spec("iomtnode_is_authority", "gauge",
                     "1 when this node is one of the chain's authorities, else 0.")
HEIGHT = _spec("iomtnode_height", "gauge", "Height of the last committed (final) block.")
ROUND = _spec("iomtnode_round", "gauge",
              "Consensus round being decided at height + 1 (0 on a node that only follows).")
LAST_BLOCK_AGE = _spec("iomtnode_last_block_age_seconds", "gauge",
                       "Seconds from the head block's time to now.")
AUTHORITIES = _spec("iomtnode_authorities", "gauge", "Authorities of the chain at its head.")
COMMITTED = _spec("iomtnode_committed_transactions_total", "counter",
                  "Transactions in every block from genesis to the head.")
CONSENSUS_DROPPED = _spec("iomtnode_consensus_dropped_messages_total", "counter",
                          "Peers' consensus messages dropped because the queue was full.")
CONSENSUS_PENDING = _spec("iomtnode_consensus_pending_blocks", "gauge",
                          "Proposed blocks waiting for transactions from peers.")
MEMPOOL = _spec("iomtnode_mempool_transactions", "gauge",
                "Transactions admitted and waiting for a block.")
MEMPOOL_CAPACITY = _spec("iomtnode_mempool_capacity_transactions", "gauge",
                         "The mempool's bound; more are refused (mempool_full).")
QUEUED = _spec("iomtnode_admission_queued_transactions", "gauge",
               "Transactions received and waiting for admission, from every source.")
RECEIVED = _spec("iomtnode_transactions_received_total", "counter",
                 "Transactions that reached admission, by source (client, peer).", "source")
REJECTED = _spec("iomtnode_transactions_rejected_total", "counter",
                 "Transactions refused at admission, by the rule they broke.", "reason")
DROPPED = _spec("iomtnode_mempool_dropped_total", "counter",
                "Admitted transactions dropped before a block took them, by reason.", "reason")
SIGNATURES = _spec("iomtnode_signatures_verified_total", "counter",
                   "Transaction signatures verified (each transaction once per node).")
SUBMIT_TO_FINAL = _spec("iomtnode_submit_to_final_seconds", "histogram",
                        "Seconds from a reading's timestamp to its block's commit here.")
GOSSIP_DELAY = _spec("iomtnode_gossip_delay_seconds", "histogram",
                     "Seconds from a reading's timestamp to its admission here from a peer.")
PEERS = _spec("iomtnode_p2p_peers", "gauge", "Connected peers, by direction.", "direction")
MESSAGES = _spec("iomtnode_p2p_messages_total", "counter",
                 "Peer messages, by message kind and direction (in, out).", "kind", "direction")
BYTES = _spec("iomtnode_p2p_bytes_total", "counter",
              "Bytes of peer messages (frames), by message kind and direction.",
              "kind", "direction")
PENALTIES = _spec("iomtnode_p2p_penalties_total", "counter",
                  "Penalties given to peers, by reason.", "reason")
BANS = _spec("iomtnode_p2p_bans_total", "counter",
             "Peers banned (by their score or by the operator).")
BANNED_PEERS = _spec("iomtnode_p2p_banned_peers", "gauge", "Peer node ids banned now.")
BANNED_ADDRESSES = _spec("iomtnode_p2p_banned_addresses", "gauge", "Peer addresses banned now.")
REFUSED_PEERS = _spec("iomtnode_p2p_refused_peers", "gauge",
                      "Peer node ids the operator refuses (admin_refuse_peers).")
SYNC_TARGET = _spec("iomtnode_sync_target_height", "gauge",
                    "Height block sync heads for (the node's own when level).")
SYNCED = _spec("iomtnode_sync_blocks_total", "counter",
               "Blocks committed by catch-up (not by live relay).")
API_CONNECTIONS = _spec("iomtnode_api_connections", "gauge", "Open client API connections.")
API_ACCEPTED = _spec("iomtnode_api_connections_accepted_total", "counter",
                     "Client API connections accepted.")
API_REFUSED = _spec("iomtnode_api_connections_refused_total", "counter",
                    "Client API connections refused (over a connection limit).")
API_REQUESTS_REFUSED = _spec("iomtnode_api_requests_refused_total", "counter",
                             "Client API requests refused, by JSON-RPC error code.", "code")

METRICS: tuple[Spec, ...] = (
    BUILD_INFO, IS_AUTHORITY, HEIGHT, ROUND, LAST_BLOCK_AGE, AUTHORITIES, COMMITTED,
    CONSENSUS_DROPPED, CONSENSUS_PENDING, MEMPOOL, MEMPOOL_CAPACITY, QUEUED, RECEIVED,
    REJECTED, DROPPED, SIGNATURES, SUBMIT_TO_FINAL, GOSSIP_DELAY, PEERS, MESSAGES, BYTES,
    PENALTIES, BANS, BANNED_PEERS, BANNED_ADDRESSES, REFUSED_PEERS, SYNC_TARGET, SYNCED,
    API_CONNECTIONS, API_ACCEPTED, API_REFUSED, API_REQUESTS_REFUSED,
)

Sample = tuple[tuple[str, ...], float]  # label values, value


def family(spec: Spec, samples: Iterable[Sample]) -> Metric:
    """A gauge or counter family of ``spec`` with ``samples``."""
    metric: GaugeMetricFamily | CounterMetricFamily
    if spec.kind == "gauge":
        metric = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
    elif spec.kind == "counter":
        metric = CounterMetricFamily(spec.name.removesuffix("_total"), spec.help,
                                     labels=spec.labels)
    else:
        raise ValueError(f"{spec.name} is a {spec.kind}: use histogram()")
    for labels, value in samples:
        metric.add_metric(labels, value)
    return metric


def histogram(spec: Spec, latencies: Histogram) -> Metric:
    """``spec``'s histogram from a :class:`~iomtnode.metrics.Histogram` (ms) in seconds."""
    metric = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
    buckets: list[tuple[str, float]] = []
    below = 0
    for bound_ms, count in zip(latencies.bounds_ms, latencies.counts, strict=False):
        below += count
        buckets.append((floatToGoString(bound_ms / 1000), below))
    buckets.append(("+Inf", below + latencies.counts[-1]))
    metric.add_metric([], buckets, latencies.sum_ms / 1000)
    return metric


def one(value: float) -> list[Sample]:
    return [((), value)]


def by_label(counts: Mapping[str, int], known: Iterable[str] = ()) -> list[Sample]:
    """A sample per label value, ``known`` ones at 0 until counted: a series that appears only
    with its first event hides that event from ``rate()`` and ``increase()``."""
    every = dict.fromkeys(known, 0) | dict(counts)
    return [((label,), count) for label, count in sorted(every.items())]


class NodeCollector:
    """Reads a node's figures at each scrape (see the module doc).

    ``status``: the node's status source; ``api``: the API server's figures; ``now_ms``:
    the node's wall clock (for the age of the head block)."""

    def __init__(self, status: StatusSource, api: Callable[[], ApiStats],
                 now_ms: Callable[[], int]) -> None:
        self._status = status
        self._api = api
        self._now_ms = now_ms

    def describe(self) -> Iterator[Metric]:
        """The families without samples (the registry checks names once at registration)."""
        for spec in METRICS:
            if spec.kind == "histogram":
                yield histogram(spec, Histogram((), (0,), 0.0))
            else:
                yield family(spec, ())

    def collect(self) -> Iterator[Metric]:
        """Every metric of :data:`METRICS`, from the figures now."""
        status = self._status.status()
        yield from self._chain(status)
        yield from self._admission(status)
        yield from self._p2p(status)
        api = self._api()
        yield family(API_CONNECTIONS, one(api.connections))
        yield family(API_ACCEPTED, one(api.connections_accepted))
        yield family(API_REFUSED, one(api.connections_refused))
        yield family(API_REQUESTS_REFUSED, [((str(code),), count) for code, count
                                            in sorted(api.requests_refused.items())])

    def _chain(self, status: NodeStatus) -> Iterator[Metric]:
        chain, consensus, sync = status.chain, status.consensus, status.sync
        yield family(BUILD_INFO, [((status.version,), 1)])
        yield family(IS_AUTHORITY, one(int(status.node_id in chain.authorities)))
        yield family(HEIGHT, one(chain.height))
        yield family(ROUND, one(deciding_round(status)))
        yield family(LAST_BLOCK_AGE, one((self._now_ms() - chain.head_time_ms) / 1000))
        yield family(AUTHORITIES, one(len(chain.authorities)))
        yield family(COMMITTED, one(chain.committed_txs))
        yield family(CONSENSUS_DROPPED, one(consensus.dropped_messages))
        yield family(CONSENSUS_PENDING, one(consensus.pending_blocks))
        yield family(SYNC_TARGET, one(sync.target))
        yield family(SYNCED, one(sync.synced_blocks))
        yield histogram(SUBMIT_TO_FINAL, status.node.commit_delay)
        yield histogram(GOSSIP_DELAY, status.node.gossip_delay)

    @staticmethod
    def _admission(status: NodeStatus) -> Iterator[Metric]:
        admission = status.admission
        yield family(MEMPOOL, one(admission.pending_txs))
        yield family(MEMPOOL_CAPACITY, one(admission.mempool_max_txs))
        yield family(QUEUED, one(admission.inbox_queued))
        yield family(RECEIVED, by_label(admission.received_txs))
        yield family(REJECTED, by_label(admission.rejected_txs, REASONS))
        yield family(DROPPED, by_label(admission.dropped_by_reason, REASONS))
        yield family(SIGNATURES, one(admission.signatures_verified
                                     + status.sync.signatures_verified))

    @staticmethod
    def _p2p(status: NodeStatus) -> Iterator[Metric]:
        p2p = status.p2p
        outbound = sum(1 for p in p2p.peers if p.outbound)
        yield family(PEERS, [(("inbound",), len(p2p.peers) - outbound),
                             (("outbound",), outbound)])
        kinds = sorted(p2p.traffic.items())
        yield family(MESSAGES, [s for kind, t in kinds for s in (
            ((kind, "in"), t.messages_in), ((kind, "out"), t.messages_out))])
        yield family(BYTES, [s for kind, t in kinds for s in (
            ((kind, "in"), t.bytes_in), ((kind, "out"), t.bytes_out))])
        yield family(PENALTIES, by_label(p2p.penalties))
        yield family(BANS, one(p2p.bans))
        yield family(BANNED_PEERS, one(p2p.banned_nodes))
        yield family(BANNED_ADDRESSES, one(p2p.banned_addresses))
        yield family(REFUSED_PEERS, one(len(p2p.refused)))
