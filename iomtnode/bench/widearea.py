"""A wide-area benchmark: every node in its own network namespace and a round-trip time
between any two nodes, made by the localnet's delay proxies (``tc netem`` is not available
everywhere; see docs/chaos.md, "Faults").

The localnet's ``delay(ms)`` delays the p2p bytes flowing *into* each delayed node; with
every node delayed by ``rtt / 2``, a message from one node to another and its answer each
cross one delay: a round trip of ``rtt``. The proxies only take connections made after
their rules are in place, so every node then drops its peers and re-dials through them;
the run starts once every connection is proxied. A ping-like probe (:mod:`.rtt`) measures
the round trip between two nodes before and after, and one way from the host (the load's
and the bench's side, which is never delayed on its way out).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio

from ..localnet import Localnet, LocalnetTimeout
from ..localnet import netns as netns_tools
from ..localnet.topology import node_ip
from .progress import Reporter

PROXIED_TIMEOUT_S = 90.0  # every connection re-dialed through the delay proxies
POLL_S = 0.5
PROBES = 7  # per measure; the median is reported
PROBE_TIMEOUT_S = 60.0


async def probe(net: Localnet, source: str | None, target: str) -> dict[str, Any]:
    """:mod:`.rtt` from ``source``'s namespace (None: the host) to ``target``'s p2p port."""
    info = net.manifest.netns
    if info is None:
        raise ValueError("a round-trip probe needs a netns localnet")
    prefix = netns_tools.in_namespace(info.namespace(source)) if source else []
    command = [*prefix, sys.executable, "-m", "iomtnode.bench.rtt",
               net.node(target).p2p_listen, "--count", str(PROBES)]
    with trio.fail_after(PROBE_TIMEOUT_S):
        done = await trio.run_process(command, capture_stdout=True, capture_stderr=True,
                                      check=False)
    if done.returncode != 0:
        raise RuntimeError(f"round-trip probe failed: {done.stderr.decode()[-1000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def proxied(net: Localnet, names: list[str]) -> bool:
    """Whether every node has every other as a peer and every inbound connection comes
    through its delay proxy (a proxied peer's address is the node's own IP)."""
    for name in names:
        peers = (await net.admin(name, "admin_peers"))["peers"]
        own = node_ip(net.node(name))
        if len(peers) < len(names) - 1:
            return False
        if any(not p["outbound"] and p["address"].rsplit(":", 1)[0] != own for p in peers):
            return False
    return True


async def reconnect_through_proxies(net: Localnet, names: list[str]) -> None:
    """Disconnect every peer of every node (they re-dial at once) until every connection
    is proxied; raises LocalnetTimeout after PROXIED_TIMEOUT_S."""
    with trio.move_on_after(PROXIED_TIMEOUT_S):
        while not await proxied(net, names):
            for name in names:
                own = node_ip(net.node(name))
                for peer in (await net.admin(name, "admin_peers"))["peers"]:
                    if not peer["outbound"] and peer["address"].rsplit(":", 1)[0] != own:
                        await net.admin(name, "admin_disconnect_peer",
                                        node_id=peer["node_id"])
            await trio.sleep(POLL_S * 4)  # re-dials and handshakes, through the proxies
        return
    raise LocalnetTimeout(f"not every p2p connection went through the delay proxies within "
                          f"{PROXIED_TIMEOUT_S} s; see the nodes' delayproxy.log")


async def apply_rtt(net: Localnet, rtt_ms: float, reporter: Reporter) -> dict[str, Any]:
    """Delay every node's inbound p2p traffic by ``rtt_ms / 2``, move every connection
    onto the proxies, and measure what was applied. Returns the result's ``network``."""
    names = net.names
    reporter.begin(f"round trip {rtt_ms:g} ms between nodes")
    before = await probe(net, names[0], names[1])
    await net.delay(rtt_ms / 2)
    await reconnect_through_proxies(net, names)
    between = await probe(net, names[0], names[1])
    from_host = await probe(net, None, names[1])
    measured = between["request_ms"]["median"] - before["request_ms"]["median"]
    reporter.end(f"measured {measured:.1f} ms added per round trip")
    return {
        "netns": True,
        "rtt_ms": rtt_ms,
        "delay_ms_each_way": rtt_ms / 2,
        "probe_node_to_node_before_ms": before["request_ms"],
        "probe_node_to_node_ms": between["request_ms"],
        "probe_node_to_node_handshake_ms": between["handshake_ms"],
        "probe_host_to_node_ms": from_host["request_ms"],
        "measured_rtt_added_ms": round(measured, 1),
    }
