"""The metrics endpoint over a real loopback socket: GET /metrics, 404 for the rest, and
its limits (head size, read deadline, connections at once and per IP, expositions per
second)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from iomtnode.api.connection import address_key
from iomtnode.telemetry.server import (
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_IP,
    MAX_HEAD_BYTES,
    READ_DEADLINE_S,
    MetricsServer,
    MetricsServerConfig,
)

pytestmark = pytest.mark.timeout(30)

GET = b"GET /metrics HTTP/1.1\r\nHost: node\r\nAccept: text/plain\r\n\r\n"


class Counting:
    """A collector that counts its expositions and when each was made."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def collect(self) -> Iterator[Metric]:
        self.at.append(trio.current_time())
        metric = GaugeMetricFamily("iomtnode_test_scrapes", "expositions so far")
        metric.add_metric([], len(self.at))
        yield metric


async def start(nursery: trio.Nursery, **limits: float) -> tuple[int, Counting]:
    counting = Counting()
    registry = CollectorRegistry()
    registry.register(counting)
    server = MetricsServer(MetricsServerConfig("127.0.0.1", 0, **limits), registry)
    port = await nursery.start(server.run)
    return port, counting


async def exchange(port: int, request: bytes) -> bytes:
    """Send ``request``, read until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        return await read_all(stream)


async def read_all(stream: trio.SocketStream) -> bytes:
    chunks = []
    while chunk := await stream.receive_some(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def split(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def test_get_metrics_answers_the_text_format_and_logs_where_it_listens(nursery):
    with capture_logs() as logs:
        port, _ = await start(nursery)
    assert {"event": "metrics_listening", "address": f"127.0.0.1:{port}", "path": "/metrics",
            "log_level": "info"} in logs
    with trio.fail_after(10):
        status, headers, body = split(await exchange(port, GET))
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert headers["connection"] == "close" and int(headers["content-length"]) == len(body)
    [family] = text_string_to_metric_families(body.decode())
    assert family.name == "iomtnode_test_scrapes"
    assert family.samples[0].value == 1


async def test_an_ipv6_listener_logs_its_address_in_brackets(nursery):
    """``[::1]:PORT``, as metrics_listen takes it (``::1:PORT`` names no host and port)."""
    server = MetricsServer(MetricsServerConfig("::1", 0), CollectorRegistry())
    with capture_logs() as logs:
        port = await nursery.start(server.run)
    [address] = [e["address"] for e in logs if e["event"] == "metrics_listening"]
    assert address == f"[::1]:{port}"


@pytest.mark.parametrize("request_", [
    b"GET / HTTP/1.1\r\nHost: node\r\n\r\n",
    b"GET /metricsx HTTP/1.1\r\nHost: node\r\n\r\n",
    b"POST /metrics HTTP/1.1\r\nHost: node\r\nContent-Length: 0\r\n\r\n",
    b"HEAD /metrics HTTP/1.1\r\nHost: node\r\n\r\n",
])
async def test_anything_but_get_metrics_is_404_and_costs_no_exposition(nursery, request_):
    port, counting = await start(nursery)
    with trio.fail_after(10):
        status, _, _ = split(await exchange(port, request_))
    assert status == 404
    assert counting.at == []


async def test_a_query_string_is_still_get_metrics(nursery):
    port, counting = await start(nursery)
    with trio.fail_after(10):
        status, _, _ = split(await exchange(port, GET.replace(b"/metrics", b"/metrics?x=1")))
    assert status == 200 and len(counting.at) == 1


async def test_a_request_head_over_the_limit_is_refused_with_431(nursery):
    port, counting = await start(nursery)
    huge = b"GET /metrics HTTP/1.1\r\nHost: node\r\nX-Pad: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
    with capture_logs() as logs, trio.fail_after(10):
        status, _, _ = split(await exchange(port, huge))
    assert status == 431 and counting.at == []
    assert [e["status"] for e in logs if e["event"] == "metrics_request_refused"] == [431]


async def test_a_request_that_is_not_http_is_refused_with_400(nursery):
    port, _ = await start(nursery)
    with trio.fail_after(10):
        status, _, _ = split(await exchange(port, b"\x16\x03\x01 hello\r\n\r\n"))
    assert status == 400


async def test_a_slow_request_is_closed_at_the_read_deadline(nursery):
    port, counting = await start(nursery, read_deadline_s=0.3)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        started = trio.current_time()
        with capture_logs() as logs, trio.fail_after(10):
            await stream.send_all(GET[:20])  # and no more
            assert await read_all(stream) == b""  # closed without an answer
        assert 0.3 <= trio.current_time() - started < 5
    assert counting.at == []
    [refused] = [e for e in logs if e["event"] == "metrics_request_refused"]
    assert refused["reason"] == "no complete request within 0.3 s"


async def test_connections_over_the_limit_are_closed_at_once(nursery):
    port, _ = await start(nursery, max_connections=1, read_deadline_s=20)
    holder = await trio.open_tcp_stream("127.0.0.1", port)
    async with holder:
        await holder.send_all(GET[:10])  # holds the one slot
        with trio.fail_after(5):
            while True:  # the holder's accept may come after the next one's
                extra = await exchange(port, GET)
                if extra == b"":
                    break
        await holder.send_all(GET[10:])
        with trio.fail_after(10):
            status, _, _ = split(await read_all(holder))
        assert status == 200
    with trio.fail_after(10):
        assert split(await exchange(port, GET))[0] == 200  # the slot is free again


async def test_an_idle_connection_is_closed_at_the_read_deadline(nursery, autojump_clock):
    """A client that connects and sends nothing holds its slot READ_DEADLINE_S, no longer."""
    port, counting = await start(nursery)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        started = trio.current_time()
        with capture_logs() as logs, trio.fail_after(READ_DEADLINE_S * 3):
            assert await read_all(stream) == b""  # closed without an answer
        assert READ_DEADLINE_S <= trio.current_time() - started < READ_DEADLINE_S * 2
    assert counting.at == []
    [refused] = [e for e in logs if e["event"] == "metrics_request_refused"]
    assert refused["reason"] == f"no complete request within {READ_DEADLINE_S} s"


async def test_one_ip_holding_idle_connections_cannot_keep_other_scrapers_out(nursery):
    """One IP holds at most MAX_CONNECTIONS_PER_IP connections: more from it are closed when
    accepted, while another IP (127.0.0.2, still loopback) is served."""
    assert 1 <= MAX_CONNECTIONS_PER_IP < MAX_CONNECTIONS
    port, _ = await start(nursery, read_deadline_s=20)
    holders = [await trio.open_tcp_stream("127.0.0.1", port)
               for _ in range(MAX_CONNECTIONS_PER_IP)]
    for holder in holders:
        await holder.send_all(GET[:10])  # each holds a slot, idle
    with capture_logs() as logs, trio.fail_after(5):
        while True:  # the holders' accepts may come after the next one's
            extra = await exchange(port, GET)
            if extra == b"":
                break
    refused = [e for e in logs if e["event"] == "metrics_request_refused"]
    assert refused[-1]["reason"] == "max_connections_per_ip reached"
    assert refused[-1]["max"] == MAX_CONNECTIONS_PER_IP
    other = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
    async with other:
        await other.send_all(GET)
        with trio.fail_after(10):
            assert split(await read_all(other))[0] == 200
    for holder in holders:
        async with holder:
            await holder.send_all(GET[10:])
            with trio.fail_after(10):
                assert split(await read_all(holder))[0] == 200
    with trio.fail_after(10):
        assert split(await exchange(port, GET))[0] == 200  # the IP's slots are free again


async def test_expositions_are_spaced_by_the_minimum_interval(nursery):
    port, counting = await start(nursery, min_interval_s=0.3, max_connections_per_ip=3)
    with trio.fail_after(10):
        async with trio.open_nursery() as scrapers:
            for _ in range(3):
                scrapers.start_soon(exchange, port, GET)
    assert len(counting.at) == 3
    gaps = [b - a for a, b in zip(counting.at, counting.at[1:], strict=False)]
    assert all(gap >= 0.29 for gap in gaps), gaps  # trio may wake a timer ~1 ms early


async def test_an_address_in_use_is_an_error_before_the_node_reports_started(nursery):
    taken = trio.socket.socket()
    with taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServer(MetricsServerConfig("127.0.0.1", port), CollectorRegistry())
        with pytest.raises(ExceptionGroup) as raised:
            await nursery.start(server.run)
        assert raised.group_contains(OSError, match="in use")


def test_the_per_ip_limit_counts_an_ipv6_client_by_its_slash_64():
    """A host is commonly given a whole /64: one address each would let it hold every
    connection. IPv4 addresses count one by one (scrapers often share a /24)."""
    assert address_key("2001:db8:1:2::5") == address_key("[2001:db8:1:2:ffff::9]")
    assert address_key("2001:db8:1:2::5") != address_key("2001:db8:1:3::5")
    assert address_key("10.0.0.1") != address_key("10.0.0.2")
    assert address_key("::ffff:10.0.0.1") == address_key("10.0.0.1")
    assert address_key("not-an-ip") == "not-an-ip"
