"""Canonical msgpack: round trips, one encoding per value, and one error type for bad bytes."""

from __future__ import annotations

import datetime
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iomtnode.core import codec
from iomtnode.core.codec import (
    INT_MAX,
    INT_MIN,
    MAX_ARRAY_LEN,
    MAX_BIN_BYTES,
    MAX_DEPTH,
    MAX_STR_BYTES,
    DecodeError,
    EncodeError,
)

from .helpers import same

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

leaves = (
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.integers(-300, 70_000)  # the size boundaries of msgpack's int forms
    | st.binary(max_size=40)
    | st.text(max_size=20)
)


def nested(depth: int) -> st.SearchStrategy[Any]:
    """Values whose arrays nest at most ``depth`` deep."""
    strategy = leaves
    for _ in range(depth):
        strategy = leaves | st.lists(strategy, max_size=4)
    return strategy


values = nested(MAX_DEPTH)

# every structural check is shared by both decoders; only decode refuses non-canonical forms
both_decoders = pytest.mark.parametrize(
    "decode", [codec.decode, codec.decode_envelope], ids=["decode", "decode_envelope"])


def decode_or_error(data: bytes) -> tuple[bool, Any]:
    """(True, value) or (False, None) when the input is refused; any other error fails."""
    try:
        return True, codec.decode(data)
    except Exception as exc:
        assert type(exc) is DecodeError, f"{type(exc).__name__}: {exc}"
        return False, None


def assert_value_or_decode_error(data: bytes) -> None:
    ok, value = decode_or_error(data)
    if ok:
        assert codec.encode(value) == data  # whatever decodes is canonical
    assert_envelope_agrees(data, ok, value)


def assert_envelope_agrees(data: bytes, ok: bool, value: Any) -> None:
    """decode_envelope takes whatever decode takes, to the same value; whatever else it
    takes is a plain value (it has a canonical encoding) that decode refused only for
    its form; and it refuses with exactly DecodeError."""
    try:
        loose = codec.decode_envelope(data)
    except Exception as exc:
        assert type(exc) is DecodeError, f"{type(exc).__name__}: {exc}"
        assert not ok, "decode_envelope refused what decode accepted"
        return
    if ok:
        assert same(value, loose)
    else:
        canonical = codec.encode(loose)  # no float, map or deep nesting got through
        assert canonical != data
        assert same(loose, codec.decode(canonical))


def nest(depth: int, inner: Any = None) -> Any:
    value = inner
    for _ in range(depth):
        value = [value]
    return value


# round trips -------------------------------------------------------------------------------


@FAST
@given(values)
def test_round_trip(value: Any) -> None:
    data = codec.encode(value)
    back = codec.decode(data)
    assert same(value, back)
    assert codec.encode(back) == data


@FAST
@given(st.lists(leaves, max_size=5).map(tuple))
def test_tuples_encode_as_lists(value: tuple[Any, ...]) -> None:
    data = codec.encode(value)
    assert data == codec.encode(list(value))
    assert same(list(value), codec.decode(data))


@pytest.mark.parametrize(
    ("value", "encoding"),
    [
        (None, b"\xc0"),
        (False, b"\xc2"),
        (True, b"\xc3"),
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\xcc\x80"),
        (256, b"\xcd\x01\x00"),
        (2**32, b"\xcf\x00\x00\x00\x01\x00\x00\x00\x00"),
        (-1, b"\xff"),
        (-32, b"\xe0"),
        (-33, b"\xd0\xdf"),
        (INT_MIN, b"\xd3\x80" + bytes(7)),
        (INT_MAX, b"\xcf" + b"\xff" * 8),
        (b"", b"\xc4\x00"),
        (b"ab", b"\xc4\x02ab"),
        ("", b"\xa0"),
        ("ab", b"\xa2ab"),
        ([], b"\x90"),
        ([1, [2]], b"\x92\x01\x91\x02"),
    ],
)
def test_known_encodings(value: Any, encoding: bytes) -> None:
    assert codec.encode(value) == encoding
    assert same(value, codec.decode(encoding))


