"""Binary request frames: their form, their limits, and what refusing a hostile one costs."""

from __future__ import annotations

import tracemalloc

import msgpack
import pytest

from iomtnode.api.binary import FRAME_DEPTH, FrameError, decode_tx_frame
from iomtnode.api.jsonrpc import INVALID_REQUEST, NESTED_TOO_DEEP, TOO_MANY_ELEMENTS

MAX_TXS = 10_000
TX = bytes(range(200))


def pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def refusal(frame: bytes) -> FrameError:
    with pytest.raises(FrameError) as info:
        decode_tx_frame(frame, max_txs=MAX_TXS)
    return info.value


def test_a_frame_gives_its_request_id_and_items_as_they_are():
    assert decode_tx_frame(pack([7, [TX, TX]]), max_txs=MAX_TXS) == (7, [TX, TX])
    # items that are no byte string come back for the caller to refuse one by one
    assert decode_tx_frame(pack([8, [TX, 5, "s", [], {}, None]]), max_txs=MAX_TXS) == (
        8, [TX, 5, "s", [], {}, None])
    assert decode_tx_frame(pack([0, []]), max_txs=MAX_TXS) == (0, [])


@pytest.mark.parametrize(("frame", "code", "request_id", "message"), [
    # one case per rule, cheapest first
    (b"", INVALID_REQUEST, 0, "frame must be [request_id, [tx, ...]]"),
    (pack(5), INVALID_REQUEST, 0, "frame must be [request_id, [tx, ...]]"),
    (pack([1, [TX], 3]), INVALID_REQUEST, 0, "frame must be [request_id, [tx, ...]]"),
    (pack(["id", [TX]]), INVALID_REQUEST, 0, "frame must be [request_id, [tx, ...]]"),
    (pack([[1], [TX]]), NESTED_TOO_DEEP, 0, "frame nests arrays deeper than the limit of 2"),
    (pack([4, TX]), INVALID_REQUEST, 4, "frame must be [request_id, [tx, ...]]"),
    (pack([4, [TX] * (MAX_TXS + 1)]), TOO_MANY_ELEMENTS, 4,
     f"frame holds {MAX_TXS + 1} transactions, over the limit of {MAX_TXS}"),
    (pack([4, [TX, [TX]]]), NESTED_TOO_DEEP, 4,
     "frame nests arrays deeper than the limit of 2"),
    (pack([4, [{"a": 1}]]), INVALID_REQUEST, 4, "malformed msgpack: 1 exceeds max_map_len(0)"),
    (pack([4, [TX]])[:-3], INVALID_REQUEST, 4, "frame ends early"),
    (pack([4, [TX]]) + b"\x00", INVALID_REQUEST, 4, "1 bytes after the frame"),
    (pack([4, [msgpack.ExtType(1, b"x")]]), INVALID_REQUEST, 4,
     "malformed msgpack: 2 exceeds max_ext_len(0)"),
])
def test_each_rule_refuses_the_frame_with_its_code(frame, code, request_id, message):
    error = refusal(frame)
    assert (error.code, error.request_id) == (code, request_id)
    assert error.message.startswith(message), error.message


def worst_frames() -> dict[str, bytes]:
    """4 MB frames built to make a whole-frame decoder build millions of objects."""
    return {
        "nested empty arrays": pack([1, [[[]] * 400] * 10_000]),
        "nested in the request id": pack([[[[]] * 400] * 10_000, []]),
        "deep nesting": pack([1, [TX]])[:-len(TX) - 3] + b"\x91" * 4_000_000,
        "empty arrays as txs": pack([1, [[]] * MAX_TXS]),
    }


def bound(frame: bytes) -> int:
    return len(frame) + 2 * 1024 * 1024


def test_a_hostile_frame_is_refused_or_answered_with_bounded_work():
    """The decoder builds at most the frame's two arrays and its transactions (10,000 at
    most), whatever the frame holds: its peak memory stays under one copy of the frame plus
    2 MiB, where a whole-frame decode of the first frame builds 4 million lists (hundreds of
    MB) and took 1 s. Memory, traced, is the measure because it does not depend on the
    machine's load."""
    assert FRAME_DEPTH == 2
    for name, frame in worst_frames().items():
        assert len(frame) >= 10_000
        tracemalloc.start()
        try:
            try:
                _, items = decode_tx_frame(frame, max_txs=MAX_TXS)
                assert len(items) <= MAX_TXS
            except FrameError as exc:
                assert exc.code in (NESTED_TOO_DEEP, INVALID_REQUEST), name
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < bound(frame), (name, peak)


def test_the_memory_bound_tells_a_whole_frame_decode_apart():
    """The measure above can fail: decoding the first hostile frame whole exceeds it (a
    quarter of it, 1 million lists: decoding the whole one under the tracer takes 15 s)."""
    frame = pack([1, [[[]] * 400] * 2_500])
    tracemalloc.start()
    try:
        msgpack.unpackb(frame)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak > 10 * bound(frame)
