"""A one-authority chain on real LevelDB with admitted devices, for admission and sync tests."""

from __future__ import annotations

from pathlib import Path

from iomtnode.admission.gossip import TxGossip
from iomtnode.admission.inbox import Inbox
from iomtnode.admission.mempool import Mempool
from iomtnode.admission.service import Admission
from iomtnode.chain.chain import Chain
from iomtnode.chain.feed import BlockFeed
from iomtnode.core import codec
from iomtnode.core.block import Block, Commit, make_block, sign_commit
from iomtnode.core.genesis import Genesis
from iomtnode.core.tx import SignedTx, decode_tx
from iomtnode.metrics import LatencyWindow
from iomtnode.store import BlockStore

from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import admit, announce, sealed_reading
from .fakes import FakeHost

T0 = 1_700_000_000_000
GENESIS = Genesis(CHAIN_ID, T0, (pub("A"),), 1)
DEVICES = ("d1", "d2", "d3")
FIRST_BLOCK_TXS = len(DEVICES) + 1  # block 1 of a source chain: the admissions and P's epoch


def reading(device: str, seq: int) -> SignedTx:
    """A sealed reading of ``device`` (its sidecar beside it) to stream P's epoch 1."""
    return sealed_reading(key(device), seq, T0 + seq, CHAIN_ID)


def forged(tx: SignedTx) -> SignedTx:
    """The same body (so the same id) with a signature that does not verify."""
    parts = [tx.body_bytes, bytes(64), tx.sidecar] if tx.sidecar else [tx.body_bytes, bytes(64)]
    return decode_tx(codec.encode(parts), complete=True)


def seal(chain: Chain, txs: list[SignedTx]) -> tuple[Block, Commit]:
    """Build, certify and commit the next block of ``chain`` from ``txs``."""
    built = chain.build(txs, pub("A"), T0 + 1000 * (chain.height + 1))
    assert not built.rejected, built.rejected
    commit = sign_commit([key("A")], CHAIN_ID, built.block.height, 0, built.block.hash)
    chain.commit(built, commit)
    return built.block, commit


def seal_unchecked(chain: Chain, txs: tuple[SignedTx, ...]) -> tuple[Block, Commit]:
    """A certified next block of ``chain`` holding ``txs`` as they are (not committed)."""
    head = chain.head
    block = make_block(height=head.height + 1, time_ms=head.header.time_ms + 1000,
                       parent=head.hash, proposer=pub("A"), txs=txs,
                       authorities=(pub("A"),), last_commit=chain.commit_at(head.height),
                       next_authorities=(pub("A"),))
    return block, sign_commit([key("A")], CHAIN_ID, block.height, 0, block.hash)


def new_chain(path: Path) -> Chain:
    return Chain(BlockStore.open(path), GENESIS)


def source_chain(path: Path, blocks: int, per_block: int
                 ) -> tuple[Chain, list[tuple[Block, Commit]]]:
    """A chain whose block 1 admits the devices to stream P and announces P's epoch 1,
    then ``blocks`` blocks of readings."""
    chain = new_chain(path)
    made = [seal(chain, [*(admit(key("A"), pub(d), pub("P"), CHAIN_ID) for d in DEVICES),
                         announce(key("P"), CHAIN_ID)])]
    seq = 0
    for _ in range(blocks):
        txs = []
        for i in range(per_block):
            if i % len(DEVICES) == 0:
                seq += 1
            txs.append(reading(DEVICES[i % len(DEVICES)], seq))
        made.append(seal(chain, txs))
    return chain, made


def admission_of(mempool: Mempool) -> Admission:
    """The admission service around ``mempool``, with no peers (not started)."""
    inbox = Inbox()
    return Admission(mempool, inbox, TxGossip(FakeHost([]), inbox, mempool.get),
                     BlockFeed(0), now_ms=lambda: T0 + 60_000,
                     gossip_delay=LatencyWindow(), delivery_delay=LatencyWindow())
