"""A patient's records through the client API: readings and blobs by consent, each call
audited; a stream's public ledger metadata and its current epoch (docs/privacy.md, section 6).

- ``get_patient_records`` and ``get_blob`` (role ``CONSENT``, :mod:`.access`) answer the
  stream's own key or a live grantee, and nobody else (``NO_CONSENT``, the same whether or
  not the stream exists). Every call with well-formed params, served or refused, is recorded
  in the node's audit log (:class:`AuditTrail`) before it is answered: who (the keys the
  connection proved), which stream, under which grant, the code, the ids served.
- ``get_stream`` and ``get_stream_epoch`` are public: epochs and grants are on the ledger
  for every peer to see. A device checks the announcement it gets by the stream's signature.

Nothing here decrypts: a reader opens the sidecars with its own keys, on its own machine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from ..core.crypto import HASH_BYTES, KEY_BYTES
from ..core.errors import ErasedStreamError
from ..core.fields import U64_MAX
from ..core.ledger import GrantRecord
from ..core.tx import SignedTx, tx_to_json
from .access import Authenticated, Consent, Reader, Role, consent, no_consent
from .jsonrpc import INVALID_PARAMS, RpcError
from .params import hex_param

MAX_RECORDS_PAGE = 500  # readings one get_patient_records answer holds (~0.4 MB of JSON)
CURSOR_BYTES = 8 + HASH_BYTES  # ts_ms u64 | tx id of the last reading returned
NO_STREAM = bytes(KEY_BYTES)  # the stream an audit record names for a blob no reading names
NOT_FOUND = 1030  # as methods.NOT_FOUND: no such blob on this node
ERASED = ErasedStreamError.code  # the stream's whole scope was erased, as admission refuses
AUDIT_UNAVAILABLE = -32026  # the audit log cannot record the call: nothing is served

ROLES: dict[str, Role] = {
    "get_patient_records": Role.CONSENT,  # the stream's key or a live grantee; audited
    "get_blob": Role.CONSENT,
    "get_stream": Role.PUBLIC,  # epochs and grants are ledger metadata every peer holds
    "get_stream_epoch": Role.PUBLIC,  # a device checks the announcement's signature
}


class StreamReading(Protocol):
    """A committed reading of a stream as the chain holds it."""

    @property
    def tx(self) -> SignedTx: ...  # with its sidecar when this node holds it (class 0)

    @property
    def height(self) -> int: ...

    @property
    def erased_by(self) -> bytes: ...  # the Erase tx id, or b""

    @property
    def blob(self) -> bool: ...  # this node holds its class 1/2 blob


class WrapEntry(Protocol):
    """An epoch secret wrapped for one grantee, from a Grant / EpochAnnounce / RevokeGrant."""

    @property
    def epoch(self) -> int: ...

    @property
    def mode(self) -> int: ...

    @property
    def wrap(self) -> bytes: ...

    @property
    def tx_id(self) -> bytes: ...


class StreamView(Protocol):
    """A stream's ledger record: its current epoch, grants and erasure."""

    @property
    def epoch(self) -> int: ...

    @property
    def public(self) -> bytes: ...

    @property
    def erased(self) -> bool: ...

    @property
    def grants(self) -> Mapping[bytes, GrantRecord]: ...

    @property
    def announcement(self) -> SignedTx | None: ...  # the tx that set the current epoch


class StreamQueries(Protocol):
    """What the chain tells of streams (a narrow view of :class:`~iomtnode.chain.chain.Chain`)."""

    def stream_view(self, stream: bytes) -> StreamView | None: ...

    def stream_grants(self, stream: bytes) -> Mapping[bytes, GrantRecord] | None:
        """The stream's grants (None: no such stream), without the announcement."""
        ...

    def stream_readings(self, stream: bytes, since_ms: int, until_ms: int, after: bytes,
                        limit: int) -> Sequence[StreamReading]: ...

    def stream_wraps(self, stream: bytes, grantee: bytes) -> Sequence[WrapEntry]: ...

    def blob(self, commitment: bytes) -> bytes | None: ...

    def blob_owner(self, commitment: bytes) -> tuple[bytes, int] | None:
        """The stream and epoch of the first committed reading naming ``commitment``."""
        ...


