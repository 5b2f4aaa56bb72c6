"""Compact proposals: a proposed block travels without its transactions' bytes.

A :class:`~.messages.ConsensusProposal` carries the signed proposal, the header of the block
it names, the ids of the block's transactions and the parent's certificate
(:func:`compact_proposal`). The receiver checks the parts (:func:`check_compact`) and has the
block assembled by :class:`~iomtnode.admission.assembly.Assembler` (filled from the mempool,
waited for from the admission inbox, the rest fetched by index from the peers that sent the
proposal); then it is checked like any proposed block. A node that holds a proposed block
(its proposer, every node that checked it) serves its transactions
(:meth:`~.driver.Driver.held_txs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..admission.messages import GetBlockTxs
from ..core.block import ZERO_HASH, Block, Commit, Header
from ..core.crypto import blake2b256
from .messages import ConsensusProposal, ConsensusVote
from .votes import Proposal


class FetchNetwork(Protocol):
    """What fetching and relaying need of the p2p layer."""

    def broadcast_consensus(self, msg: ConsensusProposal | ConsensusVote,
                            exclude: frozenset[bytes] = frozenset(),
                            only: frozenset[bytes] | None = None) -> None:
        """Send ``msg`` to every peer not in ``exclude`` (and in ``only``, if given)."""
        ...

    def send_consensus(self, peer_id: bytes, msg: GetBlockTxs) -> bool: ...

    def penalize_peer(self, peer_id: bytes, points: int, reason: str) -> None: ...

    def peer_committed(self, peer_id: bytes, height: int) -> None:
        """``peer_id`` sent a valid message of ``height + 1``: it holds block ``height``."""
        ...


def compact_proposal(signed: bytes, block: Block) -> ConsensusProposal:
    """The message for the signed proposal ``signed`` of ``block``."""
    return ConsensusProposal(signed, block.header_bytes, [tx.id for tx in block.txs],
                             block.last_commit.encode() if block.last_commit else b"")


def check_compact(msg: ConsensusProposal, header: Header, last_commit: Commit | None,
                  block_hash: bytes) -> str | None:
    """What is wrong with a compact proposal's parts, if anything (the transactions'
    root is checked once they are at hand)."""
    if blake2b256(msg.header) != block_hash:
        return "the block is not the one signed"
    if header.tx_count != len(msg.tx_ids):
        return f"header says {header.tx_count} txs, {len(msg.tx_ids)} ids"
    last_hash = last_commit.hash if last_commit is not None else ZERO_HASH
    if last_hash != header.last_commit_hash or (
            last_commit is not None and last_commit.height != header.height - 1):
        return "the parent certificate is not the header's"
    return None


@dataclass(frozen=True, slots=True)
class Waiting:
    """A proposal whose signature and header passed, waiting for its block."""

    peer_id: bytes  # the peer it came from
    msg: ConsensusProposal
    proposal: Proposal
    key: bytes  # hash of the signed proposal (the inbound seen-cache key)

    @property
    def height(self) -> int:
        return self.proposal.height
