"""Binary request frames (msgpack, from devices and gateways), decoded with the work bounded.

A frame is ``[request_id, [tx, tx, ...]]``: an integer and an array of byte strings, two levels
of arrays in all. msgpack's C decoder holds the interpreter lock (decoding in a thread would
stall the node just the same), so the frame is never handed to it whole: the two array headers
are read first and the transactions are decoded one by one by a decoder that refuses any
non-empty array or map. So a frame makes at most ``2 + max_txs`` Python objects however it is
built, and a frame of nested arrays is refused at its first nested array (``NESTED_TOO_DEEP``),
a frame of too many transactions at the array header (``TOO_MANY_ELEMENTS``), both before the
rest of the frame is read.

No I/O here; :meth:`iomtnode.api.methods.ClientApi.handle_binary` answers the frames.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ..core.codec import MAX_BIN_BYTES, MAX_STR_BYTES
from .jsonrpc import INVALID_REQUEST, NESTED_TOO_DEEP, TOO_MANY_ELEMENTS, RpcError

FRAME_DEPTH = 2  # arrays nested in a frame: [request_id, [tx, ...]]
_ARRAY_HEADERS = frozenset(range(0x90, 0xA0)) | {0xDC, 0xDD}  # fixarray, array 16, array 32
_SHAPE = "frame must be [request_id, [tx, ...]]"


class FrameError(RpcError):
    """A frame refused whole: ``code`` (a JSON-RPC code), ``message``, and the frame's
    ``request_id`` when it could be read (else 0)."""

    def __init__(self, code: int, message: str, request_id: int = 0) -> None:
        super().__init__(code, message)
        self.request_id = request_id


def decode_tx_frame(frame: bytes, *, max_txs: int) -> tuple[int, list[Any]]:
    """``(request_id, items)`` of a binary frame; each item is what the frame holds at that
    place: a byte string for a well-formed transaction, or another scalar (or an empty array
    or map), which the caller refuses on its own.

    Raises :class:`FrameError` for a frame that is not of the form, holds more than
    ``max_txs`` transactions, nests arrays deeper than :data:`FRAME_DEPTH`, or has bytes left
    over. The work done before refusing is bounded by the limits, not by the frame's size.
    """
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=True, max_buffer_size=max(len(frame), 1),
        max_str_len=MAX_STR_BYTES, max_bin_len=MAX_BIN_BYTES,
        max_array_len=0, max_map_len=0, max_ext_len=0,  # nothing nests below the tx array;
        # an extension type of 0 bytes is a scalar the caller refuses
    )
    unpacker.feed(frame)
    request_id = 0
    try:
        if not frame or frame[0] not in _ARRAY_HEADERS or unpacker.read_array_header() != 2:
            raise FrameError(INVALID_REQUEST, _SHAPE)
        value = unpacker.unpack()
        if type(value) is not int:
            raise FrameError(INVALID_REQUEST, _SHAPE)
        request_id = value
        at = unpacker.tell()
        if at >= len(frame) or frame[at] not in _ARRAY_HEADERS:
            raise FrameError(INVALID_REQUEST, _SHAPE, request_id)
        count = unpacker.read_array_header()
        if count > max_txs:
            raise FrameError(TOO_MANY_ELEMENTS, f"frame holds {count} transactions, over the "
                             f"limit of {max_txs}", request_id)
        unpack = unpacker.unpack
        items = [unpack() for _ in range(count)]
    except FrameError as exc:
        exc.request_id = exc.request_id or request_id
        raise
    except ValueError as exc:  # msgpack's limits, malformed bytes, invalid UTF-8
        if "exceeds max_array_len" in str(exc):
            raise FrameError(NESTED_TOO_DEEP, f"frame nests arrays deeper than the limit of "
                             f"{FRAME_DEPTH}: it must be [request_id, [tx, ...]], each tx a "
                             "byte string", request_id) from None
        raise FrameError(INVALID_REQUEST, f"malformed msgpack: {exc}", request_id) from None
    except msgpack.OutOfData:
        raise FrameError(INVALID_REQUEST, "frame ends early", request_id) from None
    except msgpack.UnpackException as exc:  # the other malformed inputs msgpack knows
        raise FrameError(INVALID_REQUEST, f"malformed msgpack: {exc}", request_id) from None
    if unpacker.tell() != len(frame):
        raise FrameError(INVALID_REQUEST, f"{len(frame) - unpacker.tell()} bytes after the "
                         "frame", request_id)
    return request_id, items
