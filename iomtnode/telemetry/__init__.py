"""Telemetry: the node's figures as Prometheus metrics, on an endpoint of its own.

- :mod:`.collector`: :class:`~.collector.NodeCollector` reads the node's status at each
  scrape; :data:`~.collector.METRICS` is the list of metrics (docs/metrics.md).
- :mod:`.server`: ``GET /metrics`` over HTTP/1.1 (h11) in the node's nursery, bounded.

The node composes it (``metrics_listen`` in its config) in :mod:`iomtnode.node.services`.
It reads the API's narrow status interface, so it sits above ``api/``; nothing below
imports it, and no service calls it: the hot paths pay nothing for metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from ..config import parse_hostport
from .collector import METRICS, NodeCollector, Spec
from .server import MetricsServer, MetricsServerConfig

__all__ = ["METRICS", "MetricsServer", "MetricsServerConfig", "NodeCollector", "Spec",
           "metrics_server", "node_registry"]


def node_registry(collector: NodeCollector) -> CollectorRegistry:
    """A registry of its own (not prometheus-client's global one) with the node's metrics
    and the process's (``process_*``: CPU seconds, memory, open files; ``python_info``)."""
    registry = CollectorRegistry()
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def metrics_server(address: str, collector: NodeCollector) -> MetricsServer:
    """The endpoint at ``address`` (HOST:PORT, ``metrics_listen``) serving ``collector``."""
    host, port = parse_hostport(address, "metrics_listen")
    return MetricsServer(MetricsServerConfig(host, port), node_registry(collector))
