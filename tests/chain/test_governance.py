"""Authority changes end to end on a real LevelDB chain: votes, handoff headers, receipts
that cross a change, a follower replaying the chain (as block sync does) against each
height's authority set, and evidence on the ledger.

Authorities are named A to E; every block is certified by the keys the test names.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest

from iomtnode.chain.chain import BuiltBlock, Chain, InvalidBlockError
from iomtnode.core.block import authorities_hash, make_block, sign_commit
from iomtnode.core.evidence import make_evidence
from iomtnode.core.genesis import Genesis
from iomtnode.core.receipt import ReceiptError, verify_receipt
from iomtnode.core.tx import (
    AuthorityVote,
    ReportEvidence,
    SignedTx,
    TxBody,
    sign_tx,
)
from iomtnode.core.vote import VoteType, sign_vote
from iomtnode.store import BlockStore

from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import admit, announce, sealed_reading

T0 = 1_700_000_000_000
GENESIS = Genesis(CHAIN_ID, T0, tuple(pub(n) for n in "ABCD"), 1)


def tx(signer: str, body: TxBody) -> SignedTx:
    return sign_tx(body, key(signer), CHAIN_ID)


def vote(voter: str, subject: str, add: bool) -> SignedTx:
    return tx(voter, AuthorityVote(pub(voter), pub(subject), add, 0))


class Net:
    """A chain the test drives, and every committed (block, certificate) for replay."""

    def __init__(self, store: BlockStore) -> None:
        self.chain = Chain(store, GENESIS)
        self.log: list[tuple[BuiltBlock, object]] = []

    def seal(self, txs: list[SignedTx], signers: str) -> BuiltBlock:
        chain = self.chain
        built = chain.build(txs, chain.next_authorities()[0], T0 + 1000 * (chain.height + 1))
        assert not built.rejected, built.rejected
        commit = sign_commit([key(n) for n in signers], CHAIN_ID, built.block.height, 0,
                             built.block.hash)
        chain.commit(built, commit)
        self.log.append((built, commit))
        return built


@pytest.fixture
def net(tmp_path) -> Iterator[Net]:
    with BlockStore.open(tmp_path / "leader") as store:
        yield Net(store)


def test_an_added_and_a_removed_authority_hand_off_and_receipts_follow(net: Net, tmp_path
                                                                        ) -> None:
    dev = admit(key("A"), pub("hr1"), pub("P"), CHAIN_ID)
    net.seal([dev, announce(key("P"), CHAIN_ID),
              vote("A", "E", True), vote("B", "E", True), vote("C", "E", True)],
             "ABCD")  # 1: E passes, joins at 3
    handoff = net.seal([], "ABC")  # 2: the last block of A-D; it names A-E as next
    assert handoff.block.header.next_authorities_hash == authorities_hash(
        tuple(pub(n) for n in "ABCDE"))
    assert handoff.block.header.authorities_hash == authorities_hash(GENESIS.authorities)
    assert net.chain.next_authorities() == tuple(pub(n) for n in "ABCDE")
    net.seal([], "BCDE")  # 3: 4 of 5 (A is down: the new quorum holds without it)
    net.seal([vote(n, "A", False) for n in "BCD"], "BCDE")  # 4: A's removal, due at 6
    reading = sealed_reading(key("hr1"), 1, T0, CHAIN_ID)
    net.seal([reading], "BCDE")  # 5
    net.seal([], "BCDE")  # 6: B-E
    late = sealed_reading(key("hr1"), 2, T0, CHAIN_ID)
    net.seal([late], "BCE")  # 7: 3 of 4
    assert net.chain.authorities() == tuple(pub(n) for n in "BCDE")

    one = net.chain.receipt(reading.id)
    assert one is not None and len(one["handoffs"]) == 1
    assert verify_receipt(one, GENESIS)[0].id == reading.id
    two = net.chain.receipt(late.id)
    assert two is not None and len(two["handoffs"]) == 2
    assert verify_receipt(two, GENESIS)[1].height == 7
    early = net.chain.receipt(dev.id)
    assert early is not None and early["handoffs"] == []
    verify_receipt(early, GENESIS)

    # a receipt that skips a handoff, reorders them, or lies about a set proves nothing
    for broken, match in [
        ({"handoffs": []}, "handoff is missing"),
        ({"handoffs": two["handoffs"][1:]}, "not certified by the set"),
        ({"handoffs": two["handoffs"][::-1]}, "not certified by the set"),
        ({"handoffs": [two["handoffs"][0]] * 2}, "out of order"),
    ]:
        with pytest.raises(ReceiptError, match=match):
            verify_receipt({**two, **broken}, GENESIS)
    lying = copy.deepcopy(two)
    lying["handoffs"][1]["next_authorities"] = [pub(n).hex() for n in "BCDX"]
    with pytest.raises(ReceiptError, match="another next authority set"):
        verify_receipt(lying, GENESIS)
    forged = copy.deepcopy(one)
    forged["handoffs"][0]["commit"] = two["handoffs"][0]["commit"][:-2] + "00"
    with pytest.raises(ReceiptError, match="handoff 0"):
        verify_receipt(forged, GENESIS)

    # a follower replaying the chain checks each certificate against its height's set
    with BlockStore.open(tmp_path / "follower") as store:
        follower = Chain(store, GENESIS)
        for built, commit in net.log:
            follower.commit(follower.check(built.block, commit), commit)
        assert follower.head.hash == net.chain.head.hash
        assert follower.receipt(late.id) == two


def test_a_follower_refuses_certificates_of_the_wrong_set(net: Net, tmp_path) -> None:
    net.seal([vote(n, "A", False) for n in "ABC"], "ABCD")  # 1: A leaves at 3
    net.seal([], "ABCD")  # 2
    built = net.chain.build([], pub("B"), T0 + 3000)
    with BlockStore.open(tmp_path / "follower") as store:
        follower = Chain(store, GENESIS)
        for b, commit in net.log:
            follower.commit(follower.check(b.block, commit), commit)
        # block 3 is certified by B, C, D; A no longer counts (its 4 signatures would
        # have been a quorum of the old set)
        by_old = sign_commit([key(n) for n in "ACD"], CHAIN_ID, 3, 0, built.block.hash)
        with pytest.raises(InvalidBlockError, match="not an authority"):
            follower.check(built.block, by_old)
        with pytest.raises(InvalidBlockError, match="2 of 3 authorities signed; 3 needed"):
            follower.check(built.block, sign_commit([key(n) for n in "BC"], CHAIN_ID, 3, 0,
                                                    built.block.hash))
        follower.check(built.block, sign_commit([key(n) for n in "BCD"], CHAIN_ID, 3, 0,
                                                built.block.hash))


def test_a_block_that_names_the_wrong_next_set_is_refused(net: Net, tmp_path) -> None:
    net.seal([vote(n, "E", True) for n in "ABC"], "ABCD")  # 1: E joins at 3
    honest = net.chain.build([], pub("C"), T0 + 2000)  # 2 names A-E as next
    parent = net.chain.commit_at(1)
    for wrong in (GENESIS.authorities, tuple(pub(n) for n in "ABCDX")):
        liar = make_block(height=2, time_ms=T0 + 2000, parent=net.chain.head.hash,
                          proposer=pub("C"), txs=(), authorities=GENESIS.authorities,
                          last_commit=parent, next_authorities=wrong)
        commit = sign_commit([key(n) for n in "ABCD"], CHAIN_ID, 2, 0, liar.hash)
        with pytest.raises(InvalidBlockError, match="another next authority set"):
            net.chain.check(liar, commit)
    net.chain.check(honest.block, sign_commit([key(n) for n in "ABC"], CHAIN_ID, 2, 0,
                                              honest.block.hash))


def test_evidence_goes_on_the_ledger_once(net: Net) -> None:
    a, b = (sign_vote(key("D"), CHAIN_ID, VoteType.PRECOMMIT, 1, 0, bytes([x]) * 32)
            for x in (7, 9))
    evidence = make_evidence(a, b).encode()
    net.seal([], "ABCD")  # 1
    report = tx("A", ReportEvidence(pub("A"), evidence))
    net.seal([report], "ABC")  # 2
    assert net.chain.evidence() == [{
        "authority": pub("D").hex(), "height": 1, "round": 0, "type": "precommit",
        "evidence_hash": make_evidence(a, b).hash.hex(), "included_at": 2,
        "reporter": pub("A").hex(),
    }]
    again = net.chain.build([tx("B", ReportEvidence(pub("B"), evidence))], pub("C"), T0 + 3000)
    assert [type(err).__name__ for _, err in again.rejected] == ["DuplicateEvidenceError"]
    assert net.chain.receipt(report.id) is not None


def test_online_records_come_from_the_certificates_blocks_carry(net: Net) -> None:
    for _ in range(3):
        net.seal([], "ABC")  # D never certifies
    state = net.chain.state()
    assert state.last_certified(pub("A")) == 2  # block 3 carries block 2's certificate
    assert state.last_certified(pub("D")) == 0  # genesis: counted online at the start
