"""The bench on more nodes and on wide-area links: the nodes' settings per size, the CLI's
refusals, the round-trip probe against a TLS listener, and (root) a short ``--netns
--rtt-ms`` run that reports the round trip it applied and measured."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from iomtnode.bench import rtt, sweep
from iomtnode.bench.run import NODE_ENV, node_env
from iomtnode.cli import app
from iomtnode.config import load_config
from iomtnode.p2p.tls import make_certificate, server_context

from .test_bench import bench


@pytest.fixture
def cli() -> Iterator[CliRunner]:
    saved = structlog.get_config()
    yield CliRunner()
    structlog.configure(**saved)


# ---- the nodes' settings ------------------------------------------------------------------


def test_round_timeouts_grow_with_the_nodes_beyond_four():
    assert node_env(4) == NODE_ENV and node_env(2) == NODE_ENV  # the defaults
    env = node_env(16)
    assert env["IOMTNODE_TIMEOUT_PROPOSE_S"] == "4"  # 1 s x 16 / 4
    assert env["IOMTNODE_TIMEOUT_PREVOTE_S"] == "2"
    assert env["IOMTNODE_TIMEOUT_PRECOMMIT_S"] == "2"
    assert env["IOMTNODE_TIMEOUT_DELTA_S"] == "2"
    assert node_env(10)["IOMTNODE_TIMEOUT_PROPOSE_S"] == "2.5"
    assert {k: v for k, v in env.items() if k in NODE_ENV} == NODE_ENV


def test_the_scaled_timeouts_are_settings_a_node_reads(tmp_path: Path):
    config = load_config(tmp_path / "missing.toml", env=node_env(16))
    assert config.timeout_propose_s == 4.0 and config.timeout_delta_s == 2.0
    assert config.empty_block_interval_s == 5.0  # the bench's; the rest are the defaults


# ---- the CLI's refusals -------------------------------------------------------------------


def test_rtt_needs_netns(cli):
    result = cli.invoke(app, ["bench", "--rtt-ms", "20"])
    assert result.exit_code == 2 and "--netns" in result.output


def test_netns_without_root_is_refused_before_anything_starts(cli, monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = cli.invoke(app, ["bench", "--netns", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "root" in result.output
    assert not (tmp_path / "localnet").exists()


# ---- the round-trip probe -----------------------------------------------------------------


@pytest.fixture
def tls_listener() -> Iterator[tuple[str, int, list[int]]]:
    """A TLS 1.3 listener (the p2p port's certificate kind) that answers each request with
    one HTTP 404 line, refusing the first connection with a plain 503 as a node over its
    limits does; yields (host, port, [connections seen])."""
    cert, key = make_certificate()
    context = server_context(cert, key)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    seen = [0]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            seen[0] += 1
            with conn:
                if seen[0] == 1:
                    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\n\r\nbusy\n")
                    continue
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(4096)
                        tls.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                except (OSError, ssl.SSLError):
                    continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield "127.0.0.1", server.getsockname()[1], seen
    server.close()
    thread.join(timeout=5)


def test_probe_times_the_handshake_and_one_request_and_retries_a_refusal(tls_listener):
    host, port, seen = tls_listener
    result = rtt.measure(host, port, 3)
    assert result["refused"] == 1 and seen[0] == 4  # the 503, then three probes
    for key in ("handshake_ms", "request_ms"):
        assert 0 < result[key]["min"] <= result[key]["median"] < 1000  # loopback


def test_probe_usage_and_a_dead_target(capsys):
    assert rtt.main([]) == 2 and "usage" in capsys.readouterr().err
    assert rtt.main(["nohost"]) == 2
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert rtt.main([f"127.0.0.1:{port}", "--count", "1"]) == 1
    assert "failed" in capsys.readouterr().err


# ---- a wide-area run (root) ---------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(240)
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_short_wide_area_bench_reports_the_round_trip_it_applied(tmp_path: Path):
    result = bench(tmp_path, "--nodes", "3", "--netns", "--rtt-ms", "40", "--rate", "100",
                   "--duration", "3", timeout=220)
    network = result["network"]
    assert network["netns"] is True and network["rtt_ms"] == 40.0
    assert network["delay_ms_each_way"] == 20.0
    # the probe between two nodes crosses both delays; before them it was fast
    assert network["probe_node_to_node_before_ms"]["median"] < 20
    assert 40 <= network["probe_node_to_node_ms"]["min"] < 40 + 25  # not 2 x 40
    assert 35 <= network["measured_rtt_added_ms"] < 40 + 25
    # from the host (never delayed outbound) only the way into the node is delayed
    assert 20 <= network["probe_host_to_node_ms"]["min"] < 40
    # consensus crosses the round trip: a reading takes at least one to be final
    assert result["latency_ms"]["p50"] >= 40
    assert set(result["readings_found"].values()) == {result["readings_finalized"]} != {0}


# ---- the sweep's table and plot -----------------------------------------------------------


def _result(nodes: int, rtt: float, p50: float) -> dict:
    return {"nodes": nodes, "verify_per_s_one_core": 17_000, "verify_drift": 1.05,
            "ceiling_readings_per_s": 34_000 // nodes, "throughput_readings_per_s": 1000,
            "efficiency": 0.5, "offered_rate": 1000.0,
            "latency_ms": {"p50": p50, "p99": 2 * p50, "max": 3 * p50},
            "latency_by_rate": [{"kind": "fixed", "achieved_rate": 990}],
            "cpu_s_per_reading": 0.00125, "wire_ratio": 1.1,
            "readings_found": {"node1": 10}, "readings_finalized": 10,
            "network": {"netns": bool(rtt), "rtt_ms": rtt,
                        **({"probe_node_to_node_ms": {"median": rtt + 2.0}} if rtt else {})}}


def test_sweep_table_by_nodes_and_by_rtt(tmp_path: Path, capsys):
    files = []
    for i, (nodes, rtt_ms, p50) in enumerate([(4, 0.0, 150.0), (4, 100.0, 500.0)]):
        path = tmp_path / f"{i}.json"
        path.write_text(json.dumps(_result(nodes, rtt_ms, p50)))
        files.append(str(path))
    assert sweep.main(["--by", "rtt", *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| N | RTT ms (probe) | p50 / p99 in RTTs |")
    assert lines[3] == ("| 4 | 100 (102.0) | 5.0 / 10.0 | 17,000 | 1.05 | 8,500 | 1,000 | 0.500 | "
                        "1,000 (990) | 500 / 1,000 | 1.25 | 1.10 |")
    assert sweep.main(["--by", "nodes", files[0]]) == 0
    assert "| 4 | 17,000 | 1.05 | 8,500 |" in capsys.readouterr().out
    assert sweep.main(["--by", "n", files[0]]) == 2
    assert sweep.main(["--by", "nodes", str(tmp_path / "missing.json")]) == 2


def test_sweep_plot_writes_a_png(tmp_path: Path):
    pytest.importorskip("matplotlib")
    rows = [sweep.row(_result(n, 0.0, 100.0 * n)) for n in (4, 7, 10, 16)]
    out = tmp_path / "sweep.png"
    sweep.plot(rows, "nodes", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
