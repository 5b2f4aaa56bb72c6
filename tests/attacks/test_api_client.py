"""Finding 5: one API client tries to freeze or starve a node; each attempt is refused.

A real node (LevelDB, the API on a loopback socket) in this process, so a stall of its trio
thread shows as a late ``status`` answer. Attackers connect from 127.0.0.2 or 127.0.0.3 (Linux
routes all of 127/8 to loopback); the honest client from 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import AsyncExitStack

import pytest
import trio
from structlog.testing import capture_logs
from trio_websocket import ConnectionClosed, ConnectionRejected, wrap_client_stream

from iomtnode.api.binary import FRAME_DEPTH
from iomtnode.api.connection import MAX_SUBSCRIPTIONS, OUTBOX_BYTES
from iomtnode.api.jsonrpc import NESTED_TOO_DEEP, TOO_MANY_SUBSCRIPTIONS
from iomtnode.api.server import MAX_CONNECTIONS_PER_IP
from iomtnode.client import open_client
from iomtnode.core import codec
from iomtnode.home import init_home
from iomtnode.node import Node

from ..api.test_server_limits import connect_from
from ..conftest import FAST, RunningNode

pytestmark = pytest.mark.timeout(120)

IDLE_TIMEOUT_S = 2.0  # the node's api_idle_timeout_s here, so a test sees it act
STATUS_BOUND_S = 0.5  # the honest client's status answers within this during an attack


@pytest.fixture
async def node(tmp_path, nursery) -> RunningNode:
    config = dataclasses.replace(FAST, api_idle_timeout_s=IDLE_TIMEOUT_S)
    home = init_home(tmp_path / "node", chain_id="iomt-test", config=config)
    node = Node(home, home.load_config())
    info = await nursery.start(node.run)
    return RunningNode(node, home, f"ws://127.0.0.1:{info.api_port}/api/v1", info.services)


def port_of(node: RunningNode) -> int:
    return int(node.url.rsplit(":", 1)[1].split("/")[0])


async def probe_status(url: str, latencies: list[float], done: trio.Event) -> None:
    """The honest client: asks ``status`` over and over until ``done``."""
    async with open_client(url) as client:
        while not done.is_set():
            began = trio.current_time()
            assert (await client.call("status"))["chain_id"] == "iomt-test"
            latencies.append(trio.current_time() - began)
            await trio.sleep(0.01)


async def keeps_finalizing(node: RunningNode) -> None:
    feed = node.services.feed
    assert await feed.wait_for_height(feed.height + 2, timeout_s=10)


async def test_a_4_mb_frame_of_nested_arrays_does_not_stall_the_node(node):
    frame = codec.encode([1, [[[]] * 400] * 10_000])  # 4 MB; 4 million lists if decoded whole
    assert len(frame) > 4_000_000
    latencies: list[float] = []
    done = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe_status, node.url, latencies, done)
            async with connect_from("127.0.0.2", port_of(node)) as attacker:
                for _ in range(5):
                    await attacker.send_message(frame)
                    reply = codec.decode(await attacker.get_message())
                    assert reply[0] == 1 and reply[1][0][0] == NESTED_TOO_DEEP
                    assert f"deeper than the limit of {FRAME_DEPTH}" in reply[1][0][1]
            while len(latencies) < 5:  # noqa: ASYNC110 - a few answers after the attack too
                await trio.sleep(0.01)
            done.set()
    assert max(latencies) < STATUS_BOUND_S, latencies
    await keeps_finalizing(node)


async def test_a_client_that_never_reads_is_dropped_with_its_memory_bounded(node):
    # each request asks for the status of 10,000 ids: ~1 MB of reply for 0.7 MB sent
    ids = [f"{i:064x}" for i in range(10_000)]
    request = json.dumps({"jsonrpc": "2.0", "method": "get_tx_status", "params": {"ids": ids},
                          "id": 1})
    with trio.fail_after(30), capture_logs() as logs:
        stream = await trio.open_tcp_stream("127.0.0.1", port_of(node), local_address="127.0.0.2")
        async with trio.open_nursery() as client:
            ws = await wrap_client_stream(client, stream, "127.0.0.1", "/api/v1",
                                          message_queue_size=1)
            with trio.move_on_after(IDLE_TIMEOUT_S):  # 100 MB of replies if all were made
                for _ in range(100):
                    await ws.send_message(request)
            api = node.services.api
            while not any(e["event"] == "api_connection_idle" for e in logs):  # noqa: ASYNC110
                await trio.sleep(0.05)  # (this client cannot see the close: it never reads)
            while api.stats().connections:  # noqa: ASYNC110 - the server let go of it
                await trio.sleep(0.05)
            client.cancel_scope.cancel()
        idle = [e for e in logs if e["event"] == "api_connection_idle"]
    assert idle[0]["reason"] == f"client not reading: nothing written for {IDLE_TIMEOUT_S:g} s"
    assert idle[0]["log_level"] == "warning"
    assert idle[0]["queued_bytes"] <= OUTBOX_BYTES + 2 * 1024 * 1024  # bound + one reply
    async with open_client(node.url) as honest:
        assert (await honest.call("status"))["chain_id"] == "iomt-test"
    await keeps_finalizing(node)


async def test_300_idle_connections_from_one_address_leave_room_for_others(node):
    accepted: list[int] = []
    refused: list[int] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as attackers:
            hold = trio.Event()

            async def idle_connection(n: int) -> None:
                try:
                    async with connect_from("127.0.0.2", port_of(node)):
                        accepted.append(n)
                        await hold.wait()
                except ConnectionRejected as exc:
                    assert exc.status_code == 503
                    refused.append(n)

            for n in range(300):
                attackers.start_soon(idle_connection, n)
            while len(accepted) + len(refused) < 300:  # noqa: ASYNC110 - all have an answer
                await trio.sleep(0.05)
            assert len(accepted) == MAX_CONNECTIONS_PER_IP
            async with open_client(node.url) as honest:  # another address still gets in
                assert (await honest.call("status"))["chain_id"] == "iomt-test"
            hold.set()
    await keeps_finalizing(node)


async def test_256_connections_from_8_addresses_leave_room_for_a_device(running_node):
    # the connection table full of silent clients, 32 from each of 8 addresses: a new address
    # gets in by evicting the silent client of the most crowded one (a node whose idle
    # timeout is the default 300 s, so that only eviction closes them here)
    node = running_node
    accepted: list[str] = []
    closed: list[int] = []
    with trio.fail_after(60), capture_logs() as logs:
        async with trio.open_nursery() as attackers:

            async def idle_connection(ip: str) -> None:
                async with connect_from(ip, port_of(node)) as ws:
                    accepted.append(ip)
                    try:
                        await ws.get_message()  # nothing comes: it sends nothing
                    except ConnectionClosed as exc:
                        closed.append(exc.reason.code)

            for n in range(8 * MAX_CONNECTIONS_PER_IP):
                attackers.start_soon(idle_connection, f"127.0.0.{10 + n % 8}")
            while len(accepted) < 8 * MAX_CONNECTIONS_PER_IP:  # noqa: ASYNC110 - all in
                await trio.sleep(0.05)
            assert node.services.api.stats().connections == 8 * MAX_CONNECTIONS_PER_IP  # full
            async with AsyncExitStack() as devices:  # three at once, from 127.0.0.1
                for _ in range(3):
                    device = await devices.enter_async_context(open_client(node.url))
                    assert (await device.call("status"))["chain_id"] == "iomt-test"
            while len(closed) < 3:  # noqa: ASYNC110 - the evicted see their close
                await trio.sleep(0.05)
            assert closed == [1013] * 3
            attackers.cancel_scope.cancel()
    assert len([e for e in logs if e["event"] == "api_connection_evicted"]) == 3
    await keeps_finalizing(node)


async def test_30000_subscriptions_are_refused_beyond_the_cap(node):
    batch = json.dumps([{"jsonrpc": "2.0", "method": "subscribe_blocks", "id": i}
                        for i in range(1000)])
    feed = node.services.feed
    before = len(feed._subscribers)
    outcomes: list[int | str] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as attackers:
            done = trio.Event()

            async def subscriber() -> None:  # one connection, 1,000 subscriptions asked
                async with connect_from("127.0.0.3", port_of(node)) as ws:
                    await ws.send_message(batch)
                    replies = json.loads(await ws.get_message())
                    outcomes.extend(r.get("result") or r["error"]["code"] for r in replies)
                    await done.wait()

            for _ in range(30):
                attackers.start_soon(subscriber)
            while len(outcomes) < 30_000:  # noqa: ASYNC110 - every batch answered
                await trio.sleep(0.05)
            assert outcomes.count("blocks") == 30 * MAX_SUBSCRIPTIONS
            assert outcomes.count(TOO_MANY_SUBSCRIPTIONS) == 30_000 - 30 * MAX_SUBSCRIPTIONS
            assert len(feed._subscribers) - before <= 30 * MAX_SUBSCRIPTIONS
            await keeps_finalizing(node)
            done.set()
