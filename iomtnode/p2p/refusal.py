"""Why a connection's handshake failed (pure): the event and reason the node logs and sends
as the close reason, the close code, and the fault its address is charged with, if any.

Before its handshake is done a connection names no node (a Hello's node id is a claim until
its Auth verifies), so what it sends wrong cannot cost a node id: it costs the IP it came from
(:meth:`~.score.Scoreboard.penalize_address`), with the points of :mod:`.faults` for the same
frame after a handshake. That is a frame that is not a message, or not the one expected, in
place of ``Hello`` or ``Auth`` (:class:`~.faults.HandshakeFrameError`), and a frame the
websocket layer refuses (over 4 MiB, broken framing). No node of any version sends these: the
``Hello`` keeps its form across versions so that a node of another version is refused by its
version. Nothing else is charged: a timeout or a broken link may be the network's, and a wrong
version, chain or genesis, a banned or refused node id, or a relayed or badly signed ``Auth`` is
refused with its reason and costs nobody (a relay's refusal must not cost the node it
impersonated, nor its address).
"""

from __future__ import annotations

from dataclasses import dataclass

import trio
from trio_websocket import ConnectionClosed

from . import faults
from .faults import Fault
from .handshake import HandshakeError
from .peer import describe_close
from .transport import ChannelError

REFUSED_CODE = 1008  # the close code of a refusal (policy violation), either side


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed handshake: its log ``event`` (``peer_refused``, ``peer_handshake_failed``),
    ``reason``, the ``code`` to close with, whether the other end refused us (``by_peer``),
    and the ``fault`` its address pays (None: nobody pays)."""

    event: str
    reason: str
    code: int = REFUSED_CODE
    by_peer: bool = False
    fault: Fault | None = None


HandshakeFailure = trio.TooSlowError | ChannelError | HandshakeError | ConnectionClosed
FAILURES = (trio.TooSlowError, ChannelError, HandshakeError, ConnectionClosed)  # to catch


def failure(exc: HandshakeFailure) -> Failure:
    """What to log, send and charge for a handshake that raised ``exc``."""
    if isinstance(exc, HandshakeError):
        fault = exc.fault if isinstance(exc, faults.HandshakeFrameError) else None
        return Failure("peer_refused", str(exc), fault=fault)
    if isinstance(exc, ConnectionClosed):
        close = exc.reason
        if close is not None and close.code == REFUSED_CODE:
            return Failure("peer_refused", f"refused by peer: {close.reason}", 1000, by_peer=True)
        return Failure("peer_handshake_failed", describe_close(close), 1000,
                       fault=faults.of_close(close))
    return Failure("peer_handshake_failed", str(exc) or "handshake timed out")
