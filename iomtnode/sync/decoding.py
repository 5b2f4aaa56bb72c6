"""Decoding a served range of blocks while worker processes verify its signatures (each
piece handed on as soon as it is decoded), within a budget of decoded transactions held
(the memory of a catch-up).

Each block's certificate is checked before its transactions are decoded, against the
authorities known for its height when the range is decoded: a peer that answers with
made-up blocks costs the node a certificate's signatures, not its transactions'. Those
authorities are exact up to two heights past the head (a vote takes effect two blocks
after the block it passes in); further on, a change voted inside the ranges ahead is not
known yet, so a certificate that does not verify cuts the range there
(:class:`CertificateCut`) and the blocks from it are asked again once those before it are
applied."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence

import trio

from ..core.block import (
    Block,
    Commit,
    InvalidCommitError,
    MalformedBlockError,
    assemble_block,
    decode_commit,
    decode_header,
    split_block,
)
from ..core.crypto import blake2b256
from ..core.tx import MalformedTxError, SignedTx, decode_tx
from .messages import Blocks

VERIFY_PIECE = 1024  # transactions decoded, then handed to the verifier, at a time; a
# piece spans blocks (those of a quiet hour hold a few each, and a worker's call costs
# both sides about as much as a hundred signatures), so one holds 1,024 to 2,047
DECODED_TXS_AHEAD = 32_768  # decoded transactions not committed yet (~1 KB each in memory);
# a block is decoded beyond it only when nothing else is held

Decoded = tuple[list[tuple[Block, Commit]], Exception | None]  # blocks, why the rest did not
Preverify = Callable[[Sequence[SignedTx]], Awaitable[None]]
# the authorities known for a height now (the chain's state and the changes it schedules)
KnownAuthorities = Callable[[int], tuple[bytes, ...]]


class CertificateCut(Exception):
    """The certificate of block ``height`` did not verify under ``authorities``, the set
    known for it when its range was decoded: a forged block if that set is still the one
    of its height once the blocks before it are applied, else a change of authorities not
    known yet (the range is asked again from ``height``)."""

    def __init__(self, height: int, authorities: tuple[bytes, ...], why: str) -> None:
        super().__init__(f"block {height}: {why}")
        self.height = height
        self.authorities = authorities

    def forged(self, head: int, known: KnownAuthorities) -> bool:
        """Whether the block is forged: it is the next one after ``head`` (the blocks
        before it applied) and the authorities of its height are still those it failed."""
        return self.height == head + 1 and known(self.height) == self.authorities


class TxBudget:
    """Decoded transactions held until committed: at most ``limit``, except that one range
    alone may exceed it (its answer is bounded by the 4 MB message size). One taker (the
    decoding task), one giver (the committing one)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._freed = trio.Event()

    async def take(self, count: int, own: int = 0) -> None:
        """Take ``count`` for a block of a range that already holds ``own``: waits only
        for what other ranges hold (a range is handed on whole, so waiting for its own
        blocks would never end)."""
        while self.held > own and self.held + count > self.limit:
            self._freed = trio.Event()
            await self._freed.wait()
        self.held += count

    def give(self, count: int) -> None:
        self.held -= count
        self._freed.set()


async def decode_range(msg: Blocks, preverify: Preverify, verifying: trio.Nursery,
                       verified: trio.Event, certify: tuple[str, KnownAuthorities],
                       budget: TxBudget | None = None) -> Decoded:
    """The blocks of a range up to the first that does not decode, is not at its place
    (``msg.start`` and on, one by one) or whose certificate does not verify (and why),
    ``certify`` giving the chain id and the authorities known for a height. Each piece of
    at least :data:`VERIFY_PIECE` transactions (across blocks; the range's last piece may
    hold fewer) is handed to ``preverify`` (in ``verifying``) as soon as it is decoded;
    ``verified`` is set once every piece is verified. Each block's transactions are taken
    from ``budget`` before they are decoded; the caller gives back those of the blocks
    returned once it is done with them."""
    pieces, to_verify = trio.open_memory_channel[list[SignedTx]](math.inf)
    verifying.start_soon(_verify_pieces, preverify, to_verify, verified)
    blocks: list[tuple[Block, Commit]] = []
    fault: Exception | None = None
    taken = 0  # this range's own share of the budget so far
    chain_id, known = certify
    pending: list[SignedTx] = []  # decoded, not handed on yet
    async with pieces:
        for place, (block_raw, commit_raw) in enumerate(msg.blocks, msg.start):
            height, held = -1, 0
            try:
                header_bytes, raws, last_bytes = split_block(block_raw)
                height = decode_header(header_bytes).height
                if height != place:  # else a made-up certificate there would be no
                    # forgery (CertificateCut.forged: not the next height), at no cost
                    raise MalformedBlockError(f"block {height} served as block {place}")
                commit = decode_commit(commit_raw)
                fault = _certificate_fault(header_bytes, height, commit, chain_id, known)
                if fault is not None:
                    break
                if budget is not None:
                    await budget.take(len(raws), own=taken)
                    held = len(raws)
                    taken += held
                txs: list[SignedTx] = []
                for start in range(0, len(raws), VERIFY_PIECE):
                    chunk = [decode_tx(raw) for raw in raws[start:start + VERIFY_PIECE]]
                    txs.extend(chunk)
                    pending.extend(chunk)
                    if len(pending) >= VERIFY_PIECE:
                        pieces.send_nowait(pending)
                        pending = []
                    await trio.lowlevel.checkpoint()  # decoding a range takes a while
                last = decode_commit(last_bytes) if last_bytes else None
                blocks.append((assemble_block(header_bytes, tuple(txs), last), commit))
            except (MalformedTxError, MalformedBlockError) as exc:
                if budget is not None:
                    budget.give(held)  # not kept: only the blocks before it are
                fault = (MalformedBlockError(f"block {height}: {exc}")
                         if isinstance(exc, MalformedTxError) else exc)
                break
        if pending:  # the range's last piece
            pieces.send_nowait(pending)
    return blocks, fault


def _certificate_fault(header_bytes: bytes, height: int, commit: Commit, chain_id: str,
                       known: KnownAuthorities) -> Exception | None:
    """Why ``commit`` is not block ``height``'s certificate under the authorities known
    for it (None if it is; it then remembers that, and the chain's check costs nothing)."""
    if commit.height != height or commit.block_hash != blake2b256(header_bytes):
        return MalformedBlockError(f"block {height}: the certificate is for another block")
    authorities = known(height)
    try:
        commit.verify(authorities, chain_id)
    except InvalidCommitError as exc:
        return CertificateCut(height, authorities, str(exc))
    return None


async def _verify_pieces(preverify: Preverify,
                         pieces: trio.MemoryReceiveChannel[list[SignedTx]],
                         verified: trio.Event) -> None:
    async with trio.open_nursery() as nursery, pieces:
        async for piece in pieces:
            nursery.start_soon(preverify, piece)
    verified.set()
