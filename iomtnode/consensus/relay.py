"""Relaying valid proposals once, to the peers not known to hold them.

A peer holds a proposal if it sent it here, or if a vote of its authority for that block in
that round has been checked here (the node id is the authority key, and an authority votes
for a block only with its proposal at hand). A proposal received straight from its proposer
waits :data:`RELAY_DELAY_S` first: in a fully connected network the other authorities got
it from the proposer too, and their prevotes usually arrive by then, so it goes to nobody;
in a partially connected one it costs that delay once, at the first hop.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict

import trio

from .messages import ConsensusProposal
from .proposals import FetchNetwork
from .votes import Proposal

RELAY_DELAY_S = 0.05  # a proposal received from its proposer is relayed after this
HOLDER_KEYS = 256  # (round, block) pairs whose holders are tracked at one height


class ProposalRelay:
    """Relay valid proposals once to the peers not known to hold them (module doc)."""

    def __init__(self, network: FetchNetwork, delay_s: float = RELAY_DELAY_S) -> None:
        self._network = network
        self._delay_s = delay_s
        self._holders: OrderedDict[tuple[int, bytes], set[bytes]] = OrderedDict()
        self._due: list[tuple[float, int, ConsensusProposal, Proposal]] = []
        self._seq = itertools.count()

    def holds(self, round_: int, block_hash: bytes, peer_id: bytes) -> None:
        """``peer_id`` holds the proposal of ``block_hash`` in ``round_`` (at this height)."""
        at = (round_, block_hash)
        holders = self._holders.get(at)
        if holders is None:
            holders = self._holders[at] = set()
            if len(self._holders) > HOLDER_KEYS:
                self._holders.popitem(last=False)
        holders.add(peer_id)

    def holders(self, proposal: Proposal) -> frozenset[bytes]:
        """The peers known to hold ``proposal``."""
        return frozenset(self._holders.get((proposal.round, proposal.block_hash), ()))

    def relay(self, msg: ConsensusProposal, proposal: Proposal, peer_id: bytes) -> None:
        """Relay ``msg`` (valid, received from ``peer_id``): now, or soon if ``peer_id``
        is its proposer."""
        self.holds(proposal.round, proposal.block_hash, peer_id)
        if peer_id == proposal.proposer and self._delay_s > 0:
            heapq.heappush(self._due, (trio.current_time() + self._delay_s, next(self._seq),
                                       msg, proposal))
        else:
            self._network.broadcast_consensus(msg, exclude=self.holders(proposal))

    def deadline(self) -> float:
        return self._due[0][0] if self._due else math.inf

    def tick(self, now: float) -> None:
        """Send the relays that are due."""
        while self._due and self._due[0][0] <= now:
            _, _, msg, proposal = heapq.heappop(self._due)
            self._network.broadcast_consensus(msg, exclude=self.holders(proposal))

    def clear(self) -> None:
        """A new height: the last one's proposals need no relaying."""
        self._holders.clear()
        self._due.clear()
