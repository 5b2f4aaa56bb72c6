"""Relaying valid proposals and votes once, to the peers not known to hold or need them.

Proposals (:class:`ProposalRelay`).

A peer holds a proposal if it sent it here, or if a vote of its authority for that block in
that round has been checked here (the node id is the authority key, and an authority votes
for a block only with its proposal at hand). A proposal received straight from its proposer
is relayed to the peers not known to hold it after :data:`RELAY_DELAY_S` by the proposer's
two designated relayers (those of its votes, below) and by every node that is not an
authority (it may be a sentry through which authorities reach each other); the other
authorities wait as long as the previous height took here from its first proposal to its
decision (at least :data:`RELAY_DELAY_S`, at most :data:`PROPOSAL_FALLBACK_MAX_S` and half
the round-0 propose timeout: where such an authority is the only path, its delay lengthens
the height it measures next, and the bound keeps its relay in time for round 0). In a
fully connected network the other authorities got it from the proposer too, and their
prevotes usually arrive by then, so it goes to nobody; in a partially connected one it
costs that delay once, at the first hop. Where heights take longer than
:data:`RELAY_DELAY_S` (many authorities on few cores) the prevotes come later: then the
two relayers send copies nobody needed, not every node (at 16 authorities on 2 cores, with
one delay for all, every node relayed every proposal to nearly every peer: about 15 copies
of each block's transaction ids per node). A proposal received from another relayer is
relayed at once: its sender may be the only path to it.

Votes (:class:`VoteRelay`). Every authority sends its own votes to all its peers, so in a
fully connected network each vote reaches everyone at once; relaying every vote to every
peer as well made about N^3 vote messages per height (N authorities). Instead:

- **Designated relayers.** At each height, the votes of authority V have two designated
  relayers, R1 (V's successor in the sorted list of the height's authorities, at a
  distance that rotates with the height) and R2 (the next one). Every node that checks a
  vote of V sends it at once to R1 and R2 (R2 to R1 only), and R1 relays it at once to all
  its peers. So every node hears each vote from V and from R1, and every vote V signs,
  whoever V sent it to, reaches R1 and R2: an authority that sends different votes of one
  step to different peers is caught there. Votes cost about 3 N (N-1) messages per step,
  N^2 growth, instead of N (N-1)^2.
- **A conflicting vote goes to everyone.** The first vote that conflicts with one held of
  the same signer, round and step is relayed at once, with the one held, to every peer not
  known to hold them, so that every node can name the equivocating authority (later
  conflicting votes of that step are not relayed again).
- **A fallback for partial networks.** :data:`VOTE_FALLBACK_DELAY_S` after a vote came
  from its signer (at once if it was relayed to here: its receivers may not be connected
  to its signer), it is relayed to the peers that neither hold it nor need it no more. A
  peer holds a vote if it signed it, sent it here, or was sent it from here; it needs it
  no more if it signed a message of the next height, or, for a prevote, if its precommit
  of that round is for a block (it holds that round's polka, and can check a proof of
  lock of that round). A peer's votes of later rounds say nothing: a decision may come
  from the precommits of an earlier round, and a re-proposal needs the prevotes of its
  proof-of-lock round.

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

from ..core.vote import Vote, VoteType
from .messages import ConsensusProposal, ConsensusVote
from .proposals import FetchNetwork
from .votes import Proposal

RELAY_DELAY_S = 0.25  # a proposal received from its proposer waits this long (s) to be
# relayed by its designated relayers (longer than a height's steps on a loaded machine)
PROPOSAL_FALLBACK_MAX_S = 2.0  # the other authorities wait as long as the previous height
# took here from proposal to decision, at most this (s) and half the propose timeout
VOTE_FALLBACK_DELAY_S = 1.0  # a vote from its signer goes to the peers still needing it
# after this (s): a last resort, the designated relayers reach most partial networks at once
VOTES_PER_AUTHORITY = 16  # first votes kept per authority at one height (8 rounds x 2 steps)
HOLDER_KEYS = 256  # (round, block) pairs whose holders are tracked at one height
VOTE_KEYS = 4096  # votes whose holders are tracked at one height (N authorities x 2 steps
# x rounds: 16 authorities for 128 rounds), and fallbacks waiting; beyond, the oldest go


class HeightAuthorities:
    """A height's authorities, sorted, and the designated relayers of each one's messages."""

    __slots__ = ("height", "index", "order", "set")

    def __init__(self, height: int = 0, validators: Iterable[bytes] = ()) -> None:
        self.height = height
        self.order = sorted(validators)
        self.set = frozenset(self.order)
        self.index = {v: i for i, v in enumerate(self.order)}

    def relayers(self, validator: bytes) -> tuple[bytes, bytes] | None:
        """R1 and R2, the designated relayers of ``validator``'s messages at this height;
        None with fewer than three authorities (everyone hears everyone) or for a
        non-authority."""
        n, i = len(self.order), self.index.get(validator)
        if n < 3 or i is None:
            return None
        first = (i + 1 + self.height % (n - 1)) % n  # never i: the distance is 1 .. n-1
        second = (first + 1) % n
        if second == i:
            second = (second + 1) % n
        return self.order[first], self.order[second]


class ProposalRelay:
    """Relay valid proposals once to the peers not known to hold them (module doc)."""

    def __init__(self, network: FetchNetwork, own: bytes | None = None,
                 delay_s: float = RELAY_DELAY_S,
                 fallback_max_s: float = PROPOSAL_FALLBACK_MAX_S) -> None:
        """``fallback_max_s``: the longest wait of an authority that is not a designated
        relayer (:data:`PROPOSAL_FALLBACK_MAX_S` at most; half the propose timeout)."""
        self._network = network
        self._own = own  # this node's key (None, or not among the authorities: an observer)
        self._delay_s = delay_s
        self._fallback_max_s = min(fallback_max_s, PROPOSAL_FALLBACK_MAX_S)
        self._fallback_s = delay_s  # the other authorities' delay at this height
        self._proposal_at = math.nan  # when the height's first proposal came (trio clock)
        self._authorities = HeightAuthorities()
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
        if math.isnan(self._proposal_at):
            self._proposal_at = trio.current_time()
        if peer_id == proposal.proposer and self._delay_s > 0:
            relayers = self._authorities.relayers(proposal.proposer)
            designated = (relayers is None or self._own not in self._authorities.set
                          or self._own in relayers)  # (not an authority: may be a sentry)
            delay_s = self._delay_s if designated else self._fallback_s
            heapq.heappush(self._due, (trio.current_time() + delay_s, next(self._seq),
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

    def enter(self, height: int, validators: Iterable[bytes]) -> None:
        """A new height (``validators`` its authorities): the last one's proposals need no
        relaying."""
        took = trio.current_time() - self._proposal_at  # NaN: no proposal came
        self._fallback_s = (self._delay_s if math.isnan(took)
                            else max(self._delay_s, min(took, self._fallback_max_s)))
        self._proposal_at = math.nan
        self._authorities = HeightAuthorities(height, validators)
        self._holders.clear()
        self._due.clear()

    def fallback_delay(self) -> float:
        """How long (s) an authority that is not a designated relayer of the proposer waits
        at this height before it relays a proposal received from its proposer."""
        return self._fallback_s


class VoteRelay:
    """Relay valid votes: to and by their designated relayers at once, conflicting ones to
    everyone, and to the peers still needing them after a delay (module doc)."""

    def __init__(self, network: FetchNetwork, own: bytes | None = None,
                 delay_s: float = VOTE_FALLBACK_DELAY_S) -> None:
        self._network = network
        self._own = own  # this node's key (None, or not among the authorities: an observer)
        self._delay_s = delay_s
        self._authorities = HeightAuthorities()
        self._holders: OrderedDict[bytes, set[bytes]] = OrderedDict()  # vote key -> peers
        # per authority, (round, step) -> its first vote checked here: (key, message, nil)
        self._first: dict[bytes, OrderedDict[tuple[int, int], tuple[bytes, ConsensusVote,
                                                                    bool]]] = {}
        self._conflicts: set[tuple[bytes, int, int]] = set()  # relayed to everyone once
        self._ahead: set[bytes] = set()  # authorities seen voting at the next height
        self._due: list[tuple[float, int, bytes, ConsensusVote, Vote]] = []
        self._seq = itertools.count()

    def enter(self, height: int, validators: Iterable[bytes]) -> None:
        """A new height (``validators`` its authorities): the last one's votes need no
        relaying."""
        self._authorities = HeightAuthorities(height, validators)
        self._holders.clear()
        self._first.clear()
        self._conflicts.clear()
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
        return self._authorities.relayers(validator)

    def relay(self, key: bytes, msg: ConsensusVote, vote: Vote, peer_id: bytes) -> None:
        """Relay ``msg`` (``vote``, valid, of this height, received from ``peer_id``)."""
        at = (vote.round, int(vote.type))
        holders = self._holders[key] = {peer_id, vote.validator}
        if len(self._holders) > VOTE_KEYS:
            self._holders.popitem(last=False)
        firsts = self._first.setdefault(vote.validator, OrderedDict())
        first = firsts.setdefault(at, (key, msg, vote.is_nil))
        if len(firsts) > VOTES_PER_AUTHORITY:
            firsts.popitem(last=False)  # its oldest rounds: a flood evicts only its own
        if first[0] != key:  # equivocation: the first pair to everyone, once
            if (vote.validator, *at) not in self._conflicts:
                self._conflicts.add((vote.validator, *at))
                held = self._holders.get(first[0], set())
                if not held.issuperset(self._authorities.set):  # unless to everyone
                    self._broadcast(first[0], first[1], set(held))
                self._broadcast(key, msg, holders)
            return
        authorities = self._authorities.set
        skip = set(authorities)  # the authorities not to send it to at once
        relayers = self.relayers(vote.validator)
        if relayers is not None:
            r1, r2 = relayers
            if self._own == r1:
                skip = set(holders)
            else:  # the collectors: R2 sends it to R1, the others to R1 and R2
                skip -= {r1} if self._own == r2 else {r1, r2}
                skip |= holders
        if peer_id == vote.validator and self._delay_s > 0:
            if not skip.issuperset(authorities):  # an authority sends these copies to
                # authorities only: the other nodes follow the blocks and their certificates
                # and had the vote from its signer; a node that is not one sends them to
                # everyone (it may be a sentry, the authorities' only path to each other)
                only = authorities if self._own in authorities else None
                self._broadcast(key, msg, skip, only=only)
            if len(self._due) < VOTE_KEYS:
                heapq.heappush(self._due, (trio.current_time() + self._delay_s,
                                           next(self._seq), key, msg, vote))
        else:  # the fallback now, in the same message
            self._broadcast(key, msg, skip & self._fallback_skip(key, vote))

    def deadline(self) -> float:
        return self._due[0][0] if self._due else math.inf

    def tick(self, now: float) -> None:
        """Send the relays that are due."""
        while self._due and self._due[0][0] <= now:
            _, _, key, msg, vote = heapq.heappop(self._due)
            self._broadcast(key, msg, self._fallback_skip(key, vote))

    def _fallback_skip(self, key: bytes, vote: Vote) -> set[bytes]:
        """The peers that hold ``vote`` or need it no more: at the next height, or, for a
        prevote, with a precommit for a block in its round (they hold its polka)."""
        skip = set(self._holders.get(key, (vote.validator,)))
        skip.update(self._ahead)
        if vote.type is VoteType.PREVOTE:
            at = (vote.round, int(VoteType.PRECOMMIT))
            skip.update(peer for peer, firsts in self._first.items()
                        if (first := firsts.get(at)) is not None and not first[2])
        return skip

    def _broadcast(self, key: bytes, msg: ConsensusVote, skip: set[bytes],
                   only: frozenset[bytes] | None = None) -> None:
        """Send ``msg`` to the peers not in ``skip`` (among ``only``, if given); the
        authorities among them hold it from now on."""
        if only is None:
            self._network.broadcast_consensus(msg, exclude=frozenset(skip))
        else:
            self._network.broadcast_consensus(msg, exclude=frozenset(skip), only=only)
        holders = self._holders.get(key)
        if holders is not None:
            holders.update(v for v in self._authorities.order if v not in skip)
