"""The metrics endpoint of real node processes under load, checked against ``status``.

Three authority processes (``iomtnode run`` with ``IOMTNODE_METRICS_LISTEN=127.0.0.1:0``,
each logging the port it bound) and the simulator streaming readings into node1. Each
node is scraped over HTTP between two ``status`` calls: what only grows (height, committed,
received, signatures verified) must lie between the two answers; peers between their
fewest and most; the mempool within what the counters say could have come in or gone out
between the first ``status`` and the scrape.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from iomtnode.localnet import Localnet

from ..telemetry.dashboard import dashboard_series, exported_types, missing
from .procs import log_events

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ENV = {"IOMTNODE_EMPTY_BLOCK_INTERVAL_S": "0.3", "IOMTNODE_BLOCK_INTERVAL_S": "0.05",
       "IOMTNODE_METRICS_LISTEN": "127.0.0.1:0"}
ROUNDS = 3  # scrapes of each node, while the load runs
HTTP_TIMEOUT_S = 10.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """``GET path`` on 127.0.0.1:port; (status, body)."""
    with trio.fail_after(HTTP_TIMEOUT_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: node\r\n\r\n".encode())
            chunks = []
            while chunk := await stream.receive_some(65536):
                chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def parse(text: str) -> Samples:
    """The samples: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def metrics_port(log: Path) -> int:
    [address] = [e["address"] for e in log_events(log) if e.get("event") == "metrics_listening"]
    return int(address.rsplit(":", 1)[1])


def between(low: float, value: float, high: float, what: str) -> None:
    assert low <= value <= high, f"{what}: {value} not in [{low}, {high}]"


async def test_metrics_agree_with_status_while_readings_stream_in(tmp_path: Path):
    async with Localnet.start(nodes=3, authorities=3, path=tmp_path / "net", env=ENV,
                              devices=4, rate=150) as net:
        await net.wait_for_height(3, timeout_s=60)
        ports = {name: metrics_port(net.node(name).log) for name in net.names}
        assert len(set(ports.values())) == len(ports)
        with trio.fail_after(60):  # the load reaches every node
            while min([(await net.status(n))["committed_txs"] for n in net.names]) < 50:  # noqa: ASYNC110 - polls processes
                await trio.sleep(0.2)
        first_committed = {}
        for round_ in range(ROUNDS):
            for name in net.names:
                before = await net.status(name)
                status_code, body = await http_get(ports[name], "/metrics")
                after = await net.status(name)
                assert status_code == 200
                samples = parse(body.decode())
                check_against_status(samples, before, after, name)
                if round_ == 0:
                    first_committed[name] = after["committed_txs"]
                    # what the dashboard asks for is what a node under load serves
                    assert not missing(dashboard_series(), exported_types(body.decode()))
            await trio.sleep(0.5)
        for name in net.names:  # the load ran all along
            assert (await net.status(name))["committed_txs"] > first_committed[name]
            assert (await http_get(ports[name], "/"))[0] == 404


def check_against_status(samples: Samples, before: dict, after: dict, name: str) -> None:
    what = f"{name}: "
    assert one(samples, "iomtnode_build_info", version=after["version"]) == 1
    assert one(samples, "iomtnode_is_authority") == 1
    assert one(samples, "iomtnode_authorities") == len(after["authorities"]) == 3
    between(before["height"], one(samples, "iomtnode_height"), after["height"],
            what + "height")
    committed = one(samples, "iomtnode_committed_transactions_total")
    between(before["committed_txs"], committed, after["committed_txs"], what + "committed")
    received = total(samples, "iomtnode_transactions_received_total")
    between(before["received_txs"], received, after["received_txs"], what + "received")
    between(before["rejected_txs"], total(samples, "iomtnode_transactions_rejected_total"),
            after["rejected_txs"], what + "rejected")
    between(before["signatures_verified"], one(samples, "iomtnode_signatures_verified_total"),
            after["signatures_verified"], what + "signatures verified")
    # the goal of sync: at least the node's own height (the same instant), and a claim a
    # peer made may be a block ahead of where the node is by the second status
    between(one(samples, "iomtnode_height"), one(samples, "iomtnode_sync_target_height"),
            max(after["sync_target"], after["height"] + 1), what + "sync target")
    peers = (one(samples, "iomtnode_p2p_peers", direction="inbound")
             + one(samples, "iomtnode_p2p_peers", direction="outbound"))
    between(min(len(before["peers"]), len(after["peers"])), peers,
            max(len(before["peers"]), len(after["peers"])), what + "peers")
    # The mempool goes up and down: since the first status it grew by at most what was
    # received, and shrank by at most what was committed and dropped.
    mempool = one(samples, "iomtnode_mempool_transactions")
    dropped = after["dropped_txs"] - before["dropped_txs"]
    between(before["mempool_size"] - (committed - before["committed_txs"]) - dropped, mempool,
            before["mempool_size"] + (received - before["received_txs"]), what + "mempool")
    # every committed reading is timed once here: at most the transactions committed since
    # the node started, and under load more than none
    finals = one(samples, "iomtnode_submit_to_final_seconds_count")
    assert 0 < finals <= committed, (name, finals, committed)
    assert one(samples, "iomtnode_submit_to_final_seconds_bucket", le="+Inf") == finals
