"""Merkle roots and inclusion proofs against a direct transcription of RFC 6962 / RFC 9162."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iomtnode.core import merkle
from iomtnode.core.crypto import blake2b256
from iomtnode.core.merkle import EMPTY_ROOT, MAX_PROOF_DEPTH, Proof, leaf_hash, prove, root, verify


def H(data: bytes) -> bytes:  # the RFC's name for the hash
    return blake2b256(data)


def split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962, 2.1: the Merkle Tree Hash."""
    n = len(leaves)
    if n == 0:
        return H(b"")
    if n == 1:
        return H(b"\x00" + leaves[0])
    k = split(n)
    return H(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962, 2.1.1: PATH(m, D[n]), the audit path of leaf m."""
    n = len(leaves)
    if n == 1:
        return []
    k = split(n)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def rfc9162_verify(leaf: bytes, index: int, count: int, proof: list[bytes], root_: bytes) -> bool:
    """RFC 9162, 2.1.3.2: verifying an inclusion proof, step by step."""
    if index >= count:
        return False
    fn, sn = index, count - 1
    r = H(b"\x00" + leaf)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = H(b"\x01" + p + r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = H(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_


def make_leaves(n: int, tag: bytes = b"tx") -> list[bytes]:
    return [tag + i.to_bytes(2, "big") for i in range(n)]


def test_split() -> None:
    assert [split(n) for n in range(2, 10)] == [1, 2, 2, 4, 4, 4, 4, 8]


def test_empty_root() -> None:
    assert root([]) == EMPTY_ROOT == H(b"")


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = b"a", b"b"
    assert leaf_hash(a) == H(b"\x00a")
    # an inner node can never pass for a leaf (second-preimage protection)
    assert root([leaf_hash(a) + leaf_hash(b)]) != root([a, b])
    assert root([b"\x01" + leaf_hash(a) + leaf_hash(b)]) != root([a, b])


@pytest.mark.parametrize("n", range(34))
def test_root_matches_rfc6962(n: int) -> None:
    leaves = make_leaves(n)
    assert root(leaves) == mth(leaves)


@pytest.mark.parametrize("n", range(1, 34))
def test_every_proof_is_the_rfc_path_and_verifies(n: int) -> None:
    leaves = make_leaves(n)
    r = root(leaves)
    for i in range(n):
        proof = prove(leaves, i)
        assert proof == Proof(i, n, tuple(path(i, leaves)))
        assert verify(leaves[i], proof, r) is True
        assert rfc9162_verify(leaves[i], i, n, list(proof.path), r) is True


def test_distinct_leaf_lists_have_distinct_roots() -> None:
    # no duplication of an odd last leaf: [a, b, c] and [a, b, c, c] differ (CVE-2012-2459)
    a, b, c = b"a", b"b", b"c"
    roots = {root(x) for x in ([a], [a, a], [a, b, c], [a, b, c, c], [a, b], [b, a])}
    assert len(roots) == 6


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_wrong_leaf_or_root_fails(n: int) -> None:
    leaves = make_leaves(n)
    r = root(leaves)
    for i in range(n):
        proof = prove(leaves, i)
        assert verify(leaves[i] + b"x", proof, r) is False
        assert verify(leaf_hash(leaves[i]), proof, r) is False
        assert verify(leaves[i], proof, root(make_leaves(n, b"other"))) is False
        assert verify(leaves[i], proof, r[:-1] + bytes((r[-1] ^ 1,))) is False
        for j in range(n):
            if j != i:
                assert verify(leaves[j], proof, r) is False


@pytest.mark.parametrize("n", range(2, 18))
def test_wrong_index_fails(n: int) -> None:
    leaves = make_leaves(n)
    r = root(leaves)
    for i in range(n):
        proof = prove(leaves, i)
        for j in range(-1, n + 2):
            if j != i:
                assert verify(leaves[i], Proof(j, n, proof.path), r) is False


@pytest.mark.parametrize("n", range(1, 18))
def test_wrong_count_is_judged_as_rfc9162_does(n: int) -> None:
    leaves = make_leaves(n)
    r = root(leaves)
    refused = 0
    for i in range(n):
        proof = prove(leaves, i)
        for count in range(0, 40):
            if count == n:
                continue
            got = verify(leaves[i], Proof(i, count, proof.path), r)
            assert got is rfc9162_verify(leaves[i], i, count, list(proof.path), r)
            refused += not got
    assert refused > 0


def test_some_wrong_counts_cannot_be_detected() -> None:
    # Leaf 0 of 3 and leaf 0 of 4 have the same path shape: the count must come from an
    # authenticated source (the block header's tx_count), never from the proof alone.
    leaves = make_leaves(3)
    proof = prove(leaves, 0)
    assert verify(leaves[0], Proof(0, 4, proof.path), root(leaves)) is True
    # ... whereas the last leaf of 4 is not the last leaf of 5
    leaves = make_leaves(4)
    proof = prove(leaves, 3)
    assert verify(leaves[3], Proof(3, 5, proof.path), root(leaves)) is False
    assert verify(leaves[3], Proof(3, 3, proof.path), root(leaves)) is False


@pytest.mark.parametrize("n", [2, 3, 4, 7, 16, 33])
def test_truncated_or_extended_path_fails(n: int) -> None:
    leaves = make_leaves(n)
    r = root(leaves)
    for i in range(n):
        p = prove(leaves, i)
        assert p.path  # n > 1: there is always a sibling
        for cut in range(len(p.path)):
            assert verify(leaves[i], Proof(i, n, p.path[:cut]), r) is False
        assert verify(leaves[i], Proof(i, n, (*p.path, p.path[-1])), r) is False
        assert verify(leaves[i], Proof(i, n, (*p.path, bytes(32))), r) is False
        assert verify(leaves[i], Proof(i, n, (bytes(32), *p.path)), r) is False


def test_single_leaf_proof() -> None:
    proof = prove([b"only"], 0)
    assert proof == Proof(0, 1, ())
    assert verify(b"only", proof, root([b"only"])) is True
    assert verify(b"only", Proof(0, 1, (bytes(32),)), root([b"only"])) is False


def test_malformed_proofs_fail() -> None:
    leaves = make_leaves(5)
    r = root(leaves)
    p = prove(leaves, 2)
    assert verify(leaves[2], Proof(2, 5, (p.path[0][:31], *p.path[1:])), r) is False
    assert verify(leaves[2], Proof(2, 5, (p.path[0] + b"\x00", *p.path[1:])), r) is False
    assert verify(leaves[2], Proof(2, 0, p.path), r) is False
    assert verify(leaves[2], Proof(-1, 5, p.path), r) is False
    assert verify(leaves[2], Proof(2, 5, (bytes(32),) * (MAX_PROOF_DEPTH + 1)), r) is False


@pytest.mark.parametrize("index", [-1, 3, 100])
def test_prove_out_of_range(index: int) -> None:
    with pytest.raises(IndexError):
        prove(make_leaves(3), index)
    with pytest.raises(IndexError):
        prove([], 0)


def test_iterative_root_matches_split_rule_at_large_sizes() -> None:
    for n in (63, 64, 65, 100, 127, 128, 129, 1000):
        hashes = [leaf_hash(x) for x in make_leaves(n)]
        assert merkle._root(hashes) == mth(make_leaves(n))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=12), min_size=1, max_size=40), st.data())
def test_hypothesis_roots_and_proofs(leaves: list[bytes], data: st.DataObject) -> None:
    r = root(leaves)
    assert r == mth(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    proof = prove(leaves, i)
    assert list(proof.path) == path(i, leaves)
    assert verify(leaves[i], proof, r) is True
    other = data.draw(st.binary(max_size=12).filter(lambda b: b != leaves[i]))
    assert verify(other, proof, r) is False
    count = data.draw(st.integers(1, 64))
    wrong = Proof(i, count, proof.path)
    assert verify(leaves[i], wrong, r) is rfc9162_verify(leaves[i], i, count, list(proof.path), r)


# levels: a block's tree built once, its proofs read from it ------------------------------


def check_levels(leaves: list[bytes]) -> None:
    tree = merkle.levels(leaves)
    r = root(leaves)
    small = len(leaves) <= 130  # the RFC's recursive path is quadratic: the small trees
    assert tree.count == len(leaves) and tree.root == r
    assert tree.nbytes == sum(len(level) for level in tree.hashes)
    for i in range(len(leaves)):
        proof = merkle.prove_from_levels(tree, i)
        assert proof == prove(leaves, i)
        assert not small or proof.path == tuple(path(i, leaves))
        assert verify(leaves[i], proof, r) is True
        assert tree.leaf(i) == leaf_hash(leaves[i])


@pytest.mark.parametrize("n", [*range(1, 34), 64, 100, 127, 128, 129, 256, 1000, 1024])
def test_proofs_from_levels_are_the_proofs(n: int) -> None:
    check_levels(make_leaves(n))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=300))
def test_proofs_from_levels_are_the_proofs_for_any_leaves(leaves: list[bytes]) -> None:
    check_levels(leaves)


def test_levels_are_level_by_level_hashes() -> None:
    leaves = make_leaves(5)  # 5 leaves: 3 nodes (the fifth carried up), 2, then the root
    tree = merkle.levels(leaves)
    assert [len(level) // 32 for level in tree.hashes] == [5, 3, 2, 1]
    assert tree.hashes[-1] == root(leaves)
    assert tree.hashes[1][64:] == leaf_hash(leaves[4])  # carried up unchanged
    assert merkle.levels_of_hashes([leaf_hash(x) for x in leaves]) == tree
    assert tree.nbytes == (5 + 3 + 2 + 1) * 32


def test_levels_of_no_leaves() -> None:
    tree = merkle.levels([])
    assert tree.count == 0 and tree.root == EMPTY_ROOT and tree.nbytes == 0
    with pytest.raises(IndexError):
        merkle.prove_from_levels(tree, 0)


@pytest.mark.parametrize("index", [-1, 3, 100])
def test_proof_from_levels_of_a_missing_leaf_raises(index: int) -> None:
    tree = merkle.levels(make_leaves(3))
    with pytest.raises(IndexError):
        merkle.prove_from_levels(tree, index)
    with pytest.raises(IndexError):
        tree.leaf(index)
