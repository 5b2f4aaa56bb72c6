"""Governance counts only authorities that signed: one that joins is online from its first
precommit in a certificate, and two additions of keys that never run cannot both pass.

Authorities are named A to F; every block is certified by the keys the test names.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iomtnode.chain.chain import BuiltBlock, Chain
from iomtnode.core.block import sign_commit
from iomtnode.core.errors import GovernanceError
from iomtnode.core.genesis import Genesis
from iomtnode.core.tx import AuthorityVote, SignedTx, sign_tx
from iomtnode.store import BlockStore

from ..core.helpers import CHAIN_ID, key, pub

T0 = 1_700_000_000_000


def vote(voter: str, subject: str) -> SignedTx:
    return sign_tx(AuthorityVote(pub(voter), pub(subject), True, 0), key(voter), CHAIN_ID)


class Net:
    def __init__(self, store: BlockStore, names: str) -> None:
        self.chain = Chain(store, Genesis(CHAIN_ID, T0, tuple(pub(n) for n in names), 1))

    def seal(self, txs: list[SignedTx], signers: str) -> BuiltBlock:
        """Commit a block of ``txs`` certified by ``signers`` (the next block carries that
        certificate); the built block says which transactions the rules refused."""
        chain = self.chain
        built = chain.build(txs, chain.next_authorities()[0], T0 + 1000 * (chain.height + 1))
        chain.commit(built, sign_commit([key(n) for n in signers], CHAIN_ID,
                                        built.block.height, 0, built.block.hash))
        return built

    def online(self) -> set[str]:
        state = self.chain.state()
        return {n for n in "ABCDEF" if pub(n) in state.online(self.chain.height + 1)}


@pytest.fixture
def tmp_store(tmp_path) -> Iterator[BlockStore]:
    with BlockStore.open(tmp_path / "db") as store:
        yield store


def test_a_new_authority_is_online_from_its_first_precommit_not_from_joining(tmp_store):
    net = Net(tmp_store, "ABCD")
    net.seal([vote(n, "E") for n in "ABC"], "ABCD")  # 1: E passes, joins at 3
    net.seal([], "ABCD")  # 2
    net.seal([], "ABCD")  # 3: E is an authority, certifies nothing
    net.seal([], "ABCD")  # 4: carries 3's certificate, without E
    assert pub("E") in net.chain.authorities()
    assert net.online() == set("ABCD")
    net.seal([], "ABCE")  # 5: E signs 5
    net.seal([], "ABCD")  # 6: carries 5's certificate, with E
    assert net.online() == set("ABCDE")


def test_two_quick_additions_of_keys_that_never_run_are_refused_at_the_second(tmp_store):
    """N=4 adds E (N=5 needs 4: A-D sign), then F while E has not signed: N=6 would need
    5 precommits and only A-D would sign, so the vote that would pass is refused."""
    net = Net(tmp_store, "ABCD")
    assert not net.seal([vote(n, "E") for n in "ABC"], "ABCD").rejected  # joins at 3
    for _ in range(3):
        net.seal([], "ABCD")
    built = net.seal([vote(n, "F") for n in "ABC"], "ABCD")
    assert [tx.id for tx, _ in built.rejected] == [vote("C", "F").id]
    error = built.rejected[0][1]
    assert isinstance(error, GovernanceError)
    assert "has not certified a block yet" in str(error)
    # once E signs, F is the one unproven newcomer, and its addition passes
    net.seal([], "ABCE")
    assert not net.seal([vote("C", "F")], "ABCD").rejected


def test_a_second_addition_is_refused_while_the_first_is_still_scheduled(tmp_store):
    net = Net(tmp_store, "ABCD")
    net.seal([vote(n, "E") for n in "ABC"], "ABCD")  # 1: E due at 3
    built = net.seal([vote(n, "F") for n in "ABC"], "ABCD")  # 2: E not joined yet
    assert [tx.id for tx, _ in built.rejected] == [vote("C", "F").id]


def test_one_authority_votes_in_a_second_on_the_new_ones_promise(tmp_store):
    """The ledger cannot see a node before it joins: the one being added counts as online
    (here 2 of 2 needed, A and the newcomer B)."""
    net = Net(tmp_store, "A")
    assert not net.seal([vote("A", "B")], "A").rejected
    net.seal([], "A")
    assert net.chain.next_authorities() == (pub("A"), pub("B"))
