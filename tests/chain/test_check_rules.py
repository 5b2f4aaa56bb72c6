"""``Chain.check``: one block per rule, honest in everything but that rule, is refused.

Authorities A, B, C and D (quorum 3). The chain holds block 1, certified by A, B and C;
each case is a candidate block 2 that differs from the honest one in one field, or an
honest block 2 with a wrong certificate. Removing any one rule from ``Chain._check_next``
(or the quorum count from ``Commit.verify``) makes its case pass the check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from iomtnode.chain.chain import Chain, InvalidBlockError
from iomtnode.core.block import Block, Commit, make_block, sign_commit
from iomtnode.core.crypto import blake2b256
from iomtnode.core.genesis import Genesis
from iomtnode.store import BlockStore

from ..core.helpers import CHAIN_ID, key, pub

T0 = 1_700_000_000_000
ABCD = tuple(pub(n) for n in "ABCD")
GENESIS = Genesis(CHAIN_ID, T0, ABCD, 1)


def certify(block: Block, signers: str = "ABC", *, height: int | None = None) -> Commit:
    """A genuine certificate of ``block`` (or of its hash at ``height``) by ``signers``."""
    return sign_commit([key(n) for n in signers], CHAIN_ID,
                       block.height if height is None else height, 0, block.hash)


@pytest.fixture
def chain(tmp_path) -> Iterator[Chain]:
    with BlockStore.open(tmp_path / "data") as store:
        chain = Chain(store, GENESIS)
        built = chain.build([], pub("B"), T0 + 1000)
        chain.commit(built, certify(built.block))
        yield chain


def block_2(chain: Chain, **change: Any) -> Block:
    """The honest next block of ``chain`` (proposed by C), with the fields in ``change``."""
    head = chain.head
    fields: dict[str, Any] = dict(
        height=head.height + 1, time_ms=head.header.time_ms + 1000, parent=head.hash,
        proposer=pub("C"), txs=(), authorities=ABCD, last_commit=chain.commit_at(head.height),
        next_authorities=ABCD)
    fields.update(change)
    return make_block(**fields)


def forged(commit: Commit) -> Commit:
    """``commit`` with the first signature's last byte changed."""
    (authority, signature), *rest = commit.signatures
    bad = signature[:-1] + bytes([signature[-1] ^ 1])
    return replace(commit, signatures=((authority, bad), *rest))


def block_1_elsewhere(chain: Chain) -> Block:
    """Another block 1 than the chain's (a later time): a fork's."""
    head = chain.block_at(1)
    return make_block(height=1, time_ms=head.header.time_ms + 1, parent=head.header.parent,
                      proposer=pub("B"), txs=(), authorities=ABCD, last_commit=None)


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Chain], tuple[Block, Commit]]  # the candidate block and its certificate
    refused: str  # what the InvalidBlockError says


def with_honest_commit(change: Callable[[Chain], dict[str, Any]]
                       ) -> Callable[[Chain], tuple[Block, Commit]]:
    def make(chain: Chain) -> tuple[Block, Commit]:
        block = block_2(chain, **change(chain))
        return block, certify(block)
    return make


def honest_block_with(commit: Callable[[Chain, Block], Commit]
                      ) -> Callable[[Chain], tuple[Block, Commit]]:
    def make(chain: Chain) -> tuple[Block, Commit]:
        block = block_2(chain)
        return block, commit(chain, block)
    return make


CASES = [
    # its parent is not the head (its carried certificate is the head's: only the parent
    # field says otherwise)
    Case("parent-not-head", with_honest_commit(lambda c: dict(parent=blake2b256(b"elsewhere"))),
         "does not extend this chain's head"),
    # its time is its parent's
    Case("time-equal", with_honest_commit(lambda c: dict(time_ms=c.head.header.time_ms)),
         "is not later than its parent"),
    # its time is before its parent's
    Case("time-before", with_honest_commit(lambda c: dict(time_ms=c.head.header.time_ms - 1)),
         "is not later than its parent"),
    # proposed by X, no authority (certified by a quorum all the same)
    Case("proposer-not-authority", with_honest_commit(lambda c: dict(proposer=pub("X"))),
         "proposed by a non-authority"),
    # its header names A, B, C (D left out) as the set that certifies it
    Case("authorities-hash-fewer",
         with_honest_commit(lambda c: dict(authorities=tuple(pub(n) for n in "ABC"))),
         "names another authority set"),
    # ... or A to D and X
    Case("authorities-hash-more",
         with_honest_commit(lambda c: dict(authorities=(*ABCD, pub("X")))),
         "names another authority set"),
    # it carries its parent's certificate with one signature forged
    Case("parent-certificate-forged",
         with_honest_commit(lambda c: dict(last_commit=forged(c.commit_at(1)))),
         "bad precommit signature"),
    # it carries a certificate of its parent by A and B only: below the quorum of 3
    Case("parent-certificate-below-quorum",
         with_honest_commit(lambda c: dict(last_commit=certify(c.head, "AB"))),
         "2 of 4 authorities signed; 3 needed"),
    # it carries no certificate of its parent
    Case("parent-certificate-missing", with_honest_commit(lambda c: dict(last_commit=None)),
         "parent's certificate is missing"),
    # it carries a genuine certificate of another block 1
    Case("parent-certificate-of-another-block",
         with_honest_commit(lambda c: dict(last_commit=certify(block_1_elsewhere(c)))),
         "parent's certificate is for another block"),
    # the honest block with a genuine certificate of another block 2
    Case("certificate-of-another-block",
         honest_block_with(lambda c, b: certify(block_2(c, time_ms=b.header.time_ms + 1))),
         "the certificate is not for block 2"),
    # the honest block with a genuine certificate of its hash at height 3
    Case("certificate-of-another-height",
         honest_block_with(lambda c, b: certify(b, height=3)),
         "the certificate is not for block 2"),
    # the honest block certified by A and B only
    Case("certificate-below-quorum", honest_block_with(lambda c, b: certify(b, "AB")),
         "2 of 4 authorities signed; 3 needed"),
    # the honest block with one of its three signatures forged
    Case("certificate-forged", honest_block_with(lambda c, b: forged(certify(b))),
         "bad precommit signature"),
]


def test_the_honest_block_passes(chain: Chain) -> None:
    """The baseline every case differs from in one thing."""
    block = block_2(chain)
    built = chain.check(block, certify(block))
    chain.commit(built, certify(block))
    assert chain.height == 2
    assert chain.check_proposal(block_2(chain)).block.height == 3


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_block_breaking_one_rule_is_refused(chain: Chain, case: Case) -> None:
    block, commit = case.make(chain)
    with pytest.raises(InvalidBlockError, match=case.refused):
        chain.check(block, commit)
    assert chain.height == 1


@pytest.mark.parametrize("case", [c for c in CASES if not c.id.startswith("certificate-")],
                         ids=lambda c: c.id)
def test_a_proposal_breaking_one_rule_is_refused(chain: Chain, case: Case) -> None:
    """A proposal is checked as the block it will be, less its own certificate."""
    block, _ = case.make(chain)
    with pytest.raises(InvalidBlockError, match=case.refused):
        chain.check_proposal(block)
