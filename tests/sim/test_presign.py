"""Presigning a long run keeps the load's connection alive: the node closes a connection
that sent nothing for its idle timeout, and presigning can take longer than that."""

from __future__ import annotations

import threading

import trio
from structlog.testing import capture_logs

from iomtnode.client import ApiError
from iomtnode.sim import load
from iomtnode.sim.load import presign_connected


class Client:
    def __init__(self, calls_until_done: int, fail: bool = False) -> None:
        self.calls = 0
        self.done = threading.Event()
        self._until = calls_until_done
        self._fail = fail

    async def call(self, method: str) -> dict:
        assert method == "status"
        self.calls += 1
        if self.calls >= self._until:
            self.done.set()
        if self._fail:
            raise ApiError(-32000, "busy")
        return {}


async def test_a_long_presign_calls_status_on_the_connection_meanwhile(monkeypatch):
    # real time (a worker thread signs), the interval shortened: an autojump clock could jump
    # past any deadline while the thread's answer is on its way
    monkeypatch.setattr(load, "PRESIGN_KEEPALIVE_S", 0.05)
    client = Client(calls_until_done=3)

    def slow_presign(sims, chain_id, rate, duration_s):  # done once 3 calls kept it alive
        assert client.done.wait(30)
        return ["reading"], 0.5

    monkeypatch.setattr(load, "presign_readings", slow_presign)
    began = trio.current_time()
    with trio.fail_after(10):
        assert await presign_connected(client, [], "chain", 100, 1) == (["reading"], 0.5)
    assert client.calls == 3
    assert trio.current_time() - began >= 3 * 0.05


async def test_a_failed_keepalive_is_logged_and_presigning_goes_on(monkeypatch):
    monkeypatch.setattr(load, "PRESIGN_KEEPALIVE_S", 0.05)
    client = Client(calls_until_done=2, fail=True)

    def slow_presign(sims, chain_id, rate, duration_s):
        assert client.done.wait(30)
        return ["reading"], 0.5

    monkeypatch.setattr(load, "presign_readings", slow_presign)
    with capture_logs() as logs, trio.fail_after(10):
        assert await presign_connected(client, [], "chain", 100, 1) == (["reading"], 0.5)
    assert [e["event"] for e in logs].count("presign_keepalive_failed") >= 2