@FAST
@given(values)
def test_envelope_round_trip(value: Any) -> None:
    assert same(value, codec.decode_envelope(codec.encode(value)))


@both_decoders
def test_decode_accepts_bytearray_and_memoryview(decode: Any) -> None:
    data = codec.encode([1, b"x", "y"])
    assert decode(bytearray(data)) == [1, b"x", "y"]
    assert decode(memoryview(data)) == [1, b"x", "y"]


# mutations and random bytes ----------------------------------------------------------------


@st.composite
def encodings(draw: st.DrawFn) -> bytes:
    return codec.encode(draw(values))


@FAST
@given(encodings(), st.data())
def test_flipped_byte_is_canonical_or_refused(data: bytes, draw: st.DataObject) -> None:
    i = draw.draw(st.integers(0, len(data) - 1))
    mask = draw.draw(st.integers(1, 255))
    mutated = data[:i] + bytes((data[i] ^ mask,)) + data[i + 1:]
    assert mutated != data
    assert_value_or_decode_error(mutated)


@FAST
@given(encodings(), st.data())
def test_inserted_byte_is_canonical_or_refused(data: bytes, draw: st.DataObject) -> None:
    i = draw.draw(st.integers(0, len(data)))
    b = draw.draw(st.integers(0, 255))
    assert_value_or_decode_error(data[:i] + bytes((b,)) + data[i:])


@FAST
@given(encodings(), st.data())
def test_deleted_byte_is_canonical_or_refused(data: bytes, draw: st.DataObject) -> None:
    i = draw.draw(st.integers(0, len(data) - 1))
    assert_value_or_decode_error(data[:i] + data[i + 1:])


@FAST
@given(encodings())
def test_every_truncation_is_refused(data: bytes) -> None:
    # A proper prefix of one msgpack value is never a whole value.
    for end in range(len(data)):
        ok, _ = decode_or_error(data[:end])
        assert not ok
        with pytest.raises(DecodeError):
            codec.decode_envelope(data[:end])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_are_a_value_or_refused(data: bytes) -> None:
    assert_value_or_decode_error(data)


@FAST
@given(st.integers(1, 15), st.binary(max_size=48))
def test_random_array_bodies_are_a_value_or_refused(n: int, body: bytes) -> None:
    assert_value_or_decode_error(bytes((0x90 | n,)) + body)


# explicit refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xcc\x01", id="uint8-for-fixint"),
        pytest.param(b"\xcd\x00\x01", id="uint16-for-fixint"),
        pytest.param(b"\xcd\x00\xff", id="uint16-for-uint8"),
        pytest.param(b"\xce\x00\x00\x00\x01", id="uint32-for-fixint"),
        pytest.param(b"\xcf" + bytes(7) + b"\x01", id="uint64-for-fixint"),
        pytest.param(b"\xd0\x01", id="int8-for-positive"),
        pytest.param(b"\xd0\xff", id="int8-for-negative-fixint"),
        pytest.param(b"\xd1\xff\x80", id="int16-for-int8"),
        pytest.param(b"\xd3" + b"\xff" * 8, id="int64-for-minus-one"),
        pytest.param(b"\xd9\x01a", id="str8-for-fixstr"),
        pytest.param(b"\xda\x00\x01a", id="str16-for-fixstr"),
        pytest.param(b"\xc5\x00\x01a", id="bin16-for-bin8"),
        pytest.param(b"\xdc\x00\x01\x00", id="array16-for-fixarray"),
        pytest.param(b"\xdd\x00\x00\x00\x00", id="array32-for-empty"),
    ],
)
def test_non_canonical_forms_are_refused(data: bytes) -> None:
    # msgpack itself accepts every one of these
    msgpack.unpackb(data, raw=False)
    with pytest.raises(DecodeError, match="not canonical"):
        codec.decode(data)


