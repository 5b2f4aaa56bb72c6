"""Blocks and headers: round trips, and every way decode_block refuses bytes."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iomtnode.core import codec, merkle
from iomtnode.core.block import (
    HEADER_VERSION,
    MAX_BLOCK_BYTES,
    ZERO_HASH,
    Block,
    Header,
    MalformedBlockError,
    authorities_hash,
    decode_block,
    decode_header,
)
from iomtnode.core.crypto import blake2b256
from iomtnode.core.payload import wraps_hash
from iomtnode.core.tx import MAX_GRANTEES, MAX_WRAPPED_KEY_BYTES, EpochAnnounce, sign_tx

from .blocks import AUTHS, TXS, block, commit, reading
from .helpers import CHAIN_ID, key, longer_form, pub


def refused(data: bytes, match: str | None = None) -> MalformedBlockError:
    with pytest.raises(MalformedBlockError, match=match) as info:
        decode_block(data)
    assert type(info.value) is MalformedBlockError
    return info.value


def with_header(b: Block, **changes: object) -> bytes:
    """``b`` re-encoded with a header whose fields were changed (and not recomputed)."""
    header = replace(b.header, **changes)
    return Block(header, header.encode(), b.txs, b.last_commit).encode()


# round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_txs", [0, 1, 2, 5])
@pytest.mark.parametrize("with_commit", [True, False])
def test_make_decode_round_trip(n_txs: int, with_commit: bool) -> None:
    b = block(txs=TXS[:n_txs], last_commit=commit() if with_commit else None)
    back = decode_block(b.encode())
    assert back == b
    assert back.hash == b.hash == blake2b256(b.header_bytes)
    assert back.height == 5
    assert back.header.tx_count == n_txs
    assert back.header.tx_root == merkle.root([tx.leaf_bytes for tx in TXS[:n_txs]])
    assert back.header.authorities_hash == authorities_hash(AUTHS)
    assert back.header.last_commit_hash == (commit().hash if with_commit else ZERO_HASH)
    assert back.encode() == b.encode()


def test_header_fields_change_the_hash() -> None:
    base = block()
    others = [
        block(height=6, last_commit=commit(height=5)), block(time_ms=1), block(parent=ZERO_HASH),
        block(proposer=pub("C")), block(txs=TXS[:4]), block(authorities=AUTHS[:3]),
        block(last_commit=commit(names=["A", "B", "D"])),
    ]
    hashes = {base.hash, *(o.hash for o in others)}
    assert len(hashes) == 1 + len(others)


def test_header_wire_form() -> None:
    b = block()
    h = b.header
    assert codec.decode(b.header_bytes) == [
        HEADER_VERSION, h.height, h.time_ms, h.parent, h.proposer, h.tx_root, h.tx_count,
        h.authorities_hash, h.next_authorities_hash, h.last_commit_hash,
    ]
    assert h.next_authorities_hash == h.authorities_hash  # no change of authorities
    assert decode_header(b.header_bytes) == h


# decode_block refusals ---------------------------------------------------------------------


def test_tx_count_mismatch() -> None:
    b = block()
    refused(with_header(b, tx_count=4), "header says 4 txs, body has 5")
    refused(with_header(b, tx_count=6), "header says 6 txs, body has 5")


def test_tx_root_mismatch() -> None:
    b = block()
    refused(with_header(b, tx_root=merkle.root([t.leaf_bytes for t in TXS[:4]])), "tx_root")
    swapped = Block(b.header, b.header_bytes, (TXS[1], TXS[0], *TXS[2:]), b.last_commit)
    refused(swapped.encode(), "do not match tx_root")
    replaced = Block(b.header, b.header_bytes, (*TXS[:4], reading(99)), b.last_commit)
    refused(replaced.encode(), "do not match tx_root")


def test_last_commit_hash_mismatch() -> None:
    b = block()
    other = commit(names=["A", "B", "D"])
    refused(Block(b.header, b.header_bytes, b.txs, other).encode(), "last commit does not match")
    refused(Block(b.header, b.header_bytes, b.txs, None).encode(), "last commit does not match")
    no_commit = block(last_commit=None)
    refused(Block(no_commit.header, no_commit.header_bytes, b.txs, commit()).encode(),
            "last commit does not match")


@pytest.mark.parametrize("commit_height", [0, 3, 5, 6])
def test_last_commit_of_the_wrong_height(commit_height: int) -> None:
    b = block(last_commit=commit(height=commit_height))  # make_block does not check
    refused(b.encode(), f"carries the commit of height {commit_height}")


def test_block_zero_carries_no_commit() -> None:
    b = block(height=0, last_commit=commit(height=0))
    refused(b.encode(), "carries the commit")
    assert decode_block(block(height=0, last_commit=None).encode()).height == 0


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty input"),
        (b"\xc0", "must be an array"),
        (codec.encode([b"", [], b""]), "empty input"),
        (codec.encode([b"h", [], b""]), "header must be an array"),
        (codec.encode([b"x" * 1025, [], b""]), "more than the limit"),
        (codec.encode(["header", [], b""]), "must be bytes"),
        (codec.encode([b"h", [], b"", b""]), "3 fields"),
        (codec.encode([b"h", b"txs", b""]), "must be an array"),
        (codec.encode([b"h", [], None]), "must be bytes"),
        (b"\x00" * (MAX_BLOCK_BYTES + 1), "exceeds"),
    ],
)
def test_garbage_blocks(data: bytes, match: str) -> None:
    refused(data, match)


def test_bad_parts_inside_a_block() -> None:
    b = block()
    header, txs, last = codec.decode(b.encode())
    refused(codec.encode([header, [*txs[:4], "tx"]]), "3 fields")
    refused(codec.encode([header, [*txs[:4], "tx"], last]), "must be a byte string")
    refused(codec.encode([header, [*txs[:4], txs[4][:-1]], last]), "transaction")
    refused(codec.encode([header, txs, last[:-1]]), "malformed msgpack")
    refused(codec.encode([header[:-1], txs, last]), "malformed msgpack")
    refused(codec.encode([header, [b""] * 10_001, last]), "at most 10000")


def test_a_block_in_another_outer_form_is_the_same_block() -> None:
    # nothing hashes a block's outer array (its hash is the header's, which commits to the
    # rest), so only its structure is checked; it is stored and relayed canonically
    b = block()
    header = b.header_bytes
    loose = longer_form(b.encode())  # array16 for the outer array, then bin16 for the header
    loose = loose[:3] + b"\xc5" + len(header).to_bytes(2, "big") + loose[5:]
    assert decode_block(loose).encode() == b.encode()
    assert decode_block(loose).hash == b.hash
    assert decode_block(loose).last_commit == b.last_commit


def test_the_hashed_parts_of_a_block_have_one_encoding() -> None:
    # a header, a transaction or a certificate in another form would hash differently
    b = block()
    header, txs, last = codec.decode(b.encode())
    refused(codec.encode([longer_form(header), txs, last]), "not canonical")
    refused(codec.encode([header, [*txs[:4], longer_form(txs[4])], last]), "not canonical")
    refused(codec.encode([header, txs, longer_form(last)]), "not canonical")


@pytest.mark.parametrize(
    ("version", "match"),
    [(1, "version 1"), (3, "version 3"), (0, "version 0"), (True, "version True"),
     ("2", "version '2'")],
)
def test_header_version(version: object, match: str) -> None:
    b = block()
    fields = codec.decode(b.header_bytes)
    header_bytes = codec.encode([version, *fields[1:]])
    with pytest.raises(MalformedBlockError, match=match):
        decode_header(header_bytes)
    refused(Block(b.header, header_bytes, b.txs, b.last_commit).encode(), match)


def test_one_header_has_one_encoding() -> None:
    # A header decodes only from the bytes it encodes to, so a relayer cannot re-encode
    # a block (e.g. version 1 -> True) to give the same content a second hash.
    b = block()
    assert decode_header(b.header_bytes).encode() == b.header_bytes
    fields = codec.decode(b.header_bytes)
    for i, value in enumerate(fields):
        if type(value) is int and value in (0, 1):
            other = list(fields)
            other[i] = bool(value)
            with pytest.raises(MalformedBlockError):
                decode_header(codec.encode(other))


def test_header_fields_are_checked() -> None:
    fields = codec.decode(block().header_bytes)
    for i, bad in [(1, -1), (1, True), (3, b"short"), (4, bytes(31)), (6, "5"), (8, b""), (9, b"")]:
        wrong = list(fields)
        wrong[i] = bad
        with pytest.raises(MalformedBlockError, match="header"):
            decode_header(codec.encode(wrong))
    with pytest.raises(MalformedBlockError, match="10 fields"):
        decode_header(codec.encode(fields[:-1]))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_decode_block_arbitrary_bytes(data: bytes) -> None:
    try:
        decode_block(data)
    except MalformedBlockError as exc:
        assert type(exc) is MalformedBlockError
    else:  # pragma: no cover
        raise AssertionError("random bytes decoded as a block")


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_decode_block_mutations(data: st.DataObject) -> None:
    original = block(txs=TXS[:2])
    raw = original.encode()
    i = data.draw(st.integers(0, len(raw) - 1))
    mask = data.draw(st.integers(1, 255))
    mutated = raw[:i] + bytes((raw[i] ^ mask,)) + raw[i + 1:]
    try:
        b = decode_block(mutated)
    except MalformedBlockError as exc:
        assert type(exc) is MalformedBlockError
    else:
        # The header commits to the txs and the carried commit, so only a header field
        # checked against nothing here (time, parent, proposer, ...) can change: the
        # block then has another hash.
        assert b.encode() == mutated
        assert (b.txs, b.last_commit) == (original.txs, original.last_commit)
        assert b.hash != original.hash


def test_make_block_never_builds_a_block_decode_block_refuses() -> None:
    # the largest transaction: an epoch wrapped for the most grantees, each wrap at its limit
    grantees = sorted(pub(f"G{i}") for i in range(MAX_GRANTEES))
    wraps = codec.encode([[g, b"w" * MAX_WRAPPED_KEY_BYTES] for g in grantees])
    body = EpochAnnounce(pub("P"), 1, blake2b256(b"x"), grantees, wraps_hash(wraps))
    tx = sign_tx(body, key("P"), CHAIN_ID, wraps)
    n = MAX_BLOCK_BYTES // len(tx.raw) + 1  # well under MAX_BLOCK_TXS
    try:
        b = block(txs=(tx,) * n)
    except ValueError:
        return  # refusing to build it would be a fix
    assert decode_block(b.encode()) == b


def test_header_dataclass_is_frozen() -> None:
    h = block().header
    assert isinstance(h, Header)
    with pytest.raises(AttributeError):
        h.height = 7  # type: ignore[misc]
