"""The Merkle trees of recently proven blocks, so that the receipts of many transactions of
one block (a device or a patient's app proving a batch) hash its transactions once.

A tree is built from the block's stored transactions, kept only if its root is the header's
``tx_root``, and keyed by the block's height and hash (the hash of its header, which names
that root): a tree is never used for another block. Erasing a reading's sidecar rewrites its
stored block but not its leaves (a leaf never holds the sidecar), so a kept tree stays true.
Memory only: a restarted node builds each tree again on its first receipt.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import structlog

from ..core import merkle
from ..core.block import Header
from ..core.crypto import blake2b256
from ..core.tx import leaf_hash_of

log = structlog.get_logger(__name__)

RECEIPT_TREES_BYTES = 4 * 1024 * 1024  # bytes of hashes the kept trees hold at most; a
# block of 10,000 transactions (MAX_BLOCK_TXS) has a tree of about 640 KB
RECEIPT_TREES_BLOCKS = 256  # trees kept at most, however small (each has ~200 bytes of overhead)


class DamagedBlockError(RuntimeError):
    """A stored block whose transactions do not hash to its header's ``tx_root``: the store
    was damaged; no receipt of it can be made (restore the data directory or resync)."""


class ReceiptTrees:
    """The Merkle levels of the blocks receipts were last asked of, at most
    :data:`RECEIPT_TREES_BYTES` of hashes and :data:`RECEIPT_TREES_BLOCKS` trees; the least
    recently used tree is dropped first. Safe to use from several threads."""

    def __init__(self, max_bytes: int = RECEIPT_TREES_BYTES,
                 max_blocks: int = RECEIPT_TREES_BLOCKS) -> None:
        self.max_bytes = max_bytes
        self.max_blocks = max_blocks
        self._trees: OrderedDict[tuple[int, bytes], merkle.Levels] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._trees)

    @property
    def nbytes(self) -> int:
        """Bytes of hashes held now."""
        return self._bytes

    def tree(self, header_bytes: bytes, header: Header, raws: list[bytes]) -> merkle.Levels:
        """The tree of the block whose header is ``header_bytes`` (decoded: ``header``) and
        whose stored transactions are ``raws``: kept, or built and kept. Raises
        :class:`DamagedBlockError` when ``raws`` do not hash to the header's root."""
        key = (header.height, blake2b256(header_bytes))
        with self._lock:
            kept = self._trees.get(key)
            if kept is not None:
                self._trees.move_to_end(key)
                return kept
        tree = merkle.levels_of_hashes([leaf_hash_of(raw) for raw in raws])
        if tree.count != header.tx_count or tree.root != header.tx_root:
            log.error("stored_block_damaged", height=header.height, txs=tree.count,
                      header_txs=header.tx_count)
            raise DamagedBlockError(f"the stored block {header.height} does not match its "
                                    "header's transaction root")
        self._keep(key, tree)
        return tree

    def _keep(self, key: tuple[int, bytes], tree: merkle.Levels) -> None:
        size = tree.nbytes
        if size > self.max_bytes:
            return  # larger than all the room: used once, never kept
        with self._lock:
            if key in self._trees:  # another thread built it meanwhile
                return
            self._trees[key] = tree
            self._bytes += size
            while self._bytes > self.max_bytes or len(self._trees) > self.max_blocks:
                _, dropped = self._trees.popitem(last=False)
                self._bytes -= dropped.nbytes

