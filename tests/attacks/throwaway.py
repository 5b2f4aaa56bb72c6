"""An attacker's node in process: a real :class:`Host` with a fresh key on the memory network,
that completes the handshake and then says nothing of its own."""

from __future__ import annotations

import trio

from iomtnode.core.crypto import SigningKey
from iomtnode.p2p.handshake import make_hello
from iomtnode.p2p.host import Host, P2PConfig
from iomtnode.p2p.messages import Hello
from iomtnode.p2p.peer import Peer

from ..node.harness import Net


class Throwaway:
    """The handler of an attacker's host: a valid Hello, then silence (pings are answered by
    the host itself, so the connection stays up)."""

    def __init__(self, key: SigningKey, net: Net) -> None:
        self.key, self.net = key, net

    def local_hello(self) -> Hello:
        return make_hello(self.key, self.net.chain_id, self.net.genesis.hash, 0, bytes(32))

    def local_record(self) -> bytes:
        return b""

    async def on_connected(self, peer: Peer) -> None:
        pass

    async def on_message(self, peer: Peer, msg: object) -> None:
        await trio.lowlevel.checkpoint()

    def on_disconnected(self, peer: Peer, reason: str) -> None:
        pass


async def throwaway_host(nursery: trio.Nursery, net: Net, ip: str) -> Host:
    key = SigningKey.generate()
    host = Host(P2PConfig(port=None), key, Throwaway(key, net),
                transport=net.network.transport(ip))
    await nursery.start(host.run)
    return host
