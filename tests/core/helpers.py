"""Shared helpers for the core tests: deterministic keys by name, strict comparison."""

from __future__ import annotations

from functools import cache
from typing import Any

from iomtnode.core.crypto import SigningKey, blake2b256

CHAIN_ID = "iomt-test"


@cache
def key(name: str) -> SigningKey:
    """A deterministic key for a short name ("A", "hr1", "P"): seed = BLAKE2b-256(name)."""
    return SigningKey(blake2b256(name.encode()))


def pub(name: str) -> bytes:
    return key(name).public


def same(a: Any, b: Any) -> bool:
    """Equality that also tells bool from int and bytes from str, recursively."""
    if isinstance(a, list | tuple):
        return (
            type(b) is list
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    return type(a) is type(b) and a == b


def longer_form(data: bytes) -> bytes:
    """The same msgpack value with its outer array header in the 3-byte array16 form
    instead of a fixarray: msgpack reads it, but it is not the canonical encoding."""
    assert 0x90 <= data[0] <= 0x9F, "the value must be an array of at most 15 items"
    return b"\xdc" + (data[0] & 0x0F).to_bytes(2, "big") + data[1:]
