"""A connection's idle rule and rate limit under a virtual clock, with a stand-in websocket."""

from __future__ import annotations

import pytest
import trio
from structlog.testing import capture_logs

from iomtnode.api.connection import (
    AUDITED_READ_BURST,
    AUDITED_READS_PER_S,
    Connection,
    ConnectionLimits,
)
from iomtnode.core.challenge import challenge_digest
from iomtnode.core.crypto import Domain, SigningKey
from iomtnode.p2p.ratelimit import TokenBucket

LIMITS = ConnectionLimits(idle_timeout_s=5.0)


class Socket:
    """Stands in for the websocket the writer sends to: instant, or stuck (a client that
    does not read, its socket buffers full)."""

    def __init__(self, *, stuck: bool) -> None:
        self.stuck = stuck
        self.sent: list[str | bytes] = []

    async def send_message(self, message: str | bytes) -> None:
        if self.stuck:
            await trio.sleep_forever()
        self.sent.append(message)

def prove_a_key(conn: Connection, *, known: bool) -> None:
    """Prove a fresh key on ``conn`` as the ``authenticate`` method does; ``known``: whether
    the ledger knows it (an authority, an active device, a patient)."""
    key = SigningKey.generate()
    nonce = conn.auth.challenge()
    conn.auth.prove(key.public, key.sign(Domain.API_AUTH, "test-chain",
                                         challenge_digest(nonce, b"")), "test-chain",
                    known=lambda public: known)



async def run_connection(ws: Socket, for_s: float, *, subscribe: bool,
                         notify_every_s: float | None = None) -> Connection:
    """Runs a connection (writer and idle watch) for ``for_s`` virtual seconds or until it
    closes; returns it."""
    scope = trio.CancelScope(deadline=trio.current_time() + for_s)
    conn = Connection(1, "127.0.0.1:1", LIMITS, scope)

    async def notifier() -> None:
        if notify_every_s is None:
            await trio.sleep_forever()
        for n in range(1_000_000):
            if not await conn.notify("tick", {"n": n}):
                return
            await trio.sleep(notify_every_s)

    async def read() -> None:  # the client sends nothing after subscribing
        if subscribe:
            conn.start_subscription(notifier)
        await trio.sleep_forever()

    with scope:
        await conn.run(ws, read)  # type: ignore[arg-type]
    return conn


async def test_without_a_subscription_silence_closes_the_connection(autojump_clock):
    began = trio.current_time()
    conn = await run_connection(Socket(stuck=False), 100, subscribe=False)
    assert trio.current_time() - began == pytest.approx(5.0)
    assert (conn.close_code, conn.close_reason) == (1000, "idle: nothing received for 5 s")


async def test_a_subscriber_that_reads_stays_connected(autojump_clock):
    for every_s in (1.0, None):  # notified now and then, or never
        conn = await run_connection(Socket(stuck=False), 100, subscribe=True,
                                    notify_every_s=every_s)
        assert conn.close_reason is None  # ended by the test's deadline, not closed


async def test_a_subscriber_that_stops_reading_is_closed(autojump_clock):
    began = trio.current_time()
    with capture_logs() as logs:
        conn = await run_connection(Socket(stuck=True), 100, subscribe=True,
                                    notify_every_s=60.0)
    assert [(e["event"], e["log_level"]) for e in logs] == [("api_connection_idle", "warning")]
    assert trio.current_time() - began == pytest.approx(5.0)
    assert (conn.close_code, conn.close_reason) == (
        1008, "client not reading: nothing written for 5 s")


async def test_a_message_heard_restarts_the_idle_time(autojump_clock):
    scope = trio.CancelScope()
    conn = Connection(1, "127.0.0.1:1", LIMITS, scope)

    async def read() -> None:
        for _ in range(10):
            await trio.sleep(4.0)
            await conn.received("{}")
            await conn.answer(None)
        assert not conn.closed
        await trio.sleep(4.9)
        assert not conn.closed
        await trio.sleep_forever()  # closed 0.1 s later: cancelled here

    began = trio.current_time()
    with scope:
        await conn.run(Socket(stuck=False), read)  # type: ignore[arg-type]
    assert trio.current_time() - began == pytest.approx(45.0)  # heard last at 40 s
    assert conn.close_reason == "idle: nothing received for 5 s"


async def test_admitting_requests_waits_at_the_rate_unless_a_participant_proved_its_key(
        autojump_clock):
    conn = Connection(1, "127.0.0.1:1", ConnectionLimits(requests_per_s=10.0, request_burst=2),
                      trio.CancelScope())
    began = trio.current_time()
    for _ in range(12):
        await conn.admit_request()
    assert trio.current_time() - began == pytest.approx(1.0)  # 2 at once, 10 at 10/s
    prove_a_key(conn, known=False)  # a key of its own making: anyone can make one
    assert conn.proven_keys and not conn.participant
    began = trio.current_time()
    for _ in range(10):
        await conn.admit_request()
    assert trio.current_time() - began == pytest.approx(1.0)  # still 10/s
    prove_a_key(conn, known=True)  # a device, a patient or an authority of the chain
    assert conn.participant
    began = trio.current_time()
    for _ in range(100):
        await conn.admit_request()
    assert trio.current_time() == began


async def test_audited_reads_wait_at_their_rate_even_for_a_participant(autojump_clock):
    conn = Connection(1, "127.0.0.1:1", ConnectionLimits(), trio.CancelScope())
    prove_a_key(conn, known=True)  # exempt from the request rate, not from this one
    began = trio.current_time()
    with capture_logs() as logs:
        for _ in range(AUDITED_READ_BURST + int(AUDITED_READS_PER_S)):
            await conn.admit_audited_read()
    assert trio.current_time() - began == pytest.approx(1.0)  # the burst, then 1 s at the rate
    assert [e["event"] for e in logs] == ["api_audited_reads_throttled"]  # once per connection


@pytest.mark.parametrize("message", ["x" * 4 * 64 * 1024, b"\x92\x01" * 2 * 64 * 1024])
async def test_a_message_pays_one_more_request_per_64_kib_text_or_binary(autojump_clock,
                                                                        message):
    conn = Connection(1, "127.0.0.1:1", ConnectionLimits(requests_per_s=10.0, request_burst=5),
                      trio.CancelScope())
    began = trio.current_time()
    await conn.received(message)  # 256 KiB: 1 + 4 requests, the burst
    await conn.received(message)  # 5 more at 10/s
    assert trio.current_time() - began == pytest.approx(0.5)


async def test_a_request_may_cost_several_tokens(autojump_clock):
    conn = Connection(1, "127.0.0.1:1", ConnectionLimits(requests_per_s=10.0, request_burst=5),
                      trio.CancelScope())
    began = trio.current_time()
    await conn.admit_request(5)  # the burst
    await conn.admit_request(10)  # a large text message: one second of the rate
    assert trio.current_time() - began == pytest.approx(1.0)


@pytest.mark.parametrize(("events", "waits"), [
    # (seconds since the start, ...) -> the wait each take reports; rate 10/s, burst 2
    ((0, 0, 0, 0), (0, 0, 0.1, 0.2)),  # the burst, then one every 0.1 s, debt carried
    ((0, 0, 1.0, 1.0, 1.0), (0, 0, 0, 0, 0.1)),  # refilled to the burst, not past it
])
def test_token_bucket(events, waits):
    bucket = TokenBucket(10.0, 2, now=0.0)
    assert [pytest.approx(bucket.take(t)) for t in events] == list(waits)
