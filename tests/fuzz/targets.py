"""The fuzz targets over what peers send: a frame through the one decode point
(:func:`~iomtnode.p2p.messages.decode_message`), then through the decoding its layer does
of what it carries (transactions, blocks, certificates, headers, votes, proposals, peer
records, the handshake's checks), exactly as the reactors call them.

A target passes an input when it decodes or raises one of the documented decode errors;
any other exception is a crash. Each message kind has a structure-aware target (its valid
samples from :mod:`.corpus`, mutated) besides the targets of arbitrary bytes and values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import strategies as st

from iomtnode.admission.messages import BlockTxs, Txs
from iomtnode.consensus.messages import ConsensusProposal, ConsensusVote
from iomtnode.consensus.votes import decode_proposal
from iomtnode.core.block import MalformedBlockError, decode_block, decode_commit, decode_header
from iomtnode.core.evidence import MalformedEvidenceError, decode_evidence
from iomtnode.core.tx import MalformedTxError, decode_tx, leaf_of
from iomtnode.core.vote import MalformedVoteError, decode_vote
from iomtnode.p2p.handshake import HandshakeError, check_auth, check_hello, make_hello
from iomtnode.p2p.messages import (
    MESSAGE_TYPES,
    Auth,
    Hello,
    PeerRecords,
    ProtocolError,
    decode_message,
    encode_message,
)
from iomtnode.p2p.records import RecordError, decode_record
from iomtnode.sync.messages import Blocks, CompactBlock

from ..core.helpers import CHAIN_ID, key
from . import corpus
from .mutate import mutated_bytes, mutated_encoding, pack, values

# every error a decoder of peer input documents; anything else is a crash
DECODE_ERRORS: tuple[type[Exception], ...] = (
    ProtocolError, RecordError, HandshakeError, MalformedTxError, MalformedBlockError,
    MalformedVoteError, MalformedEvidenceError,
)


@dataclass(frozen=True)
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    run: Callable[[Any], None]  # raises only ``errors`` on bad input
    errors: tuple[type[Exception], ...] = DECODE_ERRORS


BINDING = corpus.BINDING
_OURS = make_hello(key("N2"), corpus.CHAIN_ID, bytes(32), 1, bytes(32), nonce=b"\x02" * 32)


def carried(msg: Any) -> None:
    """Decode what ``msg`` carries, as the layer that handles its kind does."""
    match msg:
        case Hello():
            check_hello(msg, _OURS, BINDING)
        case Auth():
            decode_record(msg.record, CHAIN_ID)
            check_auth(msg, _OURS, make_hello(key("N1"), CHAIN_ID, bytes(32), 2, bytes(32),
                                              nonce=b"\x01" * 32), BINDING, False)
        case PeerRecords():
            for raw in msg.records:
                decode_record(raw, CHAIN_ID)
        case Txs() | BlockTxs():
            for raw in msg.txs:  # gossip is complete; a block's transactions may be stripped
                tx = decode_tx(raw, complete=type(msg) is Txs)
                if tx.kind_name == "evidence":
                    decode_evidence(tx.body.evidence)
        case Blocks():
            for block, commit in msg.blocks:
                decode_block(block)
                decode_commit(commit)
        case CompactBlock():
            decode_header(msg.header)
            if msg.last_commit:
                decode_commit(msg.last_commit)
            decode_commit(msg.commit)
        case ConsensusProposal():
            decode_proposal(msg.proposal)
            decode_header(msg.header)
            if msg.last_commit:
                decode_commit(msg.last_commit)
        case ConsensusVote():
            decode_vote(msg.vote)


def frame(raw: bytes) -> None:
    """A peer's frame, end to end: the envelope, then what it carries."""
    carried(decode_message(raw))


def _samples(kind: int) -> list[Any]:
    """The valid samples of ``kind`` as msgpack trees (the envelope's array)."""
    return [msgpack.unpackb(encode_message(m), raw=False) for m in corpus.messages()
            if kind == m.KIND]


def p2p_targets() -> list[Target]:
    every = [encode_message(m) for m in corpus.messages()]
    out = [
        Target("p2p.frame.bytes", st.binary(max_size=512), frame),
        Target("p2p.frame.values", values.map(pack), frame),
        Target("p2p.frame.mutated-bytes", mutated_bytes(every), frame),
    ]
    for kind, cls in sorted(MESSAGE_TYPES.items()):
        out.append(Target(f"p2p.{cls.__name__}", mutated_encoding(_samples(kind)), frame))
    return out


def core_targets() -> list[Target]:
    """The signed objects on their own (a client's transaction, a stored block's parts)."""
    txs = [msgpack.unpackb(tx.raw, raw=False) for tx in corpus.txs()]
    blocks = [msgpack.unpackb(b.encode(), raw=False) for b in corpus.blocks()]
    return [
        Target("core.tx", mutated_encoding(txs), decode_tx),
        Target("core.tx.complete", mutated_encoding(txs), submitted),
        Target("core.leaf", mutated_encoding(txs) | mutated_bytes([tx.raw for tx in corpus.txs()]),
               leaf),
        Target("core.block", mutated_encoding(blocks), decode_block),
    ]


def submitted(raw: bytes) -> None:
    """A client's or a peer's transaction: its sidecar must be beside it."""
    decode_tx(raw, complete=True)


def leaf(raw: bytes) -> None:
    """The leaf of a transaction as a stored block's receipt takes it (without decoding the
    body) is the leaf of the decoded transaction, whenever the bytes decode."""
    try:
        tx = decode_tx(raw)
    except MalformedTxError:
        return
    if leaf_of(raw) != tx.leaf_bytes:
        raise AssertionError(f"leaf_of differs from the decoded leaf for {raw.hex()}")


def targets() -> list[Target]:
    return p2p_targets() + core_targets()
