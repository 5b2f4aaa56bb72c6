"""Frames a peer must not send, and what each costs it: one decision for every way a frame can
fail to be a message (pure: :class:`~.peer.Peer` reads and penalises, this decides).

A frame can go wrong in three places, and each costs its sender (points in :mod:`.score`):

- a binary frame that :func:`~.messages.decode_message` refuses: bytes that are not one
  msgpack value within the codec's limits (``undecodable_frame``,
  :data:`~.score.UNDECODABLE_FRAME`), or msgpack that is not a message of a declared kind with
  its fields (``invalid_message``, :data:`~.score.INVALID_MESSAGE`);
- a text frame, which the protocol has none of (``undecodable_frame``);
- a frame the websocket layer refuses before it is a message, which ends the connection: one
  over :data:`~.messages.MAX_MESSAGE_BYTES` (``oversized_frame``; closed with 1009 before it is
  assembled) or one that breaks the websocket framing (``broken_frame``: 1002, or 1007 for a
  text frame that is not UTF-8), each :data:`~.score.INVALID_MESSAGE`. The connection cannot
  go on after these, so without a charge a peer could send them forever at the price of a
  reconnection; the node id pays across connections instead, and is banned as for any other
  invalid message.

After the handshake the peer's node id pays; before it (a frame in place of ``Hello`` or
``Auth``, or the wrong one of them: :class:`HandshakeFrameError`) the connection names no node
yet, and its address pays the same points (:mod:`.refusal`).

How the websocket layer's own closes are told from the peer's: trio-websocket ends the
connection on an oversized message with close code 1009 and the reason
:data:`OVERSIZED_CLOSE_REASON`, and on broken framing (a wsproto parse failure) with 1002 or
1007, and raises the same :class:`~trio_websocket.ConnectionClosed` as when the peer closes.
An honest node never closes with 1002 or 1007 (its own frames are wsproto's, well formed, and
TLS delivers them intact, so it never has cause to), and a 1009 with this node's reason names
this node's limit, so a close with either is charged to the peer, whichever end sent it: a peer
that sends such a close itself only charges itself. A 1009 naming another limit (a node whose
limit differs) is not charged.
"""

from __future__ import annotations

from dataclasses import dataclass

from trio_websocket import CloseReason

from . import score
from .handshake import HandshakeError
from .messages import (
    MAX_MESSAGE_BYTES,
    Message,
    ProtocolError,
    UndecodableFrameError,
    decode_message,
)

# The reason trio-websocket closes with (code 1009) on a message over max_message_size.
OVERSIZED_CLOSE_REASON = f"Exceeded maximum message size: {MAX_MESSAGE_BYTES} bytes"
BROKEN_FRAMING_CODES = frozenset((1002, 1007))  # RFC 6455: protocol error, invalid payload
MESSAGE_TOO_BIG_CODE = 1009


@dataclass(frozen=True, slots=True)
class Fault:
    """What a peer did wrong: ``reason`` (the penalty's kind, logged and counted), its
    ``points`` and a ``detail`` for the log."""

    reason: str
    points: int
    detail: str

    @property
    def penalty_reason(self) -> str:
        """The reason :meth:`~.host.Host.penalize` gets: the kind, then at most 100
        characters of detail."""
        return f"{self.reason}: {self.detail[:100]}"


class HandshakeFrameError(HandshakeError):
    """A frame in the handshake that is not the message expected there; ``fault`` says what
    it costs (the connection's address pays: :mod:`.refusal`)."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(f"bad handshake message: {fault.detail}")
        self.fault = fault


def unexpected(expected: str, got: str) -> Fault:
    """The fault of a message of kind ``got`` where only ``expected`` may come."""
    return Fault("invalid_message", score.INVALID_MESSAGE, f"expected {expected}, got {got}")


def read_frame(frame: bytes | str) -> Message | Fault:
    """The message ``frame`` holds, or the :class:`Fault` of its sender."""
    if isinstance(frame, str):
        return Fault("undecodable_frame", score.UNDECODABLE_FRAME, "a text frame")
    try:
        return decode_message(frame)
    except UndecodableFrameError as exc:
        return Fault("undecodable_frame", score.UNDECODABLE_FRAME, str(exc))
    except ProtocolError as exc:
        return Fault("invalid_message", score.INVALID_MESSAGE, str(exc))


def of_close(reason: CloseReason | None) -> Fault | None:
    """The peer's :class:`Fault` when its connection ended on a frame the websocket layer
    refused (module doc), else None (a close of the peer's own, or a dropped link)."""
    if reason is None:
        return None
    if reason.code == MESSAGE_TOO_BIG_CODE and reason.reason == OVERSIZED_CLOSE_REASON:
        return Fault("oversized_frame", score.INVALID_MESSAGE,
                     f"a frame over {MAX_MESSAGE_BYTES} bytes (closed with 1009)")
    if reason.code in BROKEN_FRAMING_CODES:
        return Fault("broken_frame", score.INVALID_MESSAGE,
                     f"websocket framing broken (closed with {reason.code}: {reason.reason})")
    return None
