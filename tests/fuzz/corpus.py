"""Valid samples of every signed object and message kind a peer or client sends, made with
keys derived from names (deterministic): the seeds that structure-aware fuzzing mutates."""

from __future__ import annotations

from functools import cache
from typing import Any

from iomtnode.admission.messages import BlockTxs, GetBlockTxs, TxAnnounce, TxRequest, Txs
from iomtnode.consensus.messages import ConsensusProposal, ConsensusVote
from iomtnode.consensus.votes import sign_proposal
from iomtnode.core.block import Block, make_block, sign_commit
from iomtnode.core.crypto import blake2b256
from iomtnode.core.evidence import make_evidence
from iomtnode.core.fields import U64_MAX
from iomtnode.core.payload import commitment, wrap_hash
from iomtnode.core.tx import (
    HISTORY,
    AdmitDevice,
    AuditAnchor,
    AuthorityVote,
    DeviceMaintenance,
    Erase,
    Grant,
    Reading,
    ReportEvidence,
    RevokeDevice,
    RevokeGrant,
    RotateDeviceKey,
    SignedTx,
    sign_tx,
    stripped,
)
from iomtnode.core.vote import VoteType, sign_vote
from iomtnode.p2p.handshake import make_auth, make_hello
from iomtnode.p2p.messages import GetPeers, PeerRecords, Ping, Pong
from iomtnode.p2p.records import sign_record
from iomtnode.sync.messages import Blocks, CompactBlock, GetBlocks, Status

from ..core.helpers import CHAIN_ID, key, pub
from ..core.sealkit import PROFILE, announce, sealed_reading, sidecar_for, wrap_for

T0 = 1_700_000_000_000


BINDING = b"\x07" * 32  # the channel binding of the connection the handshake is on


GRANTEES = [pub(f"G{i}") for i in range(3)]  # wraps of over 255 bytes: a bin 16 sidecar


@cache
def txs() -> tuple[SignedTx, ...]:
    """One signed transaction of every kind, each with its sidecar beside it if its kind has
    one (``[body, signature, sidecar]``), and a reading without it (as a block may carry it)
    and one of a size class whose payload is off the envelope."""
    a, b = (sign_vote(key("A"), CHAIN_ID, VoteType.PREVOTE, 1, 0, bytes([x]) * 32)
            for x in (1, 2))
    strip = sidecar_for(pub("hr1"), 3, size_class=1)
    wraps = announce(key("P"), CHAIN_ID, 2, grantees=GRANTEES)  # for the revocation's body
    epoch = wraps.body
    bodies: list[tuple[str, Any, bytes]] = [
        ("hr1", Reading(pub("hr1"), 3, T0, 1, 1, commitment(strip)), b""),
        ("A", AdmitDevice(pub("A"), pub("hr1"), pub("P"), PROFILE), b""),
        ("A", RevokeDevice(pub("A"), pub("hr1"), "lost", 1), b""),
        ("hr1", RotateDeviceKey(pub("hr1"), pub("hr2")), b""),
        ("A", DeviceMaintenance(pub("A"), pub("hr1"), "calibration", b"\x05" * 256, T0), b""),
        ("A", AuthorityVote(pub("A"), pub("B"), True, 0), b""),
        ("P", Grant(pub("P"), pub("G"), blake2b256(b"box"), T0 + 10**9, 1, HISTORY,
                    wrap_hash(wrap_for(pub("G"))), 0), wrap_for(pub("G"))),
        ("P", RevokeGrant(pub("P"), pub("H"), 1, 2, epoch.public, epoch.grantees,
                          epoch.wraps_hash), wraps.sidecar),
        ("A", ReportEvidence(pub("A"), make_evidence(a, b).encode()), b""),
        ("A", Erase(pub("A"), pub("P"), 0, U64_MAX, blake2b256(b"request"), 0), b""),
        ("A", AuditAnchor(pub("A"), pub("N1"), 0, 1000, blake2b256(b"root")), b""),
    ]
    sealed = sealed_reading(key("hr1"), 1, T0, CHAIN_ID)
    return (sealed, stripped(sealed_reading(key("hr1"), 2, T0, CHAIN_ID)),
            *(sign_tx(body, key(signer), CHAIN_ID, side) for signer, body, side in bodies),
            announce(key("P"), CHAIN_ID, 3, grantees=GRANTEES))


def tx_of(kind_name: str) -> SignedTx:
    """The first sample of ``kind_name`` ("reading", "grant", ...)."""
    return next(tx for tx in txs() if tx.kind_name == kind_name)


@cache
def blocks() -> tuple[Block, Block]:
    """Block 1 (no parent certificate) and block 2 (with block 1's) holding every kind."""
    first = make_block(height=1, time_ms=T0 + 1000, parent=bytes(32), proposer=pub("A"),
                       txs=txs()[:3], authorities=(pub("A"),), last_commit=None)
    commit = sign_commit([key("A")], CHAIN_ID, 1, 0, first.hash)
    second = make_block(height=2, time_ms=T0 + 2000, parent=first.hash, proposer=pub("A"),
                        txs=txs(), authorities=(pub("A"),), last_commit=commit)
    return first, second


@cache
def messages() -> tuple[Any, ...]:
    """A valid message of every kind (at least one each)."""
    first, second = blocks()
    commit1 = sign_commit([key("A")], CHAIN_ID, 1, 0, first.hash)
    commit2 = sign_commit([key("A"), key("B")], CHAIN_ID, 2, 1, second.hash)
    record = sign_record(key("N1"), ("10.0.0.1:7546", "node.example:7546"), 3, T0, CHAIN_ID)
    ours = make_hello(key("N1"), CHAIN_ID, bytes(32), 2, second.hash, nonce=b"\x01" * 32)
    theirs = make_hello(key("N2"), CHAIN_ID, bytes(32), 1, first.hash, nonce=b"\x02" * 32)
    proposal = sign_proposal(key("A"), CHAIN_ID, 2, 1, second.hash, 0)
    vote = sign_vote(key("B"), CHAIN_ID, VoteType.PRECOMMIT, 2, 1, second.hash)
    raws = [tx.raw for tx in txs()]
    ids = [tx.id for tx in txs()]
    return (
        ours, make_auth(key("N1"), CHAIN_ID, ours, theirs, BINDING, True, "10.0.0.2:40000",
                        record.raw),
        Ping(7), Pong(7), PeerRecords([record.raw]), GetPeers(),
        Txs(raws), TxAnnounce(ids), TxRequest(ids[:3]),
        GetBlockTxs(second.hash, [0, 2, 5]), BlockTxs(second.hash, [0, 1], raws[:2]),
        Status(2, second.hash), GetBlocks(1, 64),
        Blocks(1, [[first.encode(), commit1.encode()], [second.encode(), commit2.encode()]]),
        CompactBlock(second.header_bytes, ids, commit1.encode(), commit2.encode()),
        ConsensusProposal(proposal.wire, second.header_bytes, ids, commit1.encode()),
        ConsensusVote(vote.raw),
    )
