"""Canonical msgpack: one encoding per value, so one value has one hash.

Values are built from ``None``, ``bool``, ``int``, ``bytes``, ``str`` and ``list``
(tuples encode as lists). There are no maps and no floats: records are positional
arrays whose meaning comes from their position.

Decoding is where untrusted bytes enter the node, so it enforces every limit before
or while allocating, refuses maps, floats, extension types, trailing bytes and nesting
deeper than allowed, and raises exactly one exception type, :class:`DecodeError`, for
all malformed input. Two decoders share those checks:

- :func:`decode` also refuses anything whose re-encoding differs from its input
  (over-long integers, strings or arrays in a longer form than needed): it is for
  bytes that are hashed or signed (a transaction, a header, a commit certificate, a
  vote, a proposal, a peer record), so that one value has one hash.
- :func:`decode_envelope` checks structure only: it is for bytes nothing hashes or
  signs, such as a network frame or a block's outer array, which carry the hashed
  values as byte strings, each decoded with :func:`decode` where it is used. Re-packing
  a 4 MiB frame only to compare it with its input would find nothing a hash depends on.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

MAX_FRAME_BYTES = 4 * 1024 * 1024  # one encoded value; larger frames are refused unread
MAX_STR_BYTES = 64 * 1024  # any single string
MAX_BIN_BYTES = MAX_FRAME_BYTES  # any single byte string (a block travels as one)
MAX_ARRAY_LEN = 100_000  # any single array (a block holds at most this many txs)
MAX_DEPTH = 8  # arrays nested inside arrays
# msgpack's errors that carry no message, and what they mean
_SILENT_ERRORS = {"FormatError": "a byte that begins no msgpack value (0xc1)",
                  "StackError": "arrays nested deeper than the decoder's stack"}
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

Value = None | bool | int | bytes | str | list["Value"] | tuple["Value", ...]


_local = threading.local()  # one Packer per thread (msgpack.packb makes one per call)


def _pack(value: Any) -> bytes:
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    try:
        return packer.pack(value)
    except BaseException:
        packer.reset()  # a failed pack may leave partial output in the buffer
        raise


class DecodeError(ValueError):
    """Bytes that are not the canonical encoding of a value within the limits."""


class EncodeError(ValueError):
    """A value that has no canonical encoding (wrong type, integer out of range, too deep)."""


_SCALARS = frozenset((bytes, str, bool, type(None)))  # need no range check


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
        if set(map(type, value)) <= _SCALARS:  # a batch of byte strings: one C loop
            return
        for item in value:
            _check(item, depth + 1)
        return
    raise EncodeError(f"type {type(value).__name__} has no canonical encoding")


def encode(value: Value) -> bytes:
    """Encode ``value`` canonically. Raises :class:`EncodeError` for an unencodable value."""
    _check(value, 0)
    try:
        return _pack(value)
    except UnicodeEncodeError as exc:  # a str holding a lone surrogate is not UTF-8
        raise EncodeError(f"string is not valid UTF-8: {exc.reason}") from None


def _reject_ext(code: int, data: bytes) -> None:
    raise DecodeError(f"extension type {code} is not allowed")


def _plain(value: list[Any], depth: int) -> bool:
    """No floats or (empty) maps anywhere in a decoded array, no deeper nesting than allowed.

    This walk and :func:`msgpack.packb` comparing equal to the input are together the
    canonical check: the decoder yields only None, bool, int (within the int64/uint64
    range msgpack has), str, bytes, float, list and empty dict (non-empty maps and
    extensions are refused as they are read), and re-packing fixes one encoding of each."""
    if depth >= MAX_DEPTH:
        return False
    for item in value:
        kind = type(item)
        if kind is list:
            if not _plain(item, depth + 1):
                return False
        elif kind is float or kind is dict:
            return False
    return True


def _unpack(data: bytes, max_bytes: int) -> Any:
    """Decode one value from ``data`` with every check but the canonical one."""
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
        detail = str(exc) or _SILENT_ERRORS.get(type(exc).__name__, "no detail")
        raise DecodeError(f"malformed msgpack: {type(exc).__name__}: {detail}") from None
    if type(value) in (float, dict) or (type(value) is list and not _plain(value, 0)):
        try:
            encode(value)  # says what is wrong: a float, or nesting too deep
        except EncodeError as exc:
            raise DecodeError(f"not canonical: {exc}") from None
        raise DecodeError(f"arrays nested deeper than {MAX_DEPTH}")  # pragma: no cover
    return value


def decode(data: bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """Decode one canonical value from ``data`` (bytes that are hashed or signed).

    Raises :class:`DecodeError` when ``data`` is longer than ``max_bytes``, is not
    msgpack, holds more than one value, breaks a size limit, contains a map, float or
    extension type, nests deeper than :data:`MAX_DEPTH`, or is not the canonical
    encoding of what it decodes to.
    """
    value = _unpack(data, max_bytes)
    try:
        again = _pack(value)
    except UnicodeEncodeError as exc:  # pragma: no cover - the decoder yields valid UTF-8
        raise DecodeError(f"not canonical: {exc.reason}") from None
    if again != data:
        raise DecodeError("not canonical: re-encoding differs from the input bytes")
    return value


def decode_envelope(data: bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """Decode one value from ``data`` that nothing hashes or signs (a frame, an envelope).

    The same checks as :func:`decode` but the canonical one: an integer, string, byte
    string or array in a longer form than needed is accepted. Whatever the envelope
    carries that is hashed or signed must travel as a byte string and be decoded with
    :func:`decode`.
    """
    return _unpack(data, max_bytes)
