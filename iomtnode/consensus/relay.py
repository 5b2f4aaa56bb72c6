"""Relaying valid proposals and votes once, to the peers not known to hold or need them.

Proposals (:class:`ProposalRelay`).

A peer holds a proposal if it sent it here, or if a vote of its authority for that block in
that round has been checked here (the node id is the authority key, and an authority votes
for a block only with its proposal at hand). A proposal received straight from its proposer
waits :data:`RELAY_DELAY_S` first: in a fully connected network the other authorities got
it from the proposer too, and their prevotes usually arrive by then, so it goes to nobody;
in a partially connected one it costs that delay once, at the first hop.

Votes (:class:`VoteRelay`). Every authority sends its own votes to all its peers, so in a
fully connected network each vote reaches everyone at once; relaying every vote to every
peer as well made about N^3 vote messages per height (N authorities). Instead:

- **One designated relayer per vote.** At each height, the votes of authority V are relayed
  at once by one other authority, R1 (V's successor in the sorted list of the height's
  authorities, at a distance that rotates with the height), to all its peers, and R1's
  copy by R2 (the next one). So every node hears each vote twice, from two sources: an
  authority that sends different votes of one step to different peers (equivocation) is
  caught, and a vote lost on one link still arrives. Votes cost about 2 N (N-1) messages
  per step instead of N (N-1)^2.
- **A conflicting vote goes to everyone.** A vote that conflicts with one held of the same
  signer, round and step is relayed at once, with the one held, to every peer not known to
  hold them, so that every node can name the equivocating authority.
- **A fallback for partial networks.** :data:`RELAY_DELAY_S` after a vote came
  from its signer (at once if it was relayed to here: its receivers may not be connected
  to its signer), it is relayed to the peers that neither hold it nor are past it. A peer
  holds a vote if it signed it, sent it here, or was sent it from here; it is past a vote
  of round ``r`` if a vote of its own (checked here, from whichever peer) is of a later
  round, or of round ``r`` and a later step (its precommit shows it needs no more prevotes
  of that round), or of the next height.

The relay of a height ends when the height is decided here: a peer that still lacks
precommits then gets the block, with its certificate, from block relay and sync; a peer
that missed a vote gets it again from its signer (:mod:`.outbox`).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Iterable

import trio

from ..core.vote import Vote
from .messages import ConsensusProposal, ConsensusVote
from .proposals import FetchNetwork
from .votes import Proposal

RELAY_DELAY_S = 0.25  # a proposal or vote received from its signer waits this long (s) to
# be relayed to the peers still needing it (longer than a height's steps on a loaded machine)
HOLDER_KEYS = 256  # (round, block) pairs whose holders are tracked at one height
VOTE_KEYS = 4096  # votes whose holders and conflicts are tracked at one height (N
# authorities x 2 steps x rounds: 16 authorities for 128 rounds); beyond, the oldest go


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


class VoteRelay:
    """Relay valid votes: by a designated relayer at once, conflicting ones to everyone,
    and to the peers still needing them after a delay (module doc)."""

    def __init__(self, network: FetchNetwork, own: bytes | None = None,
                 delay_s: float = RELAY_DELAY_S) -> None:
        self._network = network
        self._own = own  # this node's authority key (None: an observer, relaying no vote)
        self._delay_s = delay_s
        self._order: list[bytes] = []  # the height's authorities, sorted
        self._index: dict[bytes, int] = {}
        self._height = 0
        self._holders: OrderedDict[bytes, set[bytes]] = OrderedDict()  # vote key -> peers
        self._first: OrderedDict[tuple[bytes, int, int], tuple[bytes, ConsensusVote]] = (
            OrderedDict())  # (authority, round, step) -> its first vote checked here
        self._reached: dict[bytes, tuple[int, int]] = {}  # authority -> (round, step) voted
        self._ahead: set[bytes] = set()  # authorities seen voting at the next height
        self._due: list[tuple[float, int, bytes, ConsensusVote, Vote]] = []
        self._seq = itertools.count()

    def enter(self, height: int, validators: Iterable[bytes]) -> None:
        """A new height (``validators`` its authorities): the last one's votes need no
        relaying."""
        self._height = height
        self._order = sorted(validators)
        self._index = {v: i for i, v in enumerate(self._order)}
        self._holders.clear()
        self._first.clear()
        self._reached.clear()
        self._ahead.clear()
        self._due.clear()

    def holds(self, key: bytes, peer_id: bytes) -> None:
        """``peer_id`` sent a copy of the vote ``key`` (the hash of its signed bytes), which
        is handled here already."""
        holders = self._holders.get(key)
        if holders is not None:
            holders.add(peer_id)

    def ahead(self, validator: bytes) -> None:
        """``validator`` signed a message of the next height: it needs none of this one."""
        self._ahead.add(validator)

    def relayers(self, validator: bytes) -> tuple[bytes, bytes] | None:
        """R1 and R2, the designated relayers of ``validator``'s votes at this height (None
        with fewer than three authorities: everyone hears everyone)."""
        n, i = len(self._order), self._index.get(validator)
        if n < 3 or i is None:
            return None
        first = (i + 1 + self._height % (n - 1)) % n  # never i: the distance is 1 .. n-1
        second = (first + 1) % n
        if second == i:
            second = (second + 1) % n
        return self._order[first], self._order[second]

    def relay(self, key: bytes, msg: ConsensusVote, vote: Vote, peer_id: bytes) -> None:
        """Relay ``msg`` (``vote``, valid, of this height, received from ``peer_id``)."""
        at = (vote.round, int(vote.type))
        if self._reached.get(vote.validator, (-1, 0)) < at:
            self._reached[vote.validator] = at
        holders = self._holders[key] = {peer_id, vote.validator}
        if len(self._holders) > VOTE_KEYS:
            self._holders.popitem(last=False)
        first = self._first.setdefault((vote.validator, *at), (key, msg))
        if len(self._first) > VOTE_KEYS:
            self._first.popitem(last=False)
        if first[0] != key:  # equivocation: both to everyone (the first, unless it went)
            held = self._holders.get(first[0], set())
            if not held.issuperset(self._order):
                self._broadcast(first[0], first[1], set(held))
            self._broadcast(key, msg, set(holders))
            return
        relayers = self.relayers(vote.validator)
        skip: set[bytes] | None = None  # as a designated relayer: all but these, now
        if relayers is not None and self._own == relayers[0]:
            skip = set(holders)
        elif relayers is not None and self._own == relayers[1]:
            skip = holders | (set(self._order) - {relayers[0]})
        if peer_id == vote.validator and self._delay_s > 0:
            if skip is not None:
                self._broadcast(key, msg, skip)
            heapq.heappush(self._due, (trio.current_time() + self._delay_s, next(self._seq),
                                       key, msg, vote))
        else:  # the fallback now, in the same message
            fallback = self._fallback_skip(key, vote)
            self._broadcast(key, msg, fallback if skip is None else fallback & skip)

    def deadline(self) -> float:
        return self._due[0][0] if self._due else math.inf

    def tick(self, now: float) -> None:
        """Send the relays that are due."""
        while self._due and self._due[0][0] <= now:
            _, _, key, msg, vote = heapq.heappop(self._due)
            self._broadcast(key, msg, self._fallback_skip(key, vote))

    def _fallback_skip(self, key: bytes, vote: Vote) -> set[bytes]:
        """The peers that hold ``vote`` or are past it."""
        at = (vote.round, int(vote.type))
        skip = set(self._holders.get(key, (vote.validator,)))
        skip.update(self._ahead)
        skip.update(peer for peer, reached in self._reached.items() if reached > at)
        return skip

    def _broadcast(self, key: bytes, msg: ConsensusVote, skip: set[bytes]) -> None:
        """Send ``msg`` to the peers not in ``skip``; the authorities among them hold it
        from now on."""
        self._network.broadcast_consensus(msg, exclude=frozenset(skip))
        holders = self._holders.get(key)
        if holders is not None:
            holders.update(v for v in self._order if v not in skip)
