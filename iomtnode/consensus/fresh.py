"""An authority that starts without its signing state: when it may sign again.

:class:`FreshStartGuard` is the rule; :class:`Deferral` is what the driver keeps for it.

A lost signing state
--------------------

A signer with nothing persisted for its key has lost its record (``iomtnode init`` writes
one for the key it makes): a deleted ``signing_state`` file, or the key copied into
another home. The lost state may
cover heights and rounds the network is still deciding, and signing there again could
conflict with what the key signed before. So the driver keeps such an authority an
observer (it checks, relays and commits, signs nothing) until :class:`FreshStartGuard`
has fixed a *floor*, and then lets it sign only at heights above the floor. Call the
process that signed before and forgot *O*. The floor is ``K + 2``, where ``K`` is the
highest finalized height this process has heard of, because:

1. The driver signs at height ``h`` only when its chain holds block ``h - 1`` with its
   commit certificate. So O signed at heights ``<= F + 1``, ``F`` the highest block O
   knew to be final.
2. Block ``F`` is certified by a quorum, ``2f + 1`` of ``n = 3f + 1`` authorities, whose
   precommits were all at height ``F``. Those authorities were at height ``F`` or above
   before O stopped, so before this process started, and heights never go down.
3. Counting this authority's lost memory as one of the ``f`` faults the network
   tolerates, at most ``f - 1`` other authorities are faulty, so at least
   ``(2f + 1) - 1 - (f - 1) = f + 1`` of those precommitters are honest others, now at
   height ``F`` or above: they send consensus messages at heights ``>= F`` and report
   heads ``>= F - 1``.
4. Having heard from ``quorum - 1 = 2f`` of the ``3f`` other authorities, this process
   heard from at least one of those ``f + 1`` (``2f + f + 1 > 3f``). Whatever it heard
   from that one gives ``K >= F - 1``: a message at height ``h`` says ``h - 1`` is final,
   a head is final. So O signed at heights ``<= F + 1 <= K + 2``, the floor. (For other
   ``n`` the counting is the same with the quorum ``floor(2n/3) + 1``: ``2q > n + f``.)

``K`` is the largest of: this node's own head; the heads that authorities' nodes report
(their node id is their authority key, proven by the p2p handshake); ``h - 1`` for each
signature-checked consensus message of another authority at height ``h``. Only messages at
the driver's height or the next one are checked, so no authority can push ``K`` further
than that with messages; one lying about its head can only delay this authority's
signing (a liveness cost, and that takes a second fault), never make it sign twice.

The guard fixes the floor once ``grace_s`` has passed since the start (so that the
messages of heights in progress have arrived: an undecided height's messages are resent
every ``resend_interval_s``) *and*, when the driver sees peers' heads, once it has heard
from ``quorum - 1`` other authorities. Messages after that are ordinary traffic. Heights
up to the floor are decided by the others (``2f + 1`` of them are enough with this one
out); an authority that catches up quickly skips about two heights.

A weaker fallback: a node that sees its peers' heads but does not hear from
``quorum - 1`` authorities (they reach it only through followers) fixes the floor after
:data:`FALLBACK_GRACES` grace periods, once it has peers and holds every block they
report; else, at a new network's start, such authorities would wait for each other for
ever. It then relies on its peers being up to date (logged: ``quorum_heard=False``).

With fewer than four authorities ``f`` is 0 and step 3 cannot count the lost state as a
fault, but the count still holds: ``quorum - 1 = n - 1``, so this process heard from
every other authority, the precommitters of ``F`` among them. With one authority there
is nobody to hear from (its followers' heads are no proof: it might have signed a block
they have not received), so a lone authority without signing state never signs again
(``signing_refused`` in the log): restore ``signing_state`` from a backup.

Two or three authorities
------------------------

With two or three authorities the quorum is every authority, so nobody else can decide
heights ``K + 1`` and ``K + 2``: a floor of ``K + 2`` stalled such a network for good (one
authority's lost ``signing_state``; or a one-authority chain that voted in a second whose
home was made from an existing key, ``init --key-file``, as pods are). There the floor is
``K``: heights at or below it are final and none of the others works on them. Signing at
``K + 1`` and ``K + 2`` cannot finalize a block conflicting with one the lost state helped
decide, whatever it signs: a quorum of all authorities means two quorums share every
authority, so a second block at a height needs every other authority (each holding its
lock; none lost its state) to precommit two blocks at one height, which the lock rule of
Algorithm 1 forbids. What it risks is votes that differ from the lost state's at those
heights, which peers holding both report as equivocation evidence; the alternative was a
network that never makes another block. Which rule holds is the set of the height signed at
(:meth:`FreshStartGuard.permits`), not of the height the floor was fixed at: a removal
taking effect meanwhile (four authorities to three) would leave ``K + 2``, and a stall.

``iomtnode init`` writes the initial signing state (nothing signed) of the key it makes,
so a home without one has lost it, or was made from an imported key (``init
--key-file``), and the floor is ``K + 2`` even when ``K`` is 0. The record names its key
(:func:`~iomtnode.consensus.signing.signing_record`): a key copied into a home made for
another key finds no record of its own, and defers like any other that lost its state.

A new network of imported keys
------------------------------

Containers and pods make their homes from keys they are given (``init --key-file``), so
a new network of them starts with no signing state anywhere: every authority defers, and
with floors of 2 nobody would ever sign heights 1 and 2. One exception lets it start:
when nothing is finalized anywhere this process hears of (``K == 0``) and fewer than a
quorum of the other authorities were heard *signing* (a checked consensus message), the
floor is 0. Then the signers heard cannot decide height 1 without this authority. What
the exception risks is votes that differ from the lost state's at height 1, and at height
2 if block 1 was final where the lost state ran while the authorities heard had not yet
committed it: this authority then counts as one faulty (equivocating) authority instead
of one silent one, which the network tolerates as long as it is the only fault (each
authority without its signing state is one of the ``f``; in a network of four, two that
lose their state at once before block 1 is final everywhere are two faults, and may
finalize a second block 1). The price of the alternative (a network that never starts) is
higher. Once any block is final, or a quorum of the others is heard signing, the rule
above holds unchanged: an authority that lost its state while the others finalize blocks
never uses the exception. It applies only when the driver sees its peers' heads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import structlog

from ..core.block import quorum
from .machine import Event

log = structlog.get_logger(__name__)

FALLBACK_GRACES = 10  # grace periods after which a fresh signer settles for its peers' view
MAX_REPLAY = 4096  # peer events kept while deferred, to feed a validator machine
GUARD_POLL_S = 0.25  # how often a deferred signer looks at its peers' heads again

PeerHeads = Callable[[], Mapping[bytes, int]]


class FreshStartGuard:
    """When an authority without persisted signing state may sign (module doc).

    Feed it what the node learns (:meth:`saw_own_head`, :meth:`saw_heads`,
    :meth:`saw_message`) until :meth:`resolve` fixes :attr:`floor`; from then on it
    :meth:`permits` signing at heights above the floor, and ignores further input. Times
    are the caller's clock, in seconds.
    """

    def __init__(self, own: bytes, started_at: float, grace_s: float) -> None:
        if grace_s < 0:
            raise ValueError("the grace period cannot be negative")
        self.own = own
        self.grace_until = started_at + grace_s
        self.fallback_at = started_at + FALLBACK_GRACES * grace_s
        self.floor: int | None = None  # never sign at or below this height
        self.finalized = 0  # K: the highest finalized height heard of
        self.heard: set[bytes] = set()  # other authorities heard from (head or message)
        self.signers: set[bytes] = set()  # other authorities heard signing (a message)
        self._new_network = False  # the floor was fixed by the new network's exception
        self._resumed = False
        self._refused = False

    @property
    def resolved(self) -> bool:
        return self.floor is not None

    def saw_own_head(self, height: int) -> None:
        """This node's chain holds blocks up to ``height``."""
        if self.floor is None:
            self.finalized = max(self.finalized, height)

    def saw_heads(self, heads: Mapping[bytes, int], authorities: Iterable[bytes]) -> None:
        """Peers reported these heads (peer id -> height); only authorities' count."""
        if self.floor is None:
            members = set(authorities)
            for peer, head in heads.items():
                if peer in members and peer != self.own:
                    self.heard.add(peer)
                    self.finalized = max(self.finalized, head)

    def saw_message(self, authority: bytes, height: int) -> None:
        """A consensus message of ``authority`` at ``height``, its signature checked."""
        if self.floor is None and authority != self.own:
            self.heard.add(authority)
            self.signers.add(authority)
            self.finalized = max(self.finalized, height - 1)

    def update(self, now: float, own_head: int, heads: Mapping[bytes, int] | None,
               authorities: tuple[bytes, ...], *, height: int) -> bool:
        """Take what the node knows now (its head, its peers' heads if it sees them, the
        authorities of ``height``, the height it is at) and fix the floor if it can: after
        the grace period, having heard from ``quorum - 1`` other authorities when it sees
        heads. True if the floor was fixed by this call (logged)."""
        if self.floor is not None:
            return False
        if self.own in authorities and len(authorities) == 1:
            if not self._refused:  # module doc: the one authority has nobody to ask
                self._refused = True
                log.error("signing_refused", authority=self.own.hex()[:16],
                          reason="the only authority has no signing state, and no other "
                                 "authority can tell what it signed",
                          remedy="restore HOME/signing_state from a backup (see "
                                 "docs/consensus.md, 'A home without signing state')")
            return False
        self.saw_own_head(own_head)
        if heads is not None:
            self.saw_heads(heads, authorities)
        need = quorum(len(authorities)) - 1 if heads is not None else 0
        fallback = (heads is not None and bool(heads) and now >= self.fallback_at
                    and own_head >= max(heads.values()))  # module doc: a weaker fallback
        # module doc, "A new network of imported keys"
        new_network = (heads is not None and self.finalized == 0
                       and len(self.signers & set(authorities)) < quorum(len(authorities)))
        # module doc, "Two or three authorities": the quorum is every authority
        everyone = quorum(len(authorities)) == len(authorities)
        if not self.resolve(now, 0 if fallback else need, new_network=new_network,
                            everyone=everyone):
            return False
        assert self.floor is not None
        if self.own in authorities and not self.permits(height, authorities):
            log.warning("signing_deferred", phase="floor", floor=self.floor,
                        until_height=self.floor + 1, finalized_heard=self.finalized,
                        authorities_heard=len(self.heard),
                        quorum_heard=len(self.heard) >= need,
                        reason="this key may have signed up to the height after the "
                               "highest finalized one heard of")
        return True

    def resumed(self, height: int, reason: str = "above the floor") -> None:
        """Log, once, that the authority signs again from ``height``."""
        if not self._resumed:
            self._resumed = True
            log.info("signing_resumed", height=height, floor=self.floor, reason=reason)

    def resolve(self, now: float, need_heard: int, *, new_network: bool = False,
                everyone: bool = False) -> bool:
        """Fix the floor if the grace period is over and ``need_heard`` other authorities were
        heard from; True once the floor is fixed. ``new_network``: the exception of the
        module doc holds, and the floor is 0; ``everyone``: the quorum is every authority
        (two or three of them, module doc), and the floor is ``K``, not ``K + 2``."""
        if self.floor is None and now >= self.grace_until and len(self.heard) >= need_heard:
            self.floor = 0 if new_network else self.finalized + (0 if everyone else 2)
            self._new_network = new_network
        return self.floor is not None

    def permits(self, height: int, authorities: tuple[bytes, ...] | None = None) -> bool:
        """Whether signing at ``height`` cannot conflict with what the key signed before;
        given the ``authorities`` of ``height``, by the floor for them (module doc, "Two or
        three authorities": the set may have changed since :attr:`floor` was fixed)."""
        if self.floor is None:
            return False
        floor = self.floor
        if authorities is not None and not self._new_network:
            floor = self.finalized + (0 if _everyone(authorities) else 2)
        return height > floor