class AuditTrail(Protocol):
    """The node's audit log as the API writes it (the node's audit service)."""

    async def record(self, *, callers: frozenset[bytes], stream: bytes, grant_tx: bytes,
                     method: str, code: int, tx_ids: Sequence[bytes]) -> None:
        """Append one record and return once it is durable; raises
        :class:`~.jsonrpc.RpcError` if the log cannot record (then nothing is served)."""
        ...


def proven(conn: Authenticated | None) -> frozenset[bytes]:
    """The keys the caller's connection proved (none without a connection)."""
    return frozenset() if conn is None else conn.proven_keys


def reading_to_json(entry: StreamReading) -> dict[str, Any]:
    tx = entry.tx
    return {"tx": tx.leaf_bytes.hex(), "sidecar": tx.sidecar.hex() or None,
            "height": entry.height, "erased_by": entry.erased_by.hex() or None,
            "size_class": tx.body.size_class, "blob": entry.blob}  # type: ignore[union-attr]


class RecordsApi:
    """The methods of this module (see its docstring); ``now_ms`` is the node's clock, which
    says whether a grant is live."""

    roles = ROLES

    def __init__(self, chain: StreamQueries, audit: AuditTrail, now_ms: Callable[[], int]
                 ) -> None:
        self._chain = chain
        self._audit = audit
        self._now_ms = now_ms

    def methods(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {"get_patient_records": self.get_patient_records, "get_blob": self.get_blob,
                "get_stream": self.get_stream, "get_stream_epoch": self.get_stream_epoch}

    def _consent(self, stream: bytes | None, proven: frozenset[bytes], epoch: int
                 ) -> tuple[Consent, bytes]:
        """The caller's consent on ``stream`` for a reading of ``epoch`` and the grant tx it
        holds it by (b"": its own key); raises :func:`~.access.no_consent` (for no stream at
        all, too, and for a forward-mode grantee asking for an epoch before its grant's)."""
        if stream is None:
            raise no_consent()
        grants = self._chain.stream_grants(stream)  # no block read: this runs on every read
        found = consent(stream, grants is not None, grants or {}, proven, self._now_ms())
        if epoch < found.first_epoch:
            raise no_consent()
        if found.grant is None:
            return found, b""
        return found, found.grant.tx_id

    async def _audited(self, method: str, stream: bytes | None, callers: frozenset[bytes],
                       serve: Callable[[Consent], tuple[Any, Sequence[bytes]]],
                       asked: Sequence[bytes] = (), epoch: int = U64_MAX) -> Any:
        """Decide consent (for a reading of ``epoch``: a blob's), make the answer, record the
        call (served or refused) and return the answer once the record is durable. Refused:
        ``asked`` are the ids recorded."""
        grant_tx = b""
        audited = NO_STREAM if stream is None else stream
        try:
            found, grant_tx = self._consent(stream, callers, epoch)
            answer, served = serve(found)
        except RpcError as exc:
            await self._audit.record(callers=callers, stream=audited, grant_tx=grant_tx,
                                     method=method, code=exc.code, tx_ids=asked)
            raise
        await self._audit.record(callers=callers, stream=audited, grant_tx=grant_tx,
                                 method=method, code=0, tx_ids=served)
        return answer

    async def get_patient_records(self, stream: str, conn: Reader | None, since_ms: int = 0,
                                  until_ms: int = U64_MAX, cursor: str | None = None,
                                  limit: int = MAX_RECORDS_PAGE) -> dict[str, Any]:
        """The stream's readings with ``since_ms <= ts_ms < until_ms``, ordered by (ts_ms,
        tx id), at most ``limit`` from after ``cursor``: each one's leaf, sidecar (null when
        this node holds none: erased, off-chain or not received), height, ``erased_by``, size
        class and whether this node holds its blob; and the wraps addressed to the caller
        (a grantee). ``cursor`` in the answer continues the listing (null: the end). A
        forward-mode grantee gets only readings of its grant's epoch and later."""
        key = hex_param("stream", stream, KEY_BYTES)
        for name, value in (("since_ms", since_ms), ("until_ms", until_ms)):
            if type(value) is not int or not 0 <= value <= U64_MAX:
                raise RpcError(INVALID_PARAMS, f"{name} must be an integer in [0, 2^64)")
        after = b"" if cursor is None else hex_param("cursor", cursor, CURSOR_BYTES)
        if type(limit) is not int or not 1 <= limit <= MAX_RECORDS_PAGE:
            raise RpcError(INVALID_PARAMS, f"limit must be 1..{MAX_RECORDS_PAGE}")

        def serve(found: Consent) -> tuple[dict[str, Any], list[bytes]]:
            page = self._chain.stream_readings(key, since_ms, until_ms, after, limit)
            readings = [r for r in page
                        if r.tx.body.epoch >= found.first_epoch]  # type: ignore[union-attr]
            wraps = [] if found.own else [
                {"epoch": w.epoch, "mode": w.mode, "wrap": w.wrap.hex(), "tx_id": w.tx_id.hex()}
                for w in self._chain.stream_wraps(key, found.key)
                if w.epoch >= found.first_epoch]
            last = page[-1].tx if len(page) == limit else None
            next_cursor = None if last is None else (
                last.body.ts_ms.to_bytes(8, "big") + last.id).hex()  # type: ignore[union-attr]
            return ({"readings": [reading_to_json(r) for r in readings], "wraps": wraps,
                     "cursor": next_cursor}, [r.tx.id for r in readings])

        if conn is not None:
            await conn.admit_audited_read()
        return await self._audited("get_patient_records", key, proven(conn), serve)

    async def get_blob(self, commitment: str, conn: Reader | None) -> dict[str, Any]:
        """The class 1/2 payload (``salt | ciphertext``) named by ``commitment``, to the
        consent of the stream of the first committed reading that names it (a forward-mode
        grantee: if that reading is of its grant's epoch or later). A commitment no committed
        reading names is refused as an unknown stream is (and audited under
        :data:`NO_STREAM`)."""
        commit = hex_param("commitment", commitment, HASH_BYTES)

        def serve(found: Consent) -> tuple[dict[str, Any], list[bytes]]:
            blob = self._chain.blob(commit)
            if blob is None:
                raise RpcError(NOT_FOUND, "this node does not hold this blob (erased, or not "
                               "fetched from its peers yet): ask another node")
            return {"blob": blob.hex()}, [commit]

        owner = self._chain.blob_owner(commit)
        stream, epoch = (None, 0) if owner is None else owner
        if conn is not None:
            await conn.admit_audited_read()
        return await self._audited("get_blob", stream, proven(conn), serve, [commit], epoch)

    async def get_stream(self, stream: str) -> dict[str, Any]:
        """A stream's ledger metadata: current epoch and its public key, whether it was
        erased, its grants (each with the height and id of its transaction, for a FHIR
        Consent), and the announcement of the current epoch (wire form, with its wraps when
        this node holds them)."""
        key = hex_param("stream", stream, KEY_BYTES)
        view = self._chain.stream_view(key)
        if view is None:
            raise RpcError(NOT_FOUND, "no stream with this key is on the ledger")
        grants = [{"grantee": grantee.hex(), "box": g.box.hex(), "mode": g.mode,
                   "expires_ms": g.expires_ms, "first_epoch": g.first_epoch,
                   "height": g.height,  # its block's time is when the grant was made
                   "tx_id": g.tx_id.hex()}
                  for grantee, g in sorted(view.grants.items())]
        announcement = view.announcement
        return {"stream": key.hex(), "epoch": view.epoch, "public": view.public.hex(),
                "erased": view.erased, "grants": grants,
                "announcement": None if announcement is None else announcement.raw.hex()}

    async def get_stream_epoch(self, stream: str) -> dict[str, Any]:
        """What a device seals to: the stream's current epoch and the signed announcement
        that set it (its leaf: ``[body, signature]``, without wraps). The device checks the
        signature by the stream's key and never moves to a lower epoch, so a node can delay
        a device but not hand it a key of its own. An erased stream is refused as admission
        refuses its readings (``ErasedStreamError``'s code)."""
        key = hex_param("stream", stream, KEY_BYTES)
        view = self._chain.stream_view(key)
        if view is not None and view.erased:
            raise RpcError(ERASED, "this stream was erased: it takes no more readings; a "
                           "device key stays in its stream, so admit a new device key to a "
                           "stream of another scope")
        if view is None or view.announcement is None:
            raise RpcError(NOT_FOUND, "this stream has no current epoch on the ledger")
        tx = view.announcement
        return {"stream": key.hex(), "epoch": view.epoch, "public": view.public.hex(),
                "announcement": tx.leaf_bytes.hex(), "tx": tx_to_json(tx)}
