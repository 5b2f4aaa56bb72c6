"""The Grafana dashboard (deploy/grafana/dashboards/iomtnode.json): Prometheus by uid on
every panel, and every metric its queries name exported by a real node, with a counter's
``_total`` and a histogram's ``_bucket``/``_sum``/``_count`` exactly."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from prometheus_client import generate_latest

from iomtnode.telemetry import MetricsServer

from ..node.harness import BASE, FAST, Net
from .dashboard import DASHBOARD, dashboard_series, exported_types, missing, panels, series_in

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("expr", "series"), [
    ('iomtnode_height{instance=~"$instance"}', {"iomtnode_height"}),
    ("histogram_quantile(0.99, sum by (instance, le) (rate(a_seconds_bucket{x=\"y\"}"
     "[$__rate_interval])))", {"a_seconds_bucket"}),
    ('iomtnode_sync_target_height{i="a"} - iomtnode_height{i="a"}',
     {"iomtnode_sync_target_height", "iomtnode_height"}),
    ("count(b) > 1e3 or on (instance) c_total", {"b", "c_total"}),
    ('sum without (kind) (rate(d_total{kind="by"}[5m] offset 1h))', {"d_total"}),
])
def test_the_series_of_a_query_are_read_out_of_it(expr, series):
    assert series_in(expr) == series


def test_a_name_that_is_not_exported_exactly_is_missing():
    exported = {"g": "gauge", "c_total": "counter", "h_seconds": "histogram"}
    assert not missing({"g", "c_total", "h_seconds_bucket", "h_seconds_sum",
                        "h_seconds_count"}, exported)
    assert missing({"c", "g_bucket", "h_seconds", "h_seconds_total", "nope"}, exported) == {
        "c", "g_bucket", "h_seconds", "h_seconds_total", "nope"}


def test_every_panel_reads_prometheus_by_uid_and_shows_what_an_operator_watches():
    dashboard = json.loads(DASHBOARD.read_text())
    shown = [p for p in panels(dashboard) if p["type"] != "row"]
    assert len({p["id"] for p in panels(dashboard)}) == len(list(panels(dashboard)))
    for panel in shown:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus"
    [variable] = dashboard["templating"]["list"]
    assert variable["datasource"]["uid"] == "prometheus"
    series = dashboard_series()
    for topic in ("iomtnode_height", "iomtnode_committed_transactions_total",
                  "iomtnode_submit_to_final_seconds_bucket", "iomtnode_gossip_delay_seconds_bucket",
                  "iomtnode_p2p_peers", "iomtnode_mempool_transactions",
                  "iomtnode_transactions_rejected_total", "iomtnode_p2p_bans_total",
                  "iomtnode_p2p_bytes_total", "iomtnode_sync_target_height",
                  "iomtnode_sync_blocks_total"):
        assert topic in series, topic


async def test_every_metric_the_dashboard_names_is_exported_by_a_node(tmp_path, nursery,
                                                                      autojump_clock):
    net = Net(tmp_path, 1, config=replace(BASE, metrics_listen="127.0.0.1:0"), params=FAST)
    node = await net.start(nursery, 0)
    await net.wait_height(2)
    server = node.services.metrics
    assert isinstance(server, MetricsServer)
    exported = exported_types(generate_latest(server.registry).decode())
    series = dashboard_series()
    assert len(series) > 20
    assert not missing(series, exported)
