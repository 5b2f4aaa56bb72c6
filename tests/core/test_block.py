"""Blocks, headers and commit certificates."""

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
    Commit,
    Header,
    InvalidCommitError,
    MalformedBlockError,
    authorities_hash,
    decode_block,
    decode_commit,
    decode_header,
    make_block,
    precommit_digest,
    quorum,
    sign_commit,
)
from iomtnode.core.crypto import Domain, blake2b256
from iomtnode.core.receipt import Handoff, make_receipt
from iomtnode.core.tx import Reading, SignedTx, sign_tx

from .helpers import CHAIN_ID, key, longer_form, pub

NAMES = ["A", "B", "C", "D"]
AUTHS = tuple(pub(n) for n in NAMES)
PARENT = blake2b256(b"parent block")
BLOCK_HASH = blake2b256(b"some block")


def reading(seq: int) -> SignedTx:
    body = Reading(pub("hr1"), seq, 1_000 + seq, "heart_rate", seq.to_bytes(2, "big"), b"")
    return sign_tx(body, key("hr1"), CHAIN_ID)


TXS = tuple(reading(s) for s in range(1, 6))


def commit(height: int = 4, round_: int = 0, block_hash: bytes = PARENT,
           names: list[str] | None = None) -> Commit:
    signers = NAMES[:3] if names is None else names
    return sign_commit([key(n) for n in signers], CHAIN_ID, height, round_, block_hash)


def block(**changes: object) -> Block:
    args: dict[str, object] = dict(
        height=5, time_ms=1_700_000_000_000, parent=PARENT, proposer=pub("B"), txs=TXS,
        authorities=AUTHS, last_commit=commit(),
    )
    args.update(changes)
    return make_block(**args)  # type: ignore[arg-type]


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
    assert back.header.tx_root == merkle.root([tx.raw for tx in TXS[:n_txs]])
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
    refused(with_header(b, tx_root=merkle.root([t.raw for t in TXS[:4]])), "tx_root")
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
    body = Reading(pub("hr1"), 1, 1, "ecg_chunk", b"e" * 1024, b"")
    tx = sign_tx(body, key("hr1"), CHAIN_ID)
    n = MAX_BLOCK_BYTES // len(tx.raw) + 1  # well under MAX_BLOCK_TXS
    try:
        b = block(txs=(tx,) * n)
    except ValueError:
        return  # refusing to build it would be a fix
    assert decode_block(b.encode()) == b


# quorum and commit certificates ------------------------------------------------------------


def test_quorum_table() -> None:
    assert [quorum(n) for n in range(1, 11)] == [1, 2, 3, 3, 4, 5, 5, 6, 7, 7]
    for n in range(1, 11):
        assert quorum(n) == (2 * n) // 3 + 1


@pytest.mark.parametrize("n", range(1, 101))
def test_quorums_intersect_in_an_honest_authority(n: int) -> None:
    f = (n - 1) // 3
    q = quorum(n)
    assert q <= n - f  # live with f silent authorities
    assert 2 * q - n > f  # any two quorums share more than f authorities
    assert q > 2 * n / 3


@pytest.mark.parametrize("n", range(1, 8))
def test_exactly_a_quorum_verifies(n: int) -> None:
    names = [f"auth{i}" for i in range(n)]
    auths = tuple(pub(x) for x in names)
    q = quorum(n)
    good = sign_commit([key(x) for x in names[:q]], CHAIN_ID, 9, 0, BLOCK_HASH)
    assert good.verify(auths, CHAIN_ID) is None
    everyone = sign_commit([key(x) for x in names], CHAIN_ID, 9, 0, BLOCK_HASH)
    assert everyone.verify(auths, CHAIN_ID) is None
    short = sign_commit([key(x) for x in names[: q - 1]], CHAIN_ID, 9, 0, BLOCK_HASH)
    with pytest.raises(InvalidCommitError, match=f"{q - 1} of {n} authorities signed; {q}"):
        short.verify(auths, CHAIN_ID)


def test_non_authority_signer() -> None:
    c = commit(height=9, block_hash=BLOCK_HASH, names=["A", "B", "C", "X"])
    with pytest.raises(InvalidCommitError, match="is not an authority"):
        c.verify(AUTHS, CHAIN_ID)


def test_duplicate_signer() -> None:
    c = commit(height=9, block_hash=BLOCK_HASH, names=["A", "B"])
    doubled = replace(c, signatures=(c.signatures[0], *c.signatures))
    with pytest.raises(InvalidCommitError, match="signed twice"):
        doubled.verify(AUTHS, CHAIN_ID)
    # a quorum of 3 of 4 cannot be made of two authorities, however often they sign
    tripled = replace(c, signatures=(c.signatures[0], c.signatures[0], c.signatures[1]))
    with pytest.raises(InvalidCommitError):
        tripled.verify(AUTHS, CHAIN_ID)


def test_bad_signature() -> None:
    c = commit(height=9, block_hash=BLOCK_HASH)
    (k, sig), *rest = c.signatures
    bad = replace(c, signatures=((k, sig[:-1] + bytes((sig[-1] ^ 1,))), *rest))
    with pytest.raises(InvalidCommitError, match="bad precommit signature"):
        bad.verify(AUTHS, CHAIN_ID)


@pytest.mark.parametrize(
    "relabel",
    [dict(height=10), dict(round=1), dict(block_hash=PARENT)],
    ids=["height", "round", "block_hash"],
)
def test_signatures_for_another_vote(relabel: dict[str, object]) -> None:
    c = commit(height=9, round_=0, block_hash=BLOCK_HASH)
    assert c.verify(AUTHS, CHAIN_ID) is None
    with pytest.raises(InvalidCommitError, match="bad precommit signature"):
        replace(c, **relabel).verify(AUTHS, CHAIN_ID)


