"""A validator's own consensus messages of the height being decided: sent once, kept, and
resent while the height is undecided.

Messages are pushed once, so a peer that missed them (it restarted, or a link dropped)
could leave a height stuck. While a started height is undecided, :class:`Outbox` resends
this validator's messages of the current and previous round every ``resend_interval_s``
(peers drop copies they have, by their seen-cache; a proposal skips the peers known to
hold it), and sends them at once to a peer that connects (:meth:`Outbox.send_to`). A
re-proposal goes out with the prevotes of its proof-of-lock round
(:meth:`Outbox.send_proof_of_lock`), resent with it: a peer that missed one (it was cut
off, or its sender lost its state and stays silent) could never accept the re-proposal,
and a network whose quorum is locked on that block would stall.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from ..chain.chain import BuiltBlock
from ..core.vote import Vote
from .events import ProposalReceived, VoteReceived
from .inbound import ConsensusMessage, ConsensusNetwork, Inbound
from .messages import ConsensusProposal, ConsensusVote
from .proposals import compact_proposal
from .votes import Proposal, decode_proposal


class Outbox:
    """Own messages of one height (:meth:`reset` for the next), for one driver."""

    def __init__(self, network: ConsensusNetwork, inbound: Inbound,
                 resend_interval_s: float) -> None:
        self._network = network
        self._inbound = inbound
        self._interval = resend_interval_s
        self.reset()

    def reset(self) -> None:
        """A new height: nothing sent yet, nothing to resend until :meth:`started`."""
        self._messages: list[tuple[int, ConsensusMessage]] = []  # (round, message)
        self.resend_at = math.inf

    def started(self, now: float) -> None:
        """The height started: resend from ``now + resend_interval_s`` on."""
        self.resend_at = now + self._interval

    def send(self, round_: int, signed: bytes, msg: ConsensusMessage) -> None:
        """Send a message of ``round_`` (signed here, or proving a lock) and keep it to
        resend; peers' copies of ``signed`` are ignored from now on."""
        self._inbound.mark_own(signed)
        floor = round_ - 1  # what a resend sends; older rounds are done with
        self._messages = [(r, m) for r, m in self._messages if r >= floor]
        self._messages.append((round_, msg))
        self._network.broadcast_consensus(msg)

    def send_proof_of_lock(self, round_: int, prevotes: Iterable[Vote]) -> None:
        """Send, with a re-proposal of ``round_``, the ``prevotes`` of its proof-of-lock
        round (module doc)."""
        for vote in prevotes:
            raw = vote.encode()
            self.send(round_, raw, ConsensusVote(raw))

    def send_again(self, signed: Iterable[tuple[int, Vote | Proposal]],
                   held: Callable[[bytes], BuiltBlock | None], now_round: int
                   ) -> list[ProposalReceived | VoteReceived]:
        """After a restart at a height: send again this validator's messages ``signed`` there
        before its last one (:attr:`~iomtnode.consensus.signing.Signer.signed_before`), as
        when they were made, and return them to deliver to its machine. Peers that restarted
        too lost them: without its earlier prevote, a round in which some locked and others
        only prevoted would never reach a quorum of either kind again. A prevote of a round
        before ``now_round``'s previous one (part of a proof of lock) is resent as one of
        ``now_round``'s messages. A proposal whose block is not ``held`` is skipped."""
        events: list[ProposalReceived | VoteReceived] = []
        for round_, message in signed:
            raw = message.encode()
            round_ = now_round if round_ < now_round - 1 else round_
            if isinstance(message, Proposal):
                built = held(message.block_hash)
                if built is None:
                    continue
                self.send(round_, raw, compact_proposal(raw, built.block))
                events.append(ProposalReceived(message, True))
            else:
                self.send(round_, raw, ConsensusVote(raw))
                events.append(VoteReceived(message))
        return events

    def resend(self, now: float, round_: int, decided: bool) -> None:
        """Resend the messages of ``round_`` and the one before, unless ``decided``."""
        self.resend_at = now + self._interval
        if not decided:
            self._send_kept(round_, None)

    def send_to(self, peer_id: bytes, round_: int, decided: bool) -> None:
        """Send what :meth:`resend` would to ``peer_id`` alone: a peer that just connected
        (it may have restarted and lost them), now rather than at the next resend."""
        if not decided:
            self._send_kept(round_, frozenset((peer_id,)))

    def _send_kept(self, round_: int, only: frozenset[bytes] | None) -> None:
        for r, msg in self._messages:
            if r >= round_ - 1:
                holders = self._inbound.holders(decode_proposal(msg.proposal)) if (
                    isinstance(msg, ConsensusProposal)) else frozenset()
                self._network.broadcast_consensus(msg, exclude=holders, only=only)
