"""The chain's part in patients' streams: the index a commit writes, the queries the API
makes (readings of a stream, wraps of a grantee, a stream's metadata, blobs), and the blobs
uploaded before their readings or fetched from peers after (see :mod:`.records`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.block import Block
from ..core.crypto import KEY_BYTES
from ..core.ledger import GrantRecord, State
from ..core.payload import commitment, sidecar_bytes
from ..store.sidecars import BLOB_PREFIX, BLOB_STREAM_PREFIX, MISSING_BLOB_PREFIX, U64
from .erasure import blob_erased
from .records import (
    IndexedBlock,
    StreamReading,
    StreamView,
    WrapEntry,
    epoch_announcement,
    index_block,
    stream_readings,
    stream_wraps,
)

if TYPE_CHECKING:
    from ..store import BlockStore

DEVICE_STREAMS_CACHED = 65_536  # device key -> stream (a device's stream never changes)
BLOB_SIZES = frozenset({sidecar_bytes(1), sidecar_bytes(2)})  # a blob is one of these


class BlobError(ValueError):
    """A blob that is not of a blob size class's size (or no room to keep it)."""


class StreamStore:
    """The stream queries and blob methods of :class:`~.chain.Chain` (a base class of it)."""

    store: BlockStore
    _device_streams: dict[bytes, bytes]

    def state(self) -> State:  # pragma: no cover - Chain's
        raise NotImplementedError

    # commit ------------------------------------------------------------------------------

    def _index(self, block: Block, changes: dict[bytes, bytes | None]) -> IndexedBlock:
        """The stream entries of ``block`` (whose state changes are ``changes``)."""
        streams = self._device_streams
        get_state = self.store.get_state

        def stream_of(device: bytes) -> bytes:
            found = State(lambda k: changes[k] if k in changes else get_state(k)).device(device)
            assert found is not None, "a committed reading's device is on the ledger"
            if len(streams) >= DEVICE_STREAMS_CACHED:
                streams.clear()
            streams[device] = found.stream
            return found.stream

        return index_block(block, self.store.sidecars, streams, stream_of)

    # queries -----------------------------------------------------------------------------

    def stream_readings(self, stream: bytes, since_ms: int, until_ms: int, after: bytes,
                        limit: int) -> list[StreamReading]:
        """The stream's committed readings with ``since_ms <= ts_ms < until_ms`` ordered by
        (ts_ms, tx id), after the cursor ``after`` (b"", or the 40-byte ``ts_ms u64 | tx id``
        of the last one returned), at most ``limit`` (capped by
        :data:`~.records.MAX_STREAM_READINGS`). Raises ValueError for a malformed cursor."""
        return stream_readings(self.store.sidecars, self.store.block_bytes, stream, since_ms,
                               until_ms, after, limit)

    def stream_wraps(self, stream: bytes, grantee: bytes) -> list[WrapEntry]:
        """The wraps addressed to ``grantee`` in the stream's grants and epochs this node
        holds, by epoch."""
        return stream_wraps(self.store.sidecars, self.store.block_bytes, stream, grantee)

    def stream_grants(self, stream: bytes) -> dict[bytes, GrantRecord] | None:
        """The stream's grant records from the state (a few state reads, no block), or None
        for a key the ledger knows as no stream: what a consent check needs."""
        state = self.state()
        record = state.stream(stream)
        if record.epoch == 0 and not record.erased and not state.stream_devices(stream):
            return None
        grants = {}
        for grantee in record.grantees:
            grant = state.grant(stream, grantee)
            if grant is not None:
                grants[grantee] = grant
        return grants

    def stream_view(self, stream: bytes) -> StreamView | None:
        """The stream's ledger metadata, or None for a key the ledger knows as no stream
        (reads the block of the current epoch's announcement)."""
        grants = self.stream_grants(stream)
        if grants is None:
            return None
        record = self.state().stream(stream)
        announcement = (epoch_announcement(self.store.sidecars, self.store.block_bytes, stream,
                                           record.epoch) if record.epoch else None)
        return StreamView(record.epoch, record.public, record.erased, grants, announcement)

    def blob(self, commitment: bytes) -> bytes | None:
        """The blob a committed (and not erased) reading names by ``commitment``, if this
        node holds it."""
        sidecars = self.store.sidecars
        owner = sidecars.get(BLOB_STREAM_PREFIX + commitment)
        if owner is not None and blob_erased(sidecars, owner):
            return None  # its erasure committed; the erasure job deletes it
        return sidecars.get(BLOB_PREFIX + commitment)

    def blob_owner(self, commitment: bytes) -> tuple[bytes, int] | None:
        """The stream and epoch of the first committed (and not erased) reading naming
        ``commitment``, or None."""
        value = self.store.sidecars.get(BLOB_STREAM_PREFIX + commitment)
        if value is None or blob_erased(self.store.sidecars, value):
            return None
        return value[:KEY_BYTES], U64.unpack_from(value, KEY_BYTES)[0]

    def holds_blob(self, commitment: bytes) -> bool:
        """Whether this node holds the blob, uploaded or committed (admission asks)."""
        return self.store.sidecars.holds_blob(commitment)

    # blobs -------------------------------------------------------------------------------

    def put_blob(self, blob: bytes, now_ms: int) -> bytes:
        """Keep an uploaded blob as the blob of the committed reading that lacks it, or
        until a reading naming it commits (or
        :data:`~iomtnode.store.sidecars.BLOB_PENDING_S` passes); returns its commitment.
        Raises :class:`BlobError` for a blob of no blob size, or when the pending blobs are
        full."""
        if len(blob) not in BLOB_SIZES:
            raise BlobError(f"a blob is {sorted(BLOB_SIZES)} bytes (salt and padded "
                            f"ciphertext of size class 1 or 2), got {len(blob)}")
        address = commitment(blob)
        if self.blob(address) is None and not self.store.sidecars.put_fetched(address, blob):
            try:  # no committed reading lacks it: it waits for its reading
                self.store.sidecars.put_pending(address, blob, now_ms)
            except RuntimeError as exc:  # PendingFullError
                raise BlobError(str(exc)) from None
        return address

    def missing_blobs(self, limit: int, after: bytes = b"") -> list[tuple[bytes, bytes]]:
        """``(commitment, stream)`` of up to ``limit`` committed readings whose blob this
        node lacks (to fetch from peers), by commitment, after the commitment ``after``
        (b"": from the first)."""
        return self.store.sidecars.missing_blobs(limit, after)

    def put_fetched_blob(self, blob: bytes) -> bool:
        """Keep a blob fetched from a peer if a committed reading of this node lacks it;
        False (nothing kept) for a blob no missing reading names."""
        address = commitment(blob)
        if self.store.sidecars.get(MISSING_BLOB_PREFIX + address) is None:
            return False  # without the commit lock: checked again under it
        return self.store.sidecars.put_fetched(address, blob)


__all__ = ["BlobError", "StreamStore"]
