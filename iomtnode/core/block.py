"""Block headers, blocks and commit certificates.

Wire forms (msgpack; each hashed part canonical)::

    header = [VERSION, height, time_ms, parent, proposer, tx_root, tx_count,
              authorities_hash, next_authorities_hash, last_commit_hash]
    commit = [height, round, block_hash, [[authority, signature], ...]]
    block  = [header_bytes, [tx_raw, ...], last_commit_bytes or b""]

A block's hash is the hash of its header bytes. The header commits to the transactions
(Merkle root of their leaves: the signed transactions without sidecars), to the authority
set that must certify it and the one that must certify the next block (so a verifier
that trusts one set can follow a change of authorities, see :mod:`iomtnode.core.receipt`),
and to its parent's commit certificate, which the block carries: so a chain of blocks
carries, for each block but the head, the proof that a quorum of authorities finalized it.
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field

from . import codec, merkle
from . import fields as f
from .crypto import HASH_BYTES, BadSignatureError, Domain, SigningKey, blake2b256
from .tx import MalformedTxError, SignedTx, decode_tx
from .vote import precommit_digest, verify_precommit

HEADER_VERSION = 2  # 2: next_authorities_hash
MAX_BLOCK_TXS = 10_000  # transactions in one block
# transaction ids or indexes in one peer message (a compact block's, an announcement, a
# request): a whole block's
MAX_IDS_PER_MESSAGE = MAX_BLOCK_TXS
MAX_BLOCK_BYTES = 3 * 1024 * 1024  # one encoded block; leaves room in a 4 MiB frame
ZERO_HASH = bytes(HASH_BYTES)
NO_PROPOSER = bytes(32)  # the genesis block has none


class MalformedBlockError(ValueError):
    """Bytes that do not decode to an internally consistent block, header or commit."""


class InvalidCommitError(ValueError):
    """A commit certificate that does not prove a quorum of the given authorities."""


def quorum(n_authorities: int) -> int:
    """Precommits needed for finality: floor(2N/3) + 1 (tolerates floor((N-1)/3) faults)."""
    return 2 * n_authorities // 3 + 1


def authorities_hash(authorities: tuple[bytes, ...]) -> bytes:
    return blake2b256(codec.encode(list(authorities)))


@dataclass(frozen=True, slots=True)
class Header:
    height: int
    time_ms: int
    parent: bytes
    proposer: bytes
    tx_root: bytes
    tx_count: int
    authorities_hash: bytes
    next_authorities_hash: bytes
    last_commit_hash: bytes

    CHECKS = (f.u64, f.u64, f.digest, f.key, f.digest, f.u64, f.digest, f.digest, f.digest)

    def encode(self) -> bytes:
        return codec.encode([
            HEADER_VERSION, self.height, self.time_ms, self.parent, self.proposer,
            self.tx_root, self.tx_count, self.authorities_hash, self.next_authorities_hash,
            self.last_commit_hash,
        ])


def decode_header(data: bytes) -> Header:
    try:
        value = f.record("header", codec.decode(data, max_bytes=1024), 10)
        if type(value[0]) is not int or value[0] != HEADER_VERSION:  # True == 1 in Python
            raise f.FieldError(f"header version {value[0]!r} is not {HEADER_VERSION}")
        names = ("height", "time_ms", "parent", "proposer", "tx_root", "tx_count",
                 "authorities_hash", "next_authorities_hash", "last_commit_hash")
        for check, name, item in zip(Header.CHECKS, names, value[1:], strict=True):
            check(f"header.{name}", item)
    except (codec.DecodeError, f.FieldError) as exc:
        raise MalformedBlockError(str(exc)) from None
    return Header(*value[1:])


@dataclass(frozen=True, slots=True)
class Commit:
    """A certificate: precommit signatures of ``block_hash`` at ``height`` and ``round``.

    ``signatures`` are (authority key, signature) pairs, sorted by key, one per key.
    ``raw`` is the canonical wire form: the bytes :func:`decode_commit` decoded, else
    encoded once on construction; the hash, blocks, receipts and the store use it, so a
    certificate is never encoded again.
    """

    height: int
    round: int
    block_hash: bytes
    signatures: tuple[tuple[bytes, bytes], ...]
    raw: bytes = field(init=False, repr=False, compare=False)
    wire: InitVar[bytes] = b""  # the bytes it was decoded from; made from the fields if empty
    # (authorities, chain id) this very object last verified under: a syncing node checks a
    # block's certificate as it decodes the block, and the chain's check then costs nothing
    _verified_for: tuple[tuple[bytes, ...], str] | None = field(
        default=None, init=False, repr=False, compare=False)

    def __post_init__(self, wire: bytes) -> None:
        object.__setattr__(self, "raw", wire or codec.encode(
            [self.height, self.round, self.block_hash, [list(s) for s in self.signatures]]))

    def encode(self) -> bytes:
        """The canonical wire form (:attr:`raw`)."""
        return self.raw

    @property
    def hash(self) -> bytes:
        return blake2b256(self.raw)

    def verify(self, authorities: tuple[bytes, ...], chain_id: str) -> None:
        """Raise :class:`InvalidCommitError` unless a quorum of ``authorities`` signed it
        (a pass is remembered: the same object under the same set is not checked again)."""
        if self._verified_for == (tuple(authorities), chain_id):
            return
        members = set(authorities)
        digest = precommit_digest(self.height, self.round, self.block_hash)
        seen: set[bytes] = set()
        for authority, signature in self.signatures:
            if authority in seen:
                raise InvalidCommitError(f"authority {authority.hex()[:16]} signed twice")
            if authority not in members:
                raise InvalidCommitError(f"{authority.hex()[:16]} is not an authority")
            try:
                verify_precommit(authority, chain_id, digest, signature)
            except BadSignatureError:
                raise InvalidCommitError(
                    f"bad precommit signature from {authority.hex()[:16]}"
                ) from None
            seen.add(authority)
        need = quorum(len(authorities))
        if len(seen) < need:
            raise InvalidCommitError(
                f"{len(seen)} of {len(authorities)} authorities signed; {need} needed"
            )
        object.__setattr__(self, "_verified_for", (tuple(authorities), chain_id))


def sign_commit(
    keys: list[SigningKey], chain_id: str, height: int, round_: int, block_hash: bytes
) -> Commit:
    """A commit certificate signed by each of ``keys`` (for a local sealer and tests)."""
    digest = precommit_digest(height, round_, block_hash)
    sigs = sorted((k.public, k.sign(Domain.PRECOMMIT, chain_id, digest)) for k in keys)
    return Commit(height, round_, block_hash, tuple(sigs))


def decode_commit(data: bytes, *, max_signers: int = 1024) -> Commit:
    try:
        value = f.record("commit", codec.decode(data), 4)
        f.u64("commit.height", value[0])
        f.u64("commit.round", value[1])
        f.digest("commit.block_hash", value[2])
        if type(value[3]) is not list or len(value[3]) > max_signers:
            raise f.FieldError(f"commit.signatures must be an array of at most {max_signers}")
        sigs = []
        for item in value[3]:
            pair = f.record("commit signature", item, 2)
            sigs.append((f.key("commit.authority", pair[0]),
                         f.signature("commit.signature", pair[1])))
        if sigs != sorted(sigs) or len({k for k, _ in sigs}) != len(sigs):
            raise f.FieldError("commit signatures must be sorted by authority, one each")
    except (codec.DecodeError, f.FieldError) as exc:
        raise MalformedBlockError(str(exc)) from None
    return Commit(value[0], value[1], value[2], tuple(sigs), wire=bytes(data))


@dataclass(frozen=True, slots=True)
class Block:
    header: Header
    header_bytes: bytes
    txs: tuple[SignedTx, ...]
    last_commit: Commit | None

    @property
    def hash(self) -> bytes:
        return blake2b256(self.header_bytes)

    @property
    def height(self) -> int:
        return self.header.height

    def encode(self) -> bytes:
        commit = self.last_commit.encode() if self.last_commit else b""
        return codec.encode([self.header_bytes, [tx.raw for tx in self.txs], commit])


def make_block(
    *,
    height: int,
    time_ms: int,
    parent: bytes,
    proposer: bytes,
    txs: tuple[SignedTx, ...],
    authorities: tuple[bytes, ...],
    last_commit: Commit | None,
    next_authorities: tuple[bytes, ...] | None = None,
) -> Block:
    """Make a block; raises ValueError if it would be over :data:`MAX_BLOCK_BYTES` encoded.

    ``next_authorities`` (default: ``authorities``) must certify the next block."""
    size = sum(len(tx.raw) + 5 for tx in txs) + 2048 + (
        len(last_commit.encode()) if last_commit else 0)  # 5: a bin header; 2048: the rest
    if size > MAX_BLOCK_BYTES or len(txs) > MAX_BLOCK_TXS:
        raise ValueError(f"a block of {len(txs)} txs and ~{size} bytes is over the limits")
    header = Header(
        height=height,
        time_ms=time_ms,
        parent=parent,
        proposer=proposer,
        tx_root=merkle.root([tx.leaf_bytes for tx in txs]),
        tx_count=len(txs),
        authorities_hash=authorities_hash(authorities),
        next_authorities_hash=authorities_hash(
            authorities if next_authorities is None else next_authorities),
        last_commit_hash=last_commit.hash if last_commit else ZERO_HASH,
    )
    return Block(header, header.encode(), txs, last_commit)


def decode_block(data: bytes) -> Block:
    """Decode a block and check that its parts agree with its header.

    Checks the transaction count and Merkle root and the hash of the carried parent
    commit; does not check signatures or state rules (see the chain module for those).
    """
    header_bytes, raws, commit_bytes = split_block(data)
    header = decode_header(header_bytes)
    try:
        txs = tuple(decode_tx(raw) for raw in raws)
    except MalformedTxError as exc:
        raise MalformedBlockError(f"block {header.height}: {exc}") from None
    last_commit = decode_commit(commit_bytes) if commit_bytes else None
    _check_consistent(header, txs, last_commit)
    return Block(header, header_bytes, txs, last_commit)


def split_block(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    """An encoded block's header bytes, raw transactions and parent certificate bytes
    (empty if none), each checked for type and size but not decoded: a syncing node
    decodes the transactions in pieces in worker threads, then :func:`assemble_block`.

    The outer array is an envelope: nothing hashes it (the block hash is the header's,
    which commits to the transactions and the certificate), so only its structure is
    checked here; each part is checked for its canonical form where it is decoded."""
    if len(data) > MAX_BLOCK_BYTES:
        raise MalformedBlockError(f"block of {len(data)} bytes exceeds {MAX_BLOCK_BYTES}")
    try:
        value = f.record("block", codec.decode_envelope(data), 3)
        header_bytes = f.max_bytes(1024)("block.header", value[0])
        raws = value[1]
        if type(raws) is not list or len(raws) > MAX_BLOCK_TXS:
            raise f.FieldError(f"block.txs must be an array of at most {MAX_BLOCK_TXS}")
        if not all(type(raw) is bytes for raw in raws):
            raise f.FieldError("each block transaction must be a byte string")
        commit_bytes = f.max_bytes(codec.MAX_BIN_BYTES)("block.last_commit", value[2])
    except (codec.DecodeError, f.FieldError) as exc:
        raise MalformedBlockError(str(exc)) from None
    return header_bytes, raws, commit_bytes


def block_parts(data: bytes) -> tuple[bytes, list[bytes]]:
    """The header bytes and raw transactions of an encoded block, without decoding each
    transaction (for reading a block this node stored: receipts of large blocks)."""
    header_bytes, raws, _ = split_block(data)
    return header_bytes, raws


def assemble_block(header_bytes: bytes, txs: tuple[SignedTx, ...], last_commit: Commit | None
                   ) -> Block:
    """A block from a compact announcement's parts; same checks as :func:`decode_block`."""
    header = decode_header(header_bytes)
    _check_consistent(header, txs, last_commit)
    return Block(header, header_bytes, txs, last_commit)


def _check_consistent(header: Header, txs: tuple[SignedTx, ...], last: Commit | None) -> None:
    if header.tx_count != len(txs):
        raise MalformedBlockError(
            f"block {header.height}: header says {header.tx_count} txs, body has {len(txs)}"
        )
    if merkle.root([tx.leaf_bytes for tx in txs]) != header.tx_root:
        raise MalformedBlockError(f"block {header.height}: transactions do not match tx_root")
    last_hash = last.hash if last else ZERO_HASH
    if last_hash != header.last_commit_hash:
        raise MalformedBlockError(f"block {header.height}: last commit does not match header")
    if last is not None and last.height != header.height - 1:
        raise MalformedBlockError(
            f"block {header.height}: carries the commit of height {last.height}"
        )
