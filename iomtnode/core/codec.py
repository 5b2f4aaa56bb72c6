"""Canonical msgpack: one encoding per value, so one value has one hash.

Values are built from ``None``, ``bool``, ``int``, ``bytes``, ``str`` and ``list``
(tuples encode as lists). There are no maps and no floats: records are positional
arrays whose meaning comes from their position.

Decoding is where untrusted bytes enter the node, so it enforces every limit before
or while allocating, rejects anything whose re-encoding differs from its input
(over-long integers, str/bin confusion, maps, extension types, trailing bytes), and
raises exactly one exception type, :class:`DecodeError`, for all malformed input.
"""

from __future__ import annotations

from typing import Any

import msgpack

MAX_FRAME_BYTES = 4 * 1024 * 1024  # one encoded value; larger frames are refused unread
MAX_STR_BYTES = 64 * 1024  # any single string
MAX_BIN_BYTES = MAX_FRAME_BYTES  # any single byte string (a block travels as one)
MAX_ARRAY_LEN = 100_000  # any single array (a block holds at most this many txs)
MAX_DEPTH = 8  # arrays nested inside arrays
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

Value = None | bool | int | bytes | str | list["Value"] | tuple["Value", ...]


class DecodeError(ValueError):
    """Bytes that are not the canonical encoding of a value within the limits."""


class EncodeError(ValueError):
    """A value that has no canonical encoding (wrong type, integer out of range, too deep)."""


def _check(value: Any, depth: int) -> None:
    """Range- and type-check a value before encoding it."""
    if value is None or isinstance(value, bool | bytes | str):
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise EncodeError(f"integer {value} outside [{INT_MIN}, {INT_MAX}]")
        return
    if isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise EncodeError(f"arrays nested deeper than {MAX_DEPTH}")
        for item in value:
            _check(item, depth + 1)
        return
    raise EncodeError(f"type {type(value).__name__} has no canonical encoding")


def encode(value: Value) -> bytes:
    """Encode ``value`` canonically. Raises :class:`EncodeError` for an unencodable value."""
    _check(value, 0)
    try:
        return msgpack.packb(value, use_bin_type=True)
    except UnicodeEncodeError as exc:  # a str holding a lone surrogate is not UTF-8
        raise EncodeError(f"string is not valid UTF-8: {exc.reason}") from None


def _reject_ext(code: int, data: bytes) -> None:
    raise DecodeError(f"extension type {code} is not allowed")


def _depth_ok(value: Any, depth: int) -> bool:
    if isinstance(value, list):
        if depth >= MAX_DEPTH:
            return False
        return all(_depth_ok(item, depth + 1) for item in value)
    return True


def decode(data: bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """Decode one canonical value from ``data``.

    Raises :class:`DecodeError` when ``data`` is longer than ``max_bytes``, is not
    msgpack, holds more than one value, breaks a size limit, contains a map, float or
    extension type, nests deeper than :data:`MAX_DEPTH`, or is not the canonical
    encoding of what it decodes to.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise DecodeError(f"frame of {len(data)} bytes exceeds the limit of {max_bytes}")
    if not data:
        raise DecodeError("empty input")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_reject_ext,
            max_str_len=MAX_STR_BYTES,
            max_bin_len=MAX_BIN_BYTES,
            max_array_len=min(MAX_ARRAY_LEN, len(data)),  # each item takes >= 1 byte
            max_map_len=0,
            max_ext_len=0,
        )
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types for malformed input
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}: {exc}") from None
    if not _depth_ok(value, 0):
        raise DecodeError(f"arrays nested deeper than {MAX_DEPTH}")
    try:
        again = encode(value)
    except EncodeError as exc:
        raise DecodeError(f"not canonical: {exc}") from None
    if again != data:
        raise DecodeError("not canonical: re-encoding differs from the input bytes")
    return value
