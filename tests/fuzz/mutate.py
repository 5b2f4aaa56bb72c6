"""Untrusted input for the fuzz targets: arbitrary msgpack values, and mutations of valid
encodings that keep most of their structure (a field replaced, a nested signed object's
field replaced, bytes flipped, cut or added) so that the decoders' deeper checks are
reached, not only the first one.

Hypothesis draws a sample and a seed; the value or the mutation is a plain function of
them (:class:`random.Random`). One draw per input instead of dozens keeps an execution
to tens of microseconds of generation (the long run makes a million), and a failing
input is still shown, and replayed, exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgpack
from hypothesis import strategies as st

INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what msgpack can hold
EDGE_INTS = (0, 1, -1, 2**7, 2**8, 2**16, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, INT_MAX,
             INT_MIN)
BYTE_SIZES = (0, 1, 8, 31, 32, 33, 63, 64, 65, 1024)
CHARS = "az09_-.:/ \x00\x7f\u00e9\u4e2d\U0001f600\ud800"  # a lone surrogate is no UTF-8
SEEDS = st.integers(0, 2**64 - 1)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """Any msgpack value: nested arrays and maps, floats, edge integers, odd strings."""
    r = rng.random()
    if depth < 5 and r < 0.22:
        return [random_value(rng, depth + 1) for _ in range(rng.choice((0, 1, 2, 3, 6, 9)))]
    if depth < 5 and r < 0.27:
        return {random_value(rng, 5): random_value(rng, depth + 1)
                for _ in range(rng.randrange(3))}
    r = rng.random()
    if r < 0.1:
        return None
    if r < 0.2:
        return rng.random() < 0.5
    if r < 0.45:
        return rng.choice(EDGE_INTS) if rng.random() < 0.5 else rng.randint(INT_MIN, INT_MAX)
    if r < 0.75:
        size = rng.choice(BYTE_SIZES) if rng.random() < 0.7 else rng.randrange(300)
        return rng.randbytes(size)
    if r < 0.95:
        text = "".join(rng.choice(CHARS) for _ in range(rng.randrange(12)))
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return rng.choice((0.5, float("inf"), float("nan"), -0.0))


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


def mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    """``raw`` with bytes flipped, set, cut, inserted or repeated."""
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        at = rng.randint(0, len(data))
        if op < 2 and data:
            at = min(at, len(data) - 1)
            data[at] = data[at] ^ (1 << rng.randrange(8)) if op == 0 else rng.randrange(256)
        elif op == 2:
            del data[at:at + rng.randint(1, 16)]
        elif op == 3:
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        else:
            data[at:at] = bytes(data[at:at + rng.randint(1, 64)])
    return bytes(data)


def mutate_value(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """``value`` with one part changed somewhere down its tree (descending into byte
    strings that are themselves msgpack arrays: the signed objects a message carries)."""
    if isinstance(value, list) and value and rng.random() < 0.75:
        out = list(value)
        i = rng.randrange(len(out))
        op = rng.randrange(6)
        if op == 0:
            del out[i]
        elif op == 1:
            out.insert(i, random_value(rng, depth + 1))
        elif op == 2:
            out.insert(i, out[i])
        else:
            out[i] = mutate_value(rng, out[i], depth + 1)
        return out
    if isinstance(value, bytes) and depth < 6:
        inner = nested(value)
        if inner is not None and rng.random() < 0.75:
            return pack(mutate_value(rng, inner, depth + 1))
        if value and rng.random() < 0.5:
            return mutate_bytes(rng, value)
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
        return rng.choice(EDGE_INTS)
    return random_value(rng, depth)


def mutate_encoding(rng: random.Random, value: Any) -> bytes:
    """A valid value's encoding with a part of its tree changed, or its bytes, or both."""
    how = rng.randrange(6)
    if how > 0:
        value = mutate_value(rng, value)
    raw = pack(value)
    return mutate_bytes(rng, raw) if how in (0, 5) else raw


def seeded(make: Callable[[random.Random], Any]) -> st.SearchStrategy[Any]:
    """The values ``make`` builds from a seed Hypothesis draws."""
    return SEEDS.map(lambda seed: make(random.Random(seed)))


def mutated(samples: list[Any], how: Callable[[random.Random, Any], Any]
            ) -> st.SearchStrategy[Any]:
    """A sample Hypothesis picks, changed by ``how`` under a seed it draws."""
    return st.tuples(st.sampled_from(samples), SEEDS).map(
        lambda pair: how(random.Random(pair[1]), pair[0]))


values = seeded(random_value)


def mutated_encoding(samples: list[Any]) -> st.SearchStrategy[bytes]:
    return mutated(samples, mutate_encoding)


def mutated_bytes(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    return mutated(samples, mutate_bytes)