@pytest.mark.parametrize(
    ("data", "value"),
    [
        pytest.param(b"\xcd\x00\x01", 1, id="uint16-for-fixint"),
        pytest.param(b"\xd3" + b"\xff" * 8, -1, id="int64-for-minus-one"),
        pytest.param(b"\xda\x00\x01a", "a", id="str16-for-fixstr"),
        pytest.param(b"\xc5\x00\x01a", b"a", id="bin16-for-bin8"),
        pytest.param(b"\xdc\x00\x02\x05\xd9\x01a", [5, "a"], id="array16-holding-str8"),
    ],
)
def test_envelope_accepts_non_canonical_forms(data: bytes, value: Any) -> None:
    # nothing hashes an envelope: its form may vary, what it holds may not
    assert same(value, codec.decode_envelope(data))
    with pytest.raises(DecodeError, match="not canonical"):
        codec.decode(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x80", id="empty-fixmap"),
        pytest.param(b"\x81\x01\x02", id="fixmap"),
        pytest.param(b"\x81\xa1a\x01", id="str-keyed-map"),
        pytest.param(b"\xde\x00\x00", id="map16"),
        pytest.param(b"\x91\x80", id="map-in-array"),
        pytest.param(b"\xca" + struct.pack(">f", 1.5), id="float32"),
        pytest.param(b"\xcb" + struct.pack(">d", 1.5), id="float64"),
        pytest.param(b"\xcb" + struct.pack(">d", 1.0), id="integral-float64"),
        pytest.param(b"\x92\x01\xcb" + struct.pack(">d", 0.0), id="float-in-array"),
        pytest.param(b"\xd4\x01\x00", id="fixext1"),
        pytest.param(b"\xd8\x05" + bytes(16), id="fixext16"),
        pytest.param(b"\xc7\x00\x05", id="empty-ext8"),
        pytest.param(b"\xc7\x03\x05abc", id="ext8"),
        pytest.param(msgpack.packb(msgpack.Timestamp(1, 0)), id="timestamp32"),
        pytest.param(msgpack.packb(msgpack.Timestamp(2**40, 5)), id="timestamp64"),
        pytest.param(
            msgpack.packb(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC), datetime=True),
            id="datetime",
        ),
        pytest.param(b"\xc1", id="never-used-byte"),
        pytest.param(b"\xa1\xff", id="invalid-utf8"),
        pytest.param(b"\xa2\xed\xa0", id="utf8-surrogate-half"),
        pytest.param(b"\x01\x00", id="trailing-byte"),
        pytest.param(codec.encode([1, 2]) + codec.encode(3), id="two-values"),
        pytest.param(b"\x92\x01", id="short-array"),
        pytest.param(b"\xc4\x05ab", id="short-bin"),
        pytest.param(b"\xdb\xff\xff\xff\xff", id="str32-header-alone"),
        pytest.param(b"\xc6\xff\xff\xff\xff", id="bin32-header-alone"),
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array32-header-alone"),
        pytest.param(b"", id="empty"),
    ],
)
@both_decoders
def test_malformed_inputs_are_refused(decode: Any, data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode(data)
    assert type(info.value) is DecodeError


@both_decoders
@pytest.mark.parametrize("data", ["abc", 12, None, [1]])
def test_non_bytes_input_is_refused(decode: Any, data: Any) -> None:
    with pytest.raises(DecodeError, match="expected bytes"):
        decode(data)


@both_decoders
def test_max_bytes_is_inclusive(decode: Any) -> None:
    data = codec.encode(b"x" * 10)
    assert decode(data, max_bytes=len(data)) == b"x" * 10
    with pytest.raises(DecodeError, match="exceeds the limit"):
        decode(data, max_bytes=len(data) - 1)


@both_decoders
def test_frame_over_the_default_limit_is_refused_unread(decode: Any) -> None:
    data = b"\x00" * (codec.MAX_FRAME_BYTES + 1)
    with pytest.raises(DecodeError, match="exceeds the limit"):
        decode(data)


@pytest.mark.parametrize(
    ("at_limit", "over_limit"),
    [
        pytest.param("a" * MAX_STR_BYTES, "a" * (MAX_STR_BYTES + 1), id="str"),
        pytest.param(b"a" * MAX_BIN_BYTES, b"a" * (MAX_BIN_BYTES + 1), id="bin"),
        pytest.param([None] * MAX_ARRAY_LEN, [None] * (MAX_ARRAY_LEN + 1), id="array"),
    ],
)
@both_decoders
def test_size_limits(decode: Any, at_limit: Any, over_limit: Any) -> None:
    # a frame limit above the item's size, so that the item's own limit is what refuses it
    roomy = 2 * codec.MAX_FRAME_BYTES
    assert decode(msgpack.packb(at_limit, use_bin_type=True), max_bytes=roomy) == at_limit
    with pytest.raises(DecodeError) as info:
        decode(msgpack.packb(over_limit, use_bin_type=True), max_bytes=roomy)
    assert type(info.value) is DecodeError
    assert "exceeds the limit" not in str(info.value)
    # with the default frame limit, the item is refused all the same
    with pytest.raises(DecodeError):
        decode(msgpack.packb(over_limit, use_bin_type=True))


def test_nesting_limit_on_encode() -> None:
    assert codec.encode(nest(MAX_DEPTH)) == b"\x91" * MAX_DEPTH + b"\xc0"
    assert codec.encode(nest(MAX_DEPTH, 1)) == b"\x91" * MAX_DEPTH + b"\x01"
    with pytest.raises(EncodeError, match="nested deeper"):
        codec.encode(nest(MAX_DEPTH + 1))
    with pytest.raises(EncodeError, match="nested deeper"):
        codec.encode([1, [2, nest(MAX_DEPTH)]])
    deep_tuple: Any = None
    for _ in range(MAX_DEPTH + 1):
        deep_tuple = (deep_tuple,)
    with pytest.raises(EncodeError, match="nested deeper"):
        codec.encode(deep_tuple)


@both_decoders
def test_nesting_limit_on_decode(decode: Any) -> None:
    assert decode(b"\x91" * MAX_DEPTH + b"\xc0") == nest(MAX_DEPTH)
    assert decode(b"\x91" * (MAX_DEPTH - 1) + b"\x90") == nest(MAX_DEPTH - 1, [])
    with pytest.raises(DecodeError, match="nested deeper"):
        decode(b"\x91" * (MAX_DEPTH + 1) + b"\xc0")
    with pytest.raises(DecodeError, match="nested deeper"):
        decode(b"\x91" * MAX_DEPTH + b"\x90")  # an empty array one level too deep
    # far deeper than msgpack's own stack: still exactly DecodeError
    with pytest.raises(DecodeError) as info:
        decode(b"\x91" * 5000 + b"\xc0")
    assert type(info.value) is DecodeError


@pytest.mark.parametrize("value", [INT_MAX + 1, INT_MIN - 1, 2**100, -(2**100), [1, INT_MAX + 1]])
def test_integers_out_of_range_are_not_encoded(value: Any) -> None:
    with pytest.raises(EncodeError, match="outside"):
        codec.encode(value)


@pytest.mark.parametrize(
    "value",
    [1.5, 0.0, {}, {"a": 1}, {1}, bytearray(b"x"), memoryview(b"x"), object(), [1, 2.0],
     datetime.datetime(2024, 1, 1)],
    ids=lambda v: type(v).__name__,
)
def test_values_without_a_canonical_encoding(value: Any) -> None:
    with pytest.raises(EncodeError, match="no canonical encoding"):
        codec.encode(value)


@pytest.mark.parametrize("value", ["\ud800", ["ok", "bad \udfff"]])
def test_unencodable_strings_raise_encode_error(value: Any) -> None:
    with pytest.raises(EncodeError) as info:
        codec.encode(value)
    assert type(info.value) is EncodeError


@pytest.mark.parametrize(("data", "reason"), [
    (b"\xc1", "FormatError: a byte that begins no msgpack value (0xc1)"),
    (b"\x91" * 100_000 + b"\xc0", "StackError: arrays nested deeper than the decoder's stack"),
])
def test_a_refusal_says_why_even_when_msgpack_does_not(data: bytes, reason: str) -> None:
    with pytest.raises(codec.DecodeError) as refused:
        codec.decode(data, max_bytes=len(data))
    assert str(refused.value) == f"malformed msgpack: {reason}"
