"""Detecting a local address change (the node moved networks), with a scripted probe."""

from __future__ import annotations

import trio

from iomtnode.p2p.mobility import AddressWatcher, is_wildcard, local_ip_toward


async def test_a_changed_local_address_is_reported_once(autojump_clock):
    answers = iter(["10.0.0.5", "10.0.0.5", None, "10.0.0.5", "192.168.1.7", "192.168.1.7"])
    changes: list[str] = []

    async def changed(ip: str) -> None:
        changes.append(ip)

    watcher = AddressWatcher(lambda: next(answers, "192.168.1.7"), changed, "10.0.0.5",
                             interval_s=1.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher.run)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert changes == ["192.168.1.7"]  # a lookup failure (None) is not a move
    assert watcher.current == "192.168.1.7"


def test_the_kernel_routes_loopback_from_loopback():
    assert local_ip_toward("127.0.0.1") == "127.0.0.1"
    assert is_wildcard("0.0.0.0") and not is_wildcard("127.0.0.1")