def _everyone(authorities: tuple[bytes, ...]) -> bool:
    """Whether the quorum of ``authorities`` is all of them, two or three (module doc; a
    lone authority has nobody else's lock to rely on)."""
    return len(authorities) > 1 and quorum(len(authorities)) == len(authorities)


class Deferral:
    """The driver's side of a signer that started without signing state: its guard, and
    the peer events taken while an observer at the current height (None: none kept), to
    replay into a validator machine if the floor allows that height."""

    def __init__(self, own: bytes, started_at: float, grace_s: float,
                 peer_heads: PeerHeads | None) -> None:
        self.guard = FreshStartGuard(own, started_at, grace_s)
        self._peer_heads = peer_heads
        self.replay: list[Event] | None = None

    def announce(self, grace_s: float) -> None:
        """Log, at startup, that this authority observes before signing."""
        log.warning("signing_deferred", phase="observing",
                    reason="no signing state at startup (a new home or a lost "
                           "signing_state file): this key may have signed before",
                    until=f"{grace_s:.1f} s from now and heard from a quorum of the other "
                          "authorities; then only above the highest finalized height heard "
                          "of + 2")

    def entered(self, height: int, validators: tuple[bytes, ...]) -> bool:
        """A new height: True if this authority must observe it (deferred)."""
        self.replay = None
        guard = self.guard
        if guard.own not in validators:
            return False
        if guard.permits(height, validators):
            guard.resumed(height)
            return False
        if not guard.resolved:
            self.replay = []
        return True

    def deadline(self, now: float) -> float:
        """When to look at the peers' heads again (inf once the floor is fixed)."""
        guard = self.guard
        return float("inf") if guard.resolved else max(guard.grace_until, now + GUARD_POLL_S)

    def took(self, event: Event, signer: bytes, height: int) -> None:
        """A peer's checked message at ``height``, signed by ``signer``, stepped the machine."""
        self.guard.saw_message(signer, height)
        if self.replay is not None:
            if len(self.replay) < MAX_REPLAY:
                self.replay.append(event)
            else:
                self.replay = None  # too much to replay: a validator from the next height

    def switch(self, now: float, own_head: int, validators: tuple[bytes, ...],
               height: int) -> list[Event] | None:
        """Feed the guard; the events to replay into a validator machine if it just allowed
        ``height`` while the observer machine of that height can be replaced, else None."""
        heads = None if self._peer_heads is None else self._peer_heads()
        guard = self.guard
        if not guard.update(now, own_head, heads, validators, height=height):
            return None
        if self.replay is None or not guard.permits(height, validators):
            return None
        events, self.replay = self.replay, None
        guard.resumed(height)
        return events
