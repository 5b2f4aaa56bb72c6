"""Commit certificates: quorums, signatures, and one encoding, made once."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iomtnode.core import codec, merkle
from iomtnode.core.block import (
    Commit,
    InvalidCommitError,
    MalformedBlockError,
    decode_commit,
    precommit_digest,
    quorum,
    sign_commit,
)
from iomtnode.core.crypto import BadSignatureError, Domain, blake2b256
from iomtnode.core.receipt import Handoff, make_receipt

from .blocks import AUTHS, BLOCK_HASH, NAMES, PARENT, TXS, block, commit
from .helpers import CHAIN_ID, key, longer_form, pub

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
                               merkle.prove([t.leaf_bytes for t in TXS], 0))
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


# precommits checked once -------------------------------------------------------------------


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Count the signature checks behind precommits (``vote.verify``: what
    :func:`~iomtnode.core.vote.verify_precommit` calls unless it remembers a pass),
    remembering none yet."""
    from iomtnode.core import vote as vote_module

    checked: list[bytes] = []
    real = vote_module.verify

    def count(public: bytes, domain: Domain, chain_id: str, digest: bytes, sig: bytes) -> None:
        checked.append(sig)
        real(public, domain, chain_id, digest, sig)

    monkeypatch.setattr(vote_module, "verify", count)
    monkeypatch.setattr(vote_module, "_passed_precommits", vote_module.OrderedDict())
    return checked


def _precommits(block_hash: bytes, names: list[str]) -> tuple[tuple[bytes, bytes], ...]:
    digest = precommit_digest(9, 0, block_hash)
    return tuple(sorted((key(n).public, key(n).sign(Domain.PRECOMMIT, CHAIN_ID, digest))
                        for n in names))


def test_a_certificate_of_precommits_checked_as_votes_costs_no_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The next proposal carries the certificate of precommits a follower checked as
    votes one height before: those signatures are not checked again."""
    from iomtnode.core.vote import Vote, VoteType

    checked = _counting(monkeypatch)
    block_hash = blake2b256(b"checked as votes")
    sigs = _precommits(block_hash, NAMES[:3])
    for authority, sig in sigs:
        Vote(VoteType.PRECOMMIT, 9, 0, block_hash, authority, sig).verify(CHAIN_ID)
    assert len(checked) == 3
    assert Commit(9, 0, block_hash, sigs).verify(AUTHS, CHAIN_ID) is None
    assert len(checked) == 3
    fresh = _precommits(block_hash, NAMES[1:4])  # D's precommit was never seen as a vote
    assert Commit(9, 0, block_hash, fresh).verify(AUTHS, CHAIN_ID) is None
    assert checked[3:] == [sig for authority, sig in fresh if authority == pub(NAMES[3])]


def test_an_own_precommit_is_not_checked_in_the_certificate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from iomtnode.core.vote import VoteType, sign_vote

    checked = _counting(monkeypatch)
    block_hash = blake2b256(b"own precommit")
    own = sign_vote(key(NAMES[0]), CHAIN_ID, VoteType.PRECOMMIT, 9, 0, block_hash)
    others = _precommits(block_hash, NAMES[1:3])
    signatures = tuple(sorted(((own.validator, own.signature), *others)))
    assert Commit(9, 0, block_hash, signatures).verify(AUTHS, CHAIN_ID) is None
    assert sorted(checked) == sorted(sig for _, sig in others)


def test_a_remembered_precommit_passes_only_its_exact_check() -> None:
    """A pass is remembered under every input of the check: the same signature for
    another block, height or chain, or under another authority's key, another signature
    for the same, and the same bytes split into other fields, are checked anew (and
    fail)."""
    from iomtnode.core.vote import verify_precommit

    block_hash = blake2b256(b"remembered")
    digest = precommit_digest(9, 0, block_hash)
    signature = key(NAMES[0]).sign(Domain.PRECOMMIT, CHAIN_ID, digest)
    verify_precommit(pub(NAMES[0]), CHAIN_ID, digest, signature)  # passes, remembered
    verify_precommit(pub(NAMES[0]), CHAIN_ID, digest, signature)  # from memory
    for args in [(pub(NAMES[0]), CHAIN_ID, precommit_digest(9, 0, PARENT), signature),
                 (pub(NAMES[0]), CHAIN_ID, precommit_digest(10, 0, block_hash), signature),
                 (pub(NAMES[0]), "iomt-other", digest, signature),
                 (pub(NAMES[1]), CHAIN_ID, digest, signature),
                 (pub(NAMES[0]), CHAIN_ID, digest, signature[:-1] + bytes((signature[-1] ^ 1,))),
                 # the same bytes split otherwise: refused for their lengths, never remembered
                 (pub(NAMES[0]) + digest[:1], CHAIN_ID, digest[1:] + signature[:1],
                  signature[1:])]:
        with pytest.raises(BadSignatureError):
            verify_precommit(*args)


def test_remembered_precommits_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from iomtnode.core import vote as vote_module

    monkeypatch.setattr(vote_module, "PRECOMMITS_REMEMBERED", 2)
    checked = _counting(monkeypatch)
    digests = [precommit_digest(9, 0, blake2b256(bytes([i]))) for i in range(3)]
    sigs = [key(NAMES[0]).sign(Domain.PRECOMMIT, CHAIN_ID, d) for d in digests]
    for d, s in zip(digests, sigs, strict=True):
        vote_module.verify_precommit(pub(NAMES[0]), CHAIN_ID, d, s)
    assert len(vote_module._passed_precommits) == 2
    vote_module.verify_precommit(pub(NAMES[0]), CHAIN_ID, digests[0], sigs[0])  # forgotten
    vote_module.verify_precommit(pub(NAMES[0]), CHAIN_ID, digests[2], sigs[2])  # kept
    assert checked == [*sigs, sigs[0]]
