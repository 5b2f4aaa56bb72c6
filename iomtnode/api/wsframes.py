"""Sending a long text message over a websocket in frames of bounded size.

wsproto frames a message by copying it four times (its UTF-8 bytes, a bytearray of them,
the header joined to them and the connection's output joined to that): for ``get_block``'s
reply of a block of 10,000 readings (7.3 MB of JSON) that was 29 MB more of the node's peak
memory. A longer message goes out as one message in fragments (RFC 6455 5.4:
frames of one message, reassembled by the receiver), each copied on its own.
"""

from __future__ import annotations

from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.events import TextMessage

FRAGMENT_CHARS = 256 * 1024  # characters (bytes: the API's JSON is ASCII) per frame of a
# longer message: the copies above are of one frame, about 1 MB; a frame costs the sender
# one write call and 10 bytes of header


async def send_text(ws: WebSocketConnection, message: str) -> None:
    """Send ``message`` as one text message, in frames of at most :data:`FRAGMENT_CHARS`.

    Raises ``ConnectionClosed`` as ``send_message`` does. The caller is the connection's one
    writer of messages (the frames of two messages must not interleave); trio-websocket's
    pings and pongs may go between the frames, as the protocol allows."""
    if len(message) <= FRAGMENT_CHARS:
        await ws.send_message(message)
        return
    if ws.closed is not None:
        raise ConnectionClosed(ws.closed)
    for start in range(0, len(message), FRAGMENT_CHARS):
        end = start + FRAGMENT_CHARS
        # trio-websocket's send_message sends whole messages only; its _send, which
        # send_message calls, takes any wsproto event, a message's fragment included
        await ws._send(TextMessage(data=message[start:end],
                                   message_finished=end >= len(message)))
