"""``leaf_hash_of``: a stored transaction's Merkle leaf hash, hashed where its bytes stand,
is ``leaf_hash(leaf_of(raw))`` for every byte string, canonical or not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iomtnode.core import codec
from iomtnode.core.merkle import leaf_hash
from iomtnode.core.tx import (
    AuthorityVote,
    MalformedTxError,
    leaf_hash_of,
    leaf_of,
    sign_tx,
    stripped,
)

from .helpers import CHAIN_ID, key, pub
from .sealkit import announce, sealed_reading


def outcome(f, raw: bytes) -> tuple[str, object]:
    try:
        return "hash", f(raw)
    except MalformedTxError:
        return "refused", None


def same(raw: bytes) -> None:
    assert outcome(leaf_hash_of, raw) == outcome(lambda r: leaf_hash(leaf_of(r)), raw)


def _forms() -> list[bytes]:
    reading = sealed_reading(key("hr1"), 1, 1_700_000_000_000, CHAIN_ID)
    vote = sign_tx(AuthorityVote(pub("A"), pub("B"), True, 0), key("A"), CHAIN_ID)
    return [reading.raw, stripped(reading).raw, vote.raw, announce(key("P"), CHAIN_ID).raw]


@pytest.mark.parametrize("raw", _forms(), ids=lambda raw: f"{raw[0]:x}-{len(raw)}")
def test_the_leaf_hash_of_a_transaction(raw: bytes) -> None:
    assert leaf_hash_of(raw) == leaf_hash(leaf_of(raw))


@pytest.mark.parametrize(("body", "sidecar"), [
    (10, 1), (255, 255), (256, 255), (255, 256), (256, 256), (300, 700), (0, 5)])
def test_bin8_and_bin16_parts(body: int, sidecar: int) -> None:
    raw = codec.encode([b"b" * body, b"s" * 64, b"c" * sidecar])
    assert leaf_hash_of(raw) == leaf_hash(b"\x92" + raw[1:len(raw) - sidecar - (
        2 if sidecar < 256 else 3)]) == leaf_hash(leaf_of(raw))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 600), st.integers(0, 600), st.data())
def test_any_bytes_hash_or_are_refused_as_leaf_of_does(body: int, sidecar: int,
                                                       data: st.DataObject) -> None:
    raw = codec.encode([bytes(body), bytes(64), b"\x07" * sidecar])
    same(raw)
    at = data.draw(st.integers(0, len(raw) - 1))
    same(raw[:at])  # truncated
    same(raw + data.draw(st.binary(min_size=1, max_size=3)))  # extended
    same(raw[:at] + bytes([data.draw(st.integers(0, 255))]) + raw[at + 1:])  # one byte changed


def test_a_non_canonical_length_is_refused_as_leaf_of_does() -> None:
    # a body of under 256 bytes as bin 16, a sidecar of under 256 as bin 16, an empty sidecar
    body, sig = b"b" * 10, b"s" * 64
    for raw in (b"\x93\xc5\x00\x0a" + body + b"\xc4\x40" + sig + b"\xc4\x01c",
                b"\x93\xc4\x0a" + body + b"\xc4\x40" + sig + b"\xc5\x00\x01c",
                b"\x93\xc4\x0a" + body + b"\xc4\x40" + sig + b"\xc4\x00"):
        same(raw)
        with pytest.raises(MalformedTxError):
            leaf_hash_of(raw)


@pytest.mark.parametrize(("body", "sidecar"), [(0, 1), (0, 256), (256, 1), (300, 300)])
def test_every_truncation_is_refused_as_leaf_of_does(body: int, sidecar: int) -> None:
    raw = codec.encode([b"b" * body, b"s" * 64, b"c" * sidecar])
    for cut in range(len(raw) + 1):
        same(raw[:cut])
