"""A node: one trio nursery of services around one chain.

:mod:`.services` is the composition root: it builds every service complete (store and chain,
admission with its inbox and mempool, the p2p router and the reactors registered with it,
consensus, sync, the client API) and :class:`Node` starts them in dependency order with
``await nursery.start(service.run)``: admission (which re-admits what was pending at the last
stop), consensus on every node whatever the number of authorities (one engine for every
chain: it signs only at heights whose authorities include this node's key), gossip,
reconciliation, sync, the router (listening and dialling), then the client API. The node runs
until cancelled.
"""

from .clock import WALL_CLOCK, Clock
from .node import Node, NodeInfo
from .services import Services

__all__ = ["WALL_CLOCK", "Clock", "Node", "NodeInfo", "Services"]
