"""Two mempool rules: the bound on pending transactions (a full pool refuses with
MempoolFullError, code 1020, on every way in), and a pending transaction of an authority
whose removal takes effect being dropped at the block where it does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from iomtnode.admission.batch import admit_chunk
from iomtnode.admission.mempool import Mempool
from iomtnode.chain.chain import Chain
from iomtnode.core import errors as e
from iomtnode.core.block import Block, sign_commit
from iomtnode.core.genesis import Genesis
from iomtnode.core.tx import AuthorityVote, SignedTx, TxBody, sign_tx
from iomtnode.store import BlockStore

from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import admit
from .chainkit import GENESIS, T0, admission_of, reading, seal, source_chain

NOW_MS = GENESIS.time_ms + 10_000


@pytest.fixture
def chain(tmp_path) -> Iterator[Chain]:
    chain, _ = source_chain(tmp_path / "data", 0, 0)  # d1, d2, d3 admitted in block 1
    yield chain
    chain.store.close()


# the bound --------------------------------------------------------------------------------


def test_the_error_is_code_1020() -> None:
    assert e.MempoolFullError.code == 1020 and issubclass(e.MempoolFullError, e.RuleError)


def test_a_full_mempool_refuses_on_every_way_in(chain: Chain) -> None:
    pool = Mempool(chain, now_ms=lambda: NOW_MS, max_txs=3)
    for seq in (1, 2):
        pool.add(reading("d1", seq).raw)
    pool.add_tx(reading("d1", 3))  # the third fits: the bound is max_txs, not less
    assert len(pool) == 3
    fourth = reading("d1", 4)
    for way_in in (lambda: pool.add(fourth.raw), lambda: pool.add_tx(fourth),
                   lambda: pool.precheck(fourth),
                   lambda: pool.add_tx(fourth, prechecked=True),
                   lambda: pool.add(b"\x01 not a transaction")):  # refused before decoding
        with pytest.raises(e.MempoolFullError, match="mempool holds 3 transactions") as info:
            way_in()
        assert info.value.code == 1020
    assert len(pool) == 3 and fourth.id not in pool


def test_a_commit_makes_room_again(chain: Chain) -> None:
    pool = Mempool(chain, now_ms=lambda: NOW_MS, max_txs=2)
    txs = [reading("d2", seq) for seq in (1, 2)]
    for tx in txs:
        pool.add_tx(tx)
    with pytest.raises(e.MempoolFullError):
        pool.add_tx(reading("d2", 3))
    block, _ = seal(chain, txs[:1])
    pool.blocks_committed([block])
    pool.add_tx(reading("d2", 3))
    assert pool.pending(10) == [txs[1], reading("d2", 3)]


async def test_a_batch_beyond_the_bound_admits_up_to_it(chain: Chain, nursery) -> None:
    """Every transaction of a chunk passes the pre-check while the pool is empty; the
    bound is checked again as each one is added."""
    pool = Mempool(chain, now_ms=lambda: NOW_MS, max_txs=3)
    txs = [reading("d3", seq) for seq in range(1, 6)]
    results = await admit_chunk(pool, txs)
    assert results[:3] == txs[:3]
    assert [type(r) for r in results[3:]] == [e.MempoolFullError] * 2
    assert len(pool) == 3
    admission = admission_of(pool)
    await nursery.start(admission.run)
    raw = await admission.submit_many([reading("d3", 6).raw])
    assert [type(r) for r in raw] == [e.MempoolFullError]
    with pytest.raises(e.MempoolFullError):
        await admission.submit(reading("d3", 7).raw)


# an authority removed ---------------------------------------------------------------------

ABCD = Genesis(CHAIN_ID, T0, tuple(pub(n) for n in "ABCD"), 1)


def signed(signer: str, body: TxBody) -> SignedTx:
    return sign_tx(body, key(signer), CHAIN_ID)


def admission(authority: str, device: str) -> SignedTx:
    return admit(key(authority), pub(device), pub("P"), CHAIN_ID)


def commit_next(chain: Chain, txs: list[SignedTx]) -> Block:
    built = chain.build(txs, chain.next_authorities()[0], T0 + 1000 * (chain.height + 1))
    assert not built.rejected, built.rejected
    chain.commit(built, sign_commit([key(n) for n in "BCD"], CHAIN_ID, built.block.height, 0,
                                    built.block.hash))
    return built.block


def test_a_removed_authoritys_pending_tx_is_dropped_where_the_removal_takes_effect(
        tmp_path) -> None:
    """A's admission of a device waits in the pool while B, C and D vote A out (in block 1:
    A leaves at height 3). Block 2 is empty, so the pool's head is what it was (the cheap
    path that skips the re-check), but from height 3 A is no authority: its transaction is
    dropped then, not before; B's stays."""
    with BlockStore.open(tmp_path / "data") as store:
        chain = Chain(store, ABCD)
        pool = Mempool(chain, now_ms=lambda: NOW_MS)
        by_a, by_b = admission("A", "dev1"), admission("B", "dev2")
        pool.add_tx(by_a)
        pool.add_tx(by_b)
        votes = [signed(n, AuthorityVote(pub(n), pub("A"), False, 0)) for n in "BCD"]
        pool.blocks_committed([commit_next(chain, votes)])  # 1: A's removal, due at 3
        assert pub("A") in chain.next_authorities()
        assert pool.pending(10) == [by_a, by_b]  # height 2: A still signs as an authority
        pool.blocks_committed([commit_next(chain, [])])  # 2
        assert pub("A") not in chain.next_authorities()
        assert pool.pending(10) == [by_b]
        # what the pool saw: at height 3, A's transaction breaks a rule
        rejected = chain.build([by_a, by_b], pub("B"), T0 + 3000).rejected
        assert [(tx, type(err)) for tx, err in rejected] == [(by_a, e.NotAuthorityError)]
