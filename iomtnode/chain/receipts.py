"""Receipts of committed transactions, read from the store without decoding whole blocks;
a block's Merkle tree is built once while it is kept (:class:`~.trees.ReceiptTrees`)."""

from __future__ import annotations

from typing import Any, Protocol

import structlog

from ..core import merkle
from ..core.block import Commit, decode_header
from ..core.ledger import State
from ..core.receipt import Handoff, make_receipt
from ..core.tx import decode_tx, leaf_of
from ..store import BlockStore
from .trees import DamagedBlockError, ReceiptTrees

log = structlog.get_logger(__name__)


class Chain(Protocol):
    """What a receipt reads of :class:`~.chain.Chain`."""

    store: BlockStore
    receipt_trees: ReceiptTrees

    @property
    def chain_id(self) -> str: ...
    def commit_at(self, height: int) -> Commit | None: ...
    def block_parts_at(self, height: int) -> tuple[bytes, list[bytes]]: ...
    def state(self) -> State: ...


def receipt_of(chain: Chain, tx_id: bytes) -> dict[str, Any] | None:
    """A receipt for a committed transaction, or None if it is not (yet) committed."""
    location = chain.store.tx_location(tx_id)
    if location is None:
        return None
    height, index = location
    commit = chain.commit_at(height)
    if commit is None:  # pragma: no cover - committed blocks are sealed
        return None
    header_bytes, raws = chain.block_parts_at(height)  # one tx decoded: blocks hold 10,000
    header = decode_header(header_bytes)
    tree = chain.receipt_trees.tree(header_bytes, header, raws)  # built once per block
    leaf = leaf_of(raws[index])
    del raws
    if merkle.leaf_hash(leaf) != tree.leaf(index):  # the tree's root is the header's
        log.error("stored_block_damaged", height=height, index=index)
        raise DamagedBlockError(f"transaction {index} of the stored block {height} is not "
                                "the one its tree was built from")
    return make_receipt(chain.chain_id, decode_tx(leaf), header, header_bytes, commit,
                        merkle.prove_from_levels(tree, index), _handoffs_before(chain, height))


def _handoffs_before(chain: Chain, height: int) -> tuple[Handoff, ...]:
    """The authority-set changes a verifier must follow from genesis to ``height``."""
    handoffs = []
    for at, following in chain.state().handoffs():
        if at >= height:
            break
        commit = chain.commit_at(at)
        assert commit is not None, "every committed block is stored with its certificate"
        handoffs.append(Handoff(chain.block_parts_at(at)[0], commit, tuple(following)))
    return tuple(handoffs)
