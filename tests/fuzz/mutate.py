"""Hypothesis strategies for untrusted input: arbitrary msgpack values, and mutations of
valid encodings that keep most of their structure (a field replaced, a nested signed
object's field replaced, bytes flipped, cut or added) so that the decoders' deeper checks
are reached, not only the first one."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import strategies as st

INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what msgpack can hold
EDGE_INTS = (0, 1, -1, 2**7, 2**8, 2**16, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, INT_MAX,
             INT_MIN)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(INT_MIN, INT_MAX), st.sampled_from(EDGE_INTS),
    st.binary(max_size=80), st.sampled_from([bytes(32), bytes(64), b"\xff" * 33]),
    st.text(max_size=24), st.floats(allow_nan=True),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=8),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(0, 9)), children,
                        max_size=3),
    ),
    max_leaves=12,
)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def nested(raw: bytes) -> list[Any] | None:
    """The array ``raw`` encodes if it is exactly a msgpack array (a signed object carried
    as bytes), else None."""
    try:
        value = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    if type(value) is not list:
        return None
    try:
        return value if pack(value) == raw else None
    except (TypeError, ValueError, OverflowError):
        return None


@st.composite
def mutated_bytes(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` with bytes flipped, cut, inserted or duplicated."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.integers(0, 4))
        at = draw(st.integers(0, len(data))) if data else 0
        if op == 0 and data:
            at = min(at, len(data) - 1)
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and data:
            at = min(at, len(data) - 1)
            data[at] = draw(st.integers(0, 255))
        elif op == 2:
            del data[at:at + draw(st.integers(1, 16))]
        elif op == 3:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at:at] = bytes(data[at:at + draw(st.integers(1, 64))])
    return bytes(data)


@st.composite
def mutated_value(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` with one part changed somewhere down its tree (descending into byte
    strings that are themselves msgpack arrays)."""
    if isinstance(value, list) and value and draw(st.integers(0, 3)) > 0:
        out = list(value)
        i = draw(st.integers(0, len(out) - 1))
        op = draw(st.integers(0, 5))
        if op == 0:
            del out[i]
        elif op == 1:
            out.insert(i, draw(values))
        elif op == 2:
            out.insert(i, out[i])
        else:
            out[i] = draw(mutated_value(out[i], depth + 1))
        return out
    if isinstance(value, bytes) and depth < 6:
        inner = nested(value)
        if inner is not None and draw(st.integers(0, 3)) > 0:
            return pack(draw(mutated_value(inner, depth + 1)))
        if value and draw(st.booleans()):
            return draw(mutated_bytes(value))
    if isinstance(value, int) and not isinstance(value, bool) and draw(st.booleans()):
        return draw(st.sampled_from(EDGE_INTS).map(lambda x: x if x <= INT_MAX else INT_MAX))
    return draw(values)


@st.composite
def mutated_encoding(draw: st.DrawFn, samples: list[Any]) -> bytes:
    """A sample's encoding with a part of its tree changed, or its bytes mutated, or both."""
    value = draw(st.sampled_from(samples))
    how = draw(st.integers(0, 5))
    if how > 0:
        value = draw(mutated_value(value))
    raw = pack(value)
    if how == 0 or how == 5:
        raw = draw(mutated_bytes(raw))
    return raw