def test_signatures_for_another_chain_or_domain() -> None:
    c = commit(height=9, block_hash=BLOCK_HASH)
    with pytest.raises(InvalidCommitError):
        c.verify(AUTHS, "iomt-other")
    digest = precommit_digest(9, 0, BLOCK_HASH)
    prevotes = tuple(sorted((key(n).public, key(n).sign(Domain.PREVOTE, CHAIN_ID, digest))
                            for n in NAMES[:3]))
    with pytest.raises(InvalidCommitError, match="bad precommit signature"):
        replace(c, signatures=prevotes).verify(AUTHS, CHAIN_ID)


def test_commit_against_another_authority_set() -> None:
    c = commit(height=9, block_hash=BLOCK_HASH, names=["A", "B", "C"])
    with pytest.raises(InvalidCommitError, match="is not an authority"):
        c.verify((pub("A"), pub("B")), CHAIN_ID)
    with pytest.raises(InvalidCommitError, match="3 of 7 authorities"):
        c.verify((*AUTHS, pub("E"), pub("F"), pub("G")), CHAIN_ID)
    with pytest.raises(InvalidCommitError):
        replace(c, signatures=()).verify((), CHAIN_ID)


def test_commit_round_trip_and_sorting() -> None:
    c = commit(height=9, round_=3, block_hash=BLOCK_HASH, names=["D", "A", "C"])
    assert [k for k, _ in c.signatures] == sorted(pub(n) for n in ["A", "C", "D"])
    back = decode_commit(c.encode())
    assert back == c
    assert back.hash == c.hash == blake2b256(c.encode())


def test_a_commit_has_one_encoding() -> None:
    c = commit(height=9, block_hash=BLOCK_HASH)
    with pytest.raises(MalformedBlockError, match="not canonical"):
        decode_commit(longer_form(c.encode()))
    height_as_uint16 = b"\x94\xcd\x00\x09" + c.encode()[2:]
    with pytest.raises(MalformedBlockError, match="not canonical"):
        decode_commit(height_as_uint16)


def test_a_commit_is_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # made: encoded on construction; decoded: its bytes are kept. The hash, the encoding
    # and a receipt's copies then never encode it again.
    c = commit(height=9, block_hash=BLOCK_HASH)
    assert c.raw == codec.encode([9, 0, BLOCK_HASH, [list(sig) for sig in c.signatures]])
    b = block(height=10, last_commit=c)
    decoded = decode_commit(c.encode())

    def refuse(value: object) -> bytes:
        raise AssertionError(f"encoded again: {value!r:.60}")

    monkeypatch.setattr(codec, "encode", refuse)
    for each in (c, decoded):
        assert each.encode() == c.raw and each.hash == blake2b256(c.raw)
        assert Handoff(b.header_bytes, each, AUTHS).to_json()["commit"] == c.raw.hex()
        receipt = make_receipt(CHAIN_ID, TXS[0], b.header, b.header_bytes, each,
                               merkle.prove([t.raw for t in TXS], 0))
        assert receipt["commit"] == c.raw.hex()


def test_a_changed_commit_is_encoded_anew() -> None:
    c = commit(height=9, block_hash=BLOCK_HASH)
    assert decode_commit(replace(c, round=7).encode()) == replace(c, round=7)
    assert replace(c, round=7).hash != c.hash


def test_decode_commit_rejects_unsorted_and_duplicate_signatures() -> None:
    c = commit(height=9, block_hash=BLOCK_HASH)
    unsorted = replace(c, signatures=tuple(reversed(c.signatures)))
    with pytest.raises(MalformedBlockError, match="sorted by authority"):
        decode_commit(unsorted.encode())
    dup = replace(c, signatures=(c.signatures[0], *c.signatures))
    with pytest.raises(MalformedBlockError, match="sorted by authority, one each"):
        decode_commit(dup.encode())


@pytest.mark.parametrize(
    "value",
    [
        [9, 0, BLOCK_HASH],
        [-1, 0, BLOCK_HASH, []],
        [9, True, BLOCK_HASH, []],
        [9, 0, BLOCK_HASH[:31], []],
        [9, 0, BLOCK_HASH, b""],
        [9, 0, BLOCK_HASH, [[pub("A")]]],
        [9, 0, BLOCK_HASH, [[pub("A")[:31], bytes(64)]]],
        [9, 0, BLOCK_HASH, [[pub("A"), bytes(63)]]],
        [9, 0, BLOCK_HASH, [[pub("A"), bytes(64)]] * 2],
    ],
)
def test_decode_commit_field_errors(value: list[object]) -> None:
    with pytest.raises(MalformedBlockError) as info:
        decode_commit(codec.encode(value))
    assert type(info.value) is MalformedBlockError


def test_decode_commit_signer_limit() -> None:
    c = commit(height=9, block_hash=BLOCK_HASH, names=NAMES)
    assert decode_commit(c.encode(), max_signers=4) == c
    with pytest.raises(MalformedBlockError, match="at most 3"):
        decode_commit(c.encode(), max_signers=3)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_decode_commit_arbitrary_bytes(data: bytes) -> None:
    try:
        decode_commit(data)
    except MalformedBlockError as exc:
        assert type(exc) is MalformedBlockError
    else:  # pragma: no cover
        raise AssertionError("random bytes decoded as a commit")


def test_header_dataclass_is_frozen() -> None:
    h = block().header
    assert isinstance(h, Header)
    with pytest.raises(AttributeError):
        h.height = 7  # type: ignore[misc]
