"""Merkle trees over a block's transactions, after RFC 6962 (Certificate Transparency).

Leaves are ``H(0x00 | leaf_bytes)`` and inner nodes ``H(0x01 | left | right)``, so a leaf
can never pass for an inner node (no second-preimage tricks). A tree of n leaves splits at
the largest power of two below n; there is no duplication of odd leaves, so no two leaf
lists share a root (the CVE-2012-2459 flaw of Bitcoin's tree does not apply).
"""

from __future__ import annotations

from dataclasses import dataclass

from .crypto import HASH_BYTES, blake2b256

EMPTY_ROOT = blake2b256(b"")
MAX_PROOF_DEPTH = 64


def leaf_hash(data: bytes) -> bytes:
    return blake2b256(b"\x00" + data)


def _node(left: bytes, right: bytes) -> bytes:
    return blake2b256(b"\x01" + left + right)


def _root(hashes: list[bytes]) -> bytes:
    # Iterative bottom-up form of RFC 6962's recursive MTH: pairs adjacent nodes; a last
    # odd node is carried up unchanged. This yields the same root as the split rule.
    level = hashes
    while len(level) > 1:
        nxt = [_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def root(leaves: list[bytes]) -> bytes:
    """The Merkle root of ``leaves`` (raw leaf bytes, hashed here)."""
    if not leaves:
        return EMPTY_ROOT
    return _root([leaf_hash(leaf) for leaf in leaves])


@dataclass(frozen=True, slots=True)
class Proof:
    """An inclusion proof: leaf ``index`` of ``count`` leaves, sibling hashes bottom-up."""

    index: int
    count: int
    path: tuple[bytes, ...]


def prove(leaves: list[bytes], index: int) -> Proof:
    """The inclusion proof of ``leaves[index]``."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} of {len(leaves)}")
    path: list[bytes] = []
    level = [leaf_hash(leaf) for leaf in leaves]
    i = index
    while len(level) > 1:
        sibling = i ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        nxt = [_node(level[j], level[j + 1]) for j in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        i //= 2
    return Proof(index, len(leaves), tuple(path))


@dataclass(frozen=True, slots=True)
class Levels:
    """Every level of the tree over ``count`` leaves, the leaf hashes first and the root
    last, each level's node hashes concatenated into one byte string (``HASH_BYTES`` each):
    what :func:`prove_from_levels` walks, so a block's proofs need its tree built once."""

    count: int
    hashes: tuple[bytes, ...]

    @property
    def root(self) -> bytes:
        return self.hashes[-1] if self.count else EMPTY_ROOT

    @property
    def nbytes(self) -> int:
        """Bytes of hashes held (about ``2 * count * HASH_BYTES``)."""
        return sum(len(level) for level in self.hashes)

    def leaf(self, index: int) -> bytes:
        """The :func:`leaf_hash` of leaf ``index``."""
        if not 0 <= index < self.count:
            raise IndexError(f"leaf {index} of {self.count}")
        return self.hashes[0][index * HASH_BYTES:(index + 1) * HASH_BYTES]


def levels(leaves: list[bytes]) -> Levels:
    """The tree over ``leaves`` (raw leaf bytes, hashed here), level by level."""
    return levels_of_hashes([leaf_hash(leaf) for leaf in leaves])


def levels_of_hashes(leaf_hashes: list[bytes]) -> Levels:
    """The tree over leaves whose :func:`leaf_hash` values are ``leaf_hashes``."""
    if not leaf_hashes:
        return Levels(0, ())
    level = b"".join(leaf_hashes)
    width = len(leaf_hashes)
    built = [level]
    pair = 2 * HASH_BYTES
    while width > 1:
        # the same pairing as _root: adjacent nodes, a last odd node carried up unchanged
        nxt = [blake2b256(b"\x01" + level[j:j + pair]) for j in range(0, pair * (width // 2), pair)]
        if width % 2:
            nxt.append(level[-HASH_BYTES:])
        level, width = b"".join(nxt), len(nxt)
        built.append(level)
    return Levels(len(leaf_hashes), tuple(built))


def prove_from_levels(tree: Levels, index: int) -> Proof:
    """The inclusion proof of leaf ``index``: the same :class:`Proof` as :func:`prove` of
    the leaves ``tree`` was built from, read from the levels without hashing."""
    if not 0 <= index < tree.count:
        raise IndexError(f"leaf {index} of {tree.count}")
    path: list[bytes] = []
    i = index
    for level in tree.hashes[:-1]:
        sibling = (i ^ 1) * HASH_BYTES
        if sibling < len(level):
            path.append(level[sibling:sibling + HASH_BYTES])
        i //= 2
    return Proof(index, tree.count, tuple(path))


def verify(leaf: bytes, proof: Proof, expected_root: bytes) -> bool:
    """True when ``leaf`` is leaf ``proof.index`` of a tree whose root is ``expected_root``."""
    if not 0 <= proof.index < proof.count or len(proof.path) > MAX_PROOF_DEPTH:
        return False
    if any(len(h) != HASH_BYTES for h in proof.path):
        return False
    node = leaf_hash(leaf)
    i, width = proof.index, proof.count
    steps = iter(proof.path)
    while width > 1:
        if i ^ 1 < width:  # this node has a sibling at this level
            sibling = next(steps, None)
            if sibling is None:
                return False
            node = _node(sibling, node) if i & 1 else _node(node, sibling)
        i //= 2
        width = (width + 1) // 2
    return next(steps, None) is None and node == expected_root
