"""Authorities that reach each other only through nodes that are not authorities (sentries,
or one node that bridges two sites) decide about as fast as the network's hops allow: those
nodes pass proposals and votes on at once, as relayers do, not after the fallback delays
meant for copies nobody needs. Four authorities A-D; E and F are not authorities. Every
message takes 20 ms (a lossless wide-area link), under trio's autojump clock."""

from __future__ import annotations

import pytest
import trio

from iomtnode.core.genesis import Genesis

from ..core.helpers import CHAIN_ID, pub
from . import harness
from .harness import Bus, cluster

pytestmark = pytest.mark.timeout(120)

AUTHORITIES = "ABCD"
LATENCY_S = 0.02
RUN_S = 30.0
TOPOLOGIES = {  # names, links
    "one bridge": ("ABCDE", ["AB", "CD", "EA", "EB", "EC", "ED"]),
    "sentries": ("ABCDEF", ["AB", "CD", "EA", "EB", "EF", "FC", "FD"]),
}
LEAST_HEIGHTS = 20  # about 34 in RUN_S here; 3-7 when such nodes held proposals and votes
# back for the fallback delays (one or more seconds a hop)


def delayed(bus: Bus, nursery: trio.Nursery):
    def deliver(sender: bytes, msg: object, exclude, only=None) -> None:
        bus.sent.append((sender, msg))  # type: ignore[arg-type]
        for peer_id, node in bus.nodes.items():
            if (peer_id == sender or peer_id in exclude or node.driver is None
                    or not bus.linked(sender, peer_id)
                    or (only is not None and peer_id not in only)):
                continue

            async def later(node=node) -> None:
                await trio.sleep(LATENCY_S)
                if node.driver is not None:
                    node.driver.on_message(sender, msg)

            nursery.start_soon(later)
    return deliver


@pytest.mark.parametrize("topology", list(TOPOLOGIES))
async def test_authorities_behind_other_nodes_keep_deciding(tmp_path, autojump_clock,
                                                             monkeypatch, topology):
    names, links = TOPOLOGIES[topology]
    monkeypatch.setattr(harness, "genesis_of", lambda _: Genesis(
        CHAIN_ID, harness.GENESIS_MS, tuple(pub(a) for a in AUTHORITIES), 1))
    async with cluster(tmp_path, names, sync=True) as net:
        monkeypatch.setattr(net.bus, "deliver", delayed(net.bus, net.nursery))
        net.bus.links = {frozenset((pub(a), pub(b))) for a, b in links}
        await net.start()
        await trio.sleep(RUN_S)
        heights = [net[a].chain.height for a in AUTHORITIES]
    assert min(heights) >= LEAST_HEIGHTS, heights
