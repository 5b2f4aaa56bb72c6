"""The blocks of the height being decided, and the consensus write-ahead record.

:class:`HeldBlocks` keeps the blocks of the driver's height that this node built or
checked (by hash, with the round they were proposed in; at most :data:`HELD_BLOCKS`, the
locked and valid values always among them).

The write-ahead record (DESIGN.md, "Restart safety"; as CometBFT's consensus WAL): before
this authority signs a proposal, prevote or precommit for a block, or records a block as
its locked or valid value, :meth:`HeldBlocks.make_durable` writes that block, synced, to
``HOME/consensus_wal`` (:data:`WAL_FILE`, beside ``signing_state`` and, like it, outside
``data/``: a resync that wipes the chain data keeps both a lock and its block). A restarted
driver at the same height takes the record's blocks back (:meth:`HeldBlocks.restore`,
each checked again as the next block), so a lock that survives a restart comes with its
block: after every authority locked on a block and then all stopped (a site power cut),
the proposers re-propose it and the height finalizes. Without the record, proposers whose
valid value is a block they no longer hold could never propose, and the locked ones
would refuse everything else.

Cost: one synced write per block a node signs for (not one per vote: a block already
durable is not written again). The record holds only what a restart needs, the blocks
being signed for and the locked and valid values, and the last write's blocks: the signing
state that names those is replaced only after the write, so a crash between the two still
finds them. Each write replaces the last: the file is a
:class:`~iomtnode.consensus.recordfile.RecordFile` (one ``fdatasync`` per write, no rename;
a crash in the middle of a write leaves the previous record), and a file of the older
format is rewritten in this one when first read.

Record format (canonical msgpack): ``[VERSION, height, [block, ...]]``, each block in
its wire encoding. A record that does not decode, or a damaged file, is logged
(``consensus_wal_unreadable``) and ignored: the signing state still prevents
double-signing; only the restart's liveness is at stake.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
import trio

from ..chain.chain import BuiltBlock, InvalidBlockError
from ..core import codec
from ..core.block import MalformedBlockError, decode_block
from ..core.vote import NIL
from .blocks import BlockMaker
from .signing import MetaStore, SigningStateError, SigningStateFile

log = structlog.get_logger(__name__)

HELD_BLOCKS = 16  # proposed blocks of this height kept; beyond, the oldest rounds go
WAL_FILE = "consensus_wal"  # in the home, beside signing_state, outside data/
META_WAL = "consensus_wal"  # its name in a MetaStore
WAL_VERSION = 1
MAX_WAL_BYTES = 64 * 1024 * 1024  # a few blocks at most (a block is at most a few MB)


class HeldBlocks:
    """The blocks of one height, by hash; ``wal`` (None: an observer, which signs
    nothing) keeps the write-ahead record (module doc)."""

    def __init__(self, wal: MetaStore | None, *, inline: bool = False) -> None:
        self._wal = wal
        self._inline = inline  # write the record on the trio thread even if it is a file
        self._recorded: tuple[int, list[bytes]] | None = None  # (height, encoded blocks)
        try:
            raw = wal.get_meta(META_WAL) if wal is not None else None
        except SigningStateError as exc:  # a damaged file: as a record that does not decode
            log.error("consensus_wal_unreadable", reason=str(exc))
            raw = None
        if raw:
            self._recorded = _decode(raw)
        self.reset(0)

    def reset(self, height: int) -> None:
        """Forget the blocks of the last height: ``height`` is being decided now."""
        self.height = height
        self._blocks: dict[bytes, tuple[int, BuiltBlock]] = {}  # hash -> (round, built)
        self._durable: frozenset[bytes] = frozenset()  # in the record now
        self._asked: frozenset[bytes] = frozenset()  # what the last write was asked for

    def __contains__(self, block_hash: bytes) -> bool:
        return block_hash in self._blocks

    def get(self, block_hash: bytes) -> BuiltBlock | None:
        held = self._blocks.get(block_hash)
        return None if held is None else held[1]

    def hold(self, round_: int, built: BuiltBlock, keep: Iterable[bytes]) -> None:
        """Hold ``built`` (proposed in ``round_``); beyond :data:`HELD_BLOCKS`, drop the
        oldest rounds' blocks except those in ``keep`` (the locked and valid values)."""
        self._blocks[built.block.hash] = (round_, built)
        keep = set(keep) | self._durable
        while len(self._blocks) > HELD_BLOCKS:
            evictable = [(r, h) for h, (r, _) in self._blocks.items() if h not in keep]
            if not evictable:
                return
            del self._blocks[min(evictable)[1]]

    async def make_durable(self, hashes: Iterable[bytes]) -> None:
        """Write the held blocks among ``hashes`` to the record (synced, in a worker thread)
        unless the record holds them already. NIL and blocks not held are skipped."""
        wanted = frozenset(h for h in hashes if h != NIL and h in self._blocks)
        if self._wal is None or wanted <= self._durable:
            return
        # the last write's blocks stay one write longer: the signing state that names
        # them (a lock, say) is replaced only after this write, and a crash in between
        # must still find them
        kept = wanted | (self._asked & self._blocks.keys())
        blocks = [self._blocks[h][1].block.encode() for h in sorted(kept)]
        raw = codec.encode([WAL_VERSION, self.height, blocks])
        if isinstance(self._wal, SigningStateFile) and not self._inline:
            await trio.to_thread.run_sync(self._wal.put_meta, META_WAL, raw)  # a synced write
        else:  # in memory, or inline: no thread, so a virtual clock never jumps over it
            self._wal.put_meta(META_WAL, raw)
        self._durable, self._asked = kept, wanted
        self._recorded = (self.height, blocks)

    async def restore(self, round_: int, blocks: BlockMaker) -> int:
        """Hold the recorded blocks of this height again, each checked as the next block
        (a restart at the height it signed at); returns how many."""
        if self._recorded is None or self._recorded[0] != self.height:
            return 0
        restored = 0
        hashes = []
        for raw in self._recorded[1]:
            try:
                built = await blocks.check_proposal(decode_block(raw))
            except (MalformedBlockError, InvalidBlockError) as exc:
                log.error("consensus_wal_block_refused", height=self.height, reason=str(exc))
                continue
            if built is not None:
                self._blocks[built.block.hash] = (round_, built)
                hashes.append(built.block.hash)
                restored += 1
        self._durable = frozenset(hashes)
        log.info("consensus_wal_restored", height=self.height, blocks=restored)
        return restored


def _decode(raw: bytes) -> tuple[int, list[bytes]] | None:
    try:
        value = codec.decode(raw, max_bytes=MAX_WAL_BYTES)
        if (not isinstance(value, list) or len(value) != 3 or value[0] != WAL_VERSION
                or type(value[1]) is not int or not isinstance(value[2], list)
                or not all(isinstance(b, bytes) for b in value[2])):
            raise codec.DecodeError("not a consensus write-ahead record")
    except codec.DecodeError as exc:
        log.error("consensus_wal_unreadable", reason=str(exc))
        return None
    return value[1], value[2]
