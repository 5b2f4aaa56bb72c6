"""The client API's admin methods (they need the node's admin token): the connected peers,
and the operator's levers over them (disconnect, ban, refuse a set, move the listener)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import ConfigError, parse_hostport
from ..p2p.transport import ListenError
from .interfaces import PeerAdmin
from .jsonrpc import INVALID_PARAMS, RpcError
from .params import hex_param
from .status import peers_to_json

MAX_BAN_S = 30 * 86400


class AdminApi:
    """Binds the admin JSON-RPC methods to a :class:`PeerAdmin`."""

    def __init__(self, peers: PeerAdmin) -> None:
        self._peers = peers

    def methods(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {
            "admin_peers": self.admin_peers,
            "admin_disconnect_peer": self.admin_disconnect_peer,
            "admin_ban_peer": self.admin_ban_peer,
            "admin_refuse_peers": self.admin_refuse_peers,
            "admin_set_listen": self.admin_set_listen,
        }

    async def admin_peers(self) -> dict[str, Any]:
        """Connected peers, refused node ids, the address book and traffic counters."""
        stats = self._peers.stats()
        return {
            "peers": peers_to_json(stats),
            "refused": sorted(n.hex() for n in stats.refused),
            "observed_addresses": sorted({p.observed_address for p in stats.peers}),
            "address_book": {n.hex(): {"addresses": list(r.addresses), "seq": r.seq}
                             for n, r in self._peers.address_book().items()},
            "counters": {kind: dataclasses.asdict(t) for kind, t in stats.traffic.items()},
        }

    async def admin_disconnect_peer(self, node_id: str) -> dict[str, Any]:
        """Close the connection to a peer (it may reconnect)."""
        connected = self._peers.disconnect(hex_param("node_id", node_id, 32),
                                           "disconnected by admin")
        return {"disconnected": bool(connected)}

    async def admin_ban_peer(self, node_id: str, seconds: float) -> dict[str, Any]:
        """Disconnect a peer and refuse it for ``seconds``."""
        if not 0 <= seconds <= MAX_BAN_S:
            raise RpcError(INVALID_PARAMS, "seconds must be between 0 and 30 days")
        self._peers.ban(hex_param("node_id", node_id, 32), seconds, "banned by admin")
        return {"banned": node_id, "seconds": seconds}

    async def admin_refuse_peers(self, node_ids: list[str]) -> dict[str, Any]:
        """Replace the set of refused node ids: disconnect them and refuse them until
        changed (an empty list heals)."""
        refused = {hex_param(f"node_ids[{i}]", n, 32) for i, n in enumerate(node_ids)}
        self._peers.set_refused(refused)
        return {"refused": sorted(n.hex() for n in refused)}

    async def admin_set_listen(self, address: str) -> dict[str, Any]:
        """Move the p2p listener to ``address`` (HOST:PORT, port 0 for any): the node
        re-announces its record and its peers re-dial it there."""
        try:
            parse_hostport(address, "address")
        except ConfigError as exc:
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        try:
            bound = await self._peers.move(address)
        except ListenError as exc:  # names the address and the reason
            raise RpcError(INVALID_PARAMS, exc.strerror) from None
        except OSError as exc:
            raise RpcError(INVALID_PARAMS, f"cannot listen on {address}: {exc}") from None
        return {"p2p_address": bound}
