"""The client API's methods: what each JSON-RPC method and binary frame does on a node.

Transactions travel as the hex of their canonical wire bytes (JSON) or as raw bytes
(msgpack binary frames, for devices). Chain-rule refusals are JSON-RPC errors whose
code is the rule's code (see :mod:`iomtnode.core.errors`), with the rule's message.

Binary frames (devices and gateways): ``[request_id, [tx, tx, ...]]`` in msgpack, each
transaction in its canonical form (the frame's own form is not checked); the reply is
``[request_id, [[0, tx_id] | [code, message], ...]]``, one entry per transaction in order.
A frame that is not of this form gets ``[request_id or 0, [[code, reason]]]``: -32600, or
-32011 / -32012 for a frame over its element or depth limit (see :mod:`.binary`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from ..chain.streamstore import BlobError
from ..core import codec
from ..core.block import Block, Commit, Header, decode_header
from ..core.crypto import blake2b256
from ..core.errors import RuleError
from ..core.tx import SignedTx, decode_tx, tx_to_json
from .access import Access, Role
from .admin import AdminApi
from .auth import AuthApi
from .binary import FrameError, decode_tx_frame
from .interfaces import (
    ChainQueries,
    MethodGroup,
    PeerAdmin,
    Refusing,
    StatusSource,
    Submitter,
    TxStatusQueries,
)
from .jsonrpc import INVALID_PARAMS, INVALID_REQUEST, JsonParts, Refused, RpcError, compact_json
from .params import hex_param
from .status import status_to_json

MAX_BATCH_TXS = 10_000  # transactions in one submit_readings call or binary frame
MAX_STATUS_IDS = 10_000  # ids in one get_tx_status call (two store reads each)
STATUS_CHUNK = 256  # ... looked up per step, so a large call never holds the trio thread long
NOT_FOUND = 1030  # no such block / transaction / device
BLOCK_JSON_CHUNK_TXS = 500  # transactions of a block decoded and put in JSON at a time by
# get_block: a block of 10,000 was decoded whole, viewed and encoded, 45 MB at its peak
TX_DROPPED = 1031  # get_receipt of a transaction this node accepted and dropped

# who may call each method (api/access.py); the dispatcher checks it before every call
ROLES: dict[str, Role] = {
    "auth_challenge": Role.PUBLIC,
    "authenticate": Role.PUBLIC,
    "submit_reading": Role.PUBLIC,  # a transaction's own signature proves its signer
    "submit_readings": Role.PUBLIC,
    "submit_tx": Role.PUBLIC,
    "get_block": Role.PUBLIC,  # what every peer of the chain holds
    "get_receipt": Role.PUBLIC,
    "get_tx_status": Role.PUBLIC,
    "put_blob": Role.PUBLIC,  # priced by its bytes like every large request (connection.py)
    "get_device": Role.PARTY,  # names the device's stream: the device, the stream, authorities
    "get_evidence": Role.PUBLIC,
    "get_authorities": Role.PUBLIC,
    "status": Role.PUBLIC,
    "admin_peers": Role.ADMIN,
    "admin_disconnect_peer": Role.ADMIN,
    "admin_ban_peer": Role.ADMIN,
    "admin_refuse_peers": Role.ADMIN,
    "admin_set_listen": Role.ADMIN,
}


def header_to_json(header: Header, header_bytes: bytes) -> dict[str, Any]:
    """A readable view of a block's header (bytes as hex), with the block's hash."""
    return {
        "height": header.height,
        "hash": blake2b256(header_bytes).hex(),
        "time_ms": header.time_ms,
        "parent": header.parent.hex(),
        "proposer": header.proposer.hex(),
        "tx_root": header.tx_root.hex(),
        "tx_count": header.tx_count,
        "authorities_hash": header.authorities_hash.hex(),
        "next_authorities_hash": header.next_authorities_hash.hex(),
        "last_commit_hash": header.last_commit_hash.hex(),
    }


def block_to_json(block: Block, *, full: bool = True) -> dict[str, Any]:
    view = header_to_json(block.header, block.header_bytes)
    if full:
        view["txs"] = [tx_to_json(tx) for tx in block.txs]
        view["header_raw"] = block.header_bytes.hex()
    else:
        view["tx_ids"] = [tx.id.hex() for tx in block.txs]
    return view


def block_json_parts(header_bytes: bytes, raws: list[bytes], commit: Commit | None
                     ) -> JsonParts:
    """``get_block``'s result (:func:`block_to_json` and ``commit``, the hex of the block's
    certificate) as JSON pieces, its transactions decoded :data:`BLOCK_JSON_CHUNK_TXS` at
    a time: the whole block is never held decoded, nor as objects and text at once."""
    head = compact_json(header_to_json(decode_header(header_bytes), header_bytes))
    parts = [head[:-1], ',"txs":[']
    for start in range(0, len(raws), BLOCK_JSON_CHUNK_TXS):
        chunk = [tx_to_json(decode_tx(raw)) for raw in raws[start:start + BLOCK_JSON_CHUNK_TXS]]
        parts += [",", compact_json(chunk)[1:-1]] if start else [compact_json(chunk)[1:-1]]
    parts.append("]," + compact_json({"header_raw": header_bytes.hex(),
                                      "commit": commit.encode().hex() if commit else None})[1:])
    return JsonParts(parts)


class ClientApi:
    """Binds the JSON-RPC method names and binary frames to the narrow interfaces of a
    running node (see :mod:`.interfaces`); it sees nothing else of the node. ``access`` says
    who may call each method (``ROLES``): give ``access.check`` to the server as its guard."""

    def __init__(self, *, submitter: Submitter, chain: ChainQueries, txs: TxStatusQueries,
                 peers: PeerAdmin, status: StatusSource,
                 groups: Sequence[MethodGroup] = (),
                 now_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        """``groups``: more methods with their roles (subscriptions, a patient's records, the
        audit log); ``now_ms``: the node's wall clock (when a blob was uploaded)."""
        self._now_ms = now_ms
        self._submitter = submitter
        self._chain = chain
        self._txs = txs
        self._status = status
        self._admin = AdminApi(peers)
        self._auth = AuthApi(chain.chain_id, chain.participant)
        self._groups = tuple(groups)
        roles = ROLES | {name: role for group in groups for name, role in group.roles.items()}
        self.access = Access(roles, self.methods(), self.admin_methods(), chain)

    def methods(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {
            "submit_reading": self.submit_reading,
            "submit_readings": self.submit_readings,
            "submit_tx": self.submit_tx,
            "get_block": self.get_block,
            "get_receipt": self.get_receipt,
            "get_tx_status": self.get_tx_status,
            "get_device": self.get_device,
            "put_blob": self.put_blob,
            "get_evidence": self.get_evidence,
            "get_authorities": self.get_authorities,
            "status": self.status,
        } | self._auth.methods() | {name: fn for group in self._groups
                                    for name, fn in group.methods().items()}

    def admin_methods(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        """Methods that need the node's admin token (``params.token``)."""
        return self._admin.methods()

    async def _submit(self, raw_hex: Any, name: str, *, reading_only: bool) -> SignedTx:
        raw = hex_param(name, raw_hex)
        try:
            return await self._submitter.submit(raw, reading_only=reading_only)
        except RuleError as exc:
            raise RpcError(exc.code, str(exc)) from None

    async def submit_reading(self, tx: str) -> dict[str, Any]:
        """Submit one signed reading (hex of its wire bytes). Returns its id."""
        return {"id": (await self._submit(tx, "tx", reading_only=True)).id.hex()}

    async def submit_tx(self, tx: str) -> dict[str, Any]:
        """Submit any signed transaction (admission, revocation, grant, vote, ...)."""
        signed = await self._submit(tx, "tx", reading_only=False)
        return {"id": signed.id.hex(), "type": signed.kind_name}

    async def submit_readings(self, txs: list[str], conn: Refusing | None = None
                              ) -> dict[str, Any]:
        """Submit a batch of readings; each is admitted or refused on its own (a batch with
        refusals is logged once, by ``conn.refused``: see :mod:`.refusals`)."""
        if not isinstance(txs, list) or not txs:
            raise RpcError(INVALID_PARAMS, "txs must be a non-empty array of hex strings")
        if len(txs) > MAX_BATCH_TXS:
            raise RpcError(INVALID_PARAMS, f"at most {MAX_BATCH_TXS} readings per call")
        results: list[dict[str, Any]] = []
        raws: list[bytes] = []
        where: list[int] = []
        for i, item in enumerate(txs):
            try:
                raws.append(hex_param(f"txs[{i}]", item))
            except RpcError as exc:
                results.append({"error": {"code": exc.code, "message": exc.message}})
            else:
                where.append(len(results))
                results.append({})
        for i, admitted in zip(where, await self._submitter.submit_many(raws, reading_only=True),
                               strict=True):
            results[i] = ({"id": admitted.id.hex()} if isinstance(admitted, SignedTx)
                          else {"error": {"code": admitted.code, "message": str(admitted)}})
        accepted = sum(1 for r in results if "id" in r)
        if accepted < len(txs) and conn is not None and conn.refused is not None:
            first = next(r["error"] for r in results if "error" in r)
            conn.refused.transactions("submit_readings", len(txs) - accepted, len(txs),
                                      RpcError(first["code"], first["message"]))
        return {"accepted": accepted, "rejected": len(txs) - accepted, "results": results}

    async def get_block(self, height: int | None = None, hash: str | None = None
                        ) -> JsonParts:
        """A block by ``height`` or by ``hash`` (exactly one), with its commit certificate."""
        chain = self._chain
        if (height is None) == (hash is None):
            raise RpcError(INVALID_PARAMS, "give exactly one of height and hash")
        try:
            if height is not None:
                if type(height) is not int or height < 0:
                    raise RpcError(INVALID_PARAMS, "height must be a non-negative integer")
            else:
                height = chain.height_of(hex_param("hash", hash, 32))
            header_bytes, raws = chain.block_parts_at(height)
        except KeyError as exc:
            raise RpcError(NOT_FOUND, str(exc.args[0])) from None
        return block_json_parts(header_bytes, raws, chain.commit_at(height))

    async def get_receipt(self, id: str) -> dict[str, Any]:
        """The receipt of a committed transaction, to check offline with ``iomtnode verify``."""
        tx_id = hex_param("id", id, 32)
        receipt = self._chain.receipt(tx_id)
        if receipt is None:
            status = self._txs.tx_status(tx_id)
            if status["state"] == "dropped":
                raise RpcError(TX_DROPPED, f"transaction was dropped at height "
                               f"{status['height']} (code {status['code']}): {status['reason']}",
                               {"code": status["code"], "reason": status["reason"]})
            raise RpcError(NOT_FOUND, "transaction is pending, not yet in a block"
                           if status["state"] == "pending"
                           else "no committed transaction with this id")
        return receipt

    async def get_tx_status(self, id: str | None = None, ids: list[str] | None = None
                            ) -> dict[str, Any] | list[dict[str, Any]]:
        """What this node knows of a transaction it may have accepted: by ``id``, one
        ``{id, state, height?, code?, reason?}``; by ``ids`` (at most
        :data:`MAX_STATUS_IDS`), a list of them in the same order. ``state`` is pending,
        committed (with ``height``), dropped (with ``code``, ``reason`` and the ``height``
        the node was at) or unknown (this node has no record of it)."""
        if (id is None) == (ids is None):
            raise RpcError(INVALID_PARAMS, "give exactly one of id and ids")
        txs = self._txs
        if id is not None:
            return txs.tx_status(hex_param("id", id, 32))
        if not isinstance(ids, list) or len(ids) > MAX_STATUS_IDS:
            raise RpcError(INVALID_PARAMS, f"ids must be an array of at most {MAX_STATUS_IDS} "
                           "hex ids")
        tx_ids = [hex_param(f"ids[{i}]", item, 32) for i, item in enumerate(ids)]
        found: list[dict[str, Any]] = []
        for start in range(0, len(tx_ids), STATUS_CHUNK):  # other tasks run between chunks
            await trio.lowlevel.checkpoint()
            found += [txs.tx_status(t) for t in tx_ids[start:start + STATUS_CHUNK]]
        return found

    async def put_blob(self, blob: str) -> dict[str, str]:
        """Keep a class 1 or 2 reading's sealed payload (salt and ciphertext) until the
        reading naming it commits (submit the reading after this); -> its commitment. A blob
        no committed reading names is dropped after BLOB_PENDING_S."""
        data = hex_param("blob", blob)
        try:
            address = self._chain.put_blob(data, self._now_ms())
        except BlobError as exc:
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        return {"commitment": address.hex()}

    async def get_device(self, id: str) -> dict[str, Any]:
        """A device's registration and the sequence number of its last committed reading."""
        found = self._chain.device(hex_param("id", id, 32))
        if found is None:
            raise RpcError(NOT_FOUND, "no device with this key is registered")
        device, last_seq = found
        return {
            "id": device.key.hex(), "stream": device.stream.hex(),
            "profile_hash": device.profile_hash.hex(), "status": device.status,
            "admitted_height": device.admitted_height,
            "successor": device.successor.hex() or None, "last_seq": last_seq,
        }

    async def get_authorities(self) -> dict[str, Any]:
        """The authorities (when each last certified a block, whether it counts as online
        for governance, whether it has evidence against it), the scheduled changes and the
        votes that have not passed yet."""
        return self._chain.authority_report()

    async def get_evidence(self) -> list[dict[str, Any]]:
        """Every equivocation on the ledger: the authority, the height, round and vote type
        it signed twice, the reporter and the height the evidence was included at."""
        return self._chain.evidence()

    async def status(self) -> dict[str, Any]:
        """Chain id, height, head hash, finalized height, authorities, mempool size, peers."""
        return status_to_json(self._status.status())

    async def handle_binary(self, frame: bytes, refused: Refused | None = None) -> bytes:
        """Answer a msgpack binary frame of transactions (see the module docstring);
        ``refused`` (the server's refusal log for the client's address) is told of a frame
        refused whole, and of a frame some of whose transactions were refused."""
        try:
            request_id, items = decode_tx_frame(frame, max_txs=MAX_BATCH_TXS)
        except FrameError as exc:
            if refused is not None:
                refused(None, exc)
            return codec.encode([exc.request_id, [[exc.code, exc.message]]])
        results: list[list[Any]] = []
        raws: list[bytes] = []
        where: list[int] = []
        refusals = 0  # counted on the refusal paths only
        for raw in items:
            if type(raw) is not bytes:
                results.append([INVALID_REQUEST, "each transaction must be a byte string"])
                refusals += 1
            else:
                where.append(len(results))
                results.append([])
                raws.append(raw)
        for i, admitted in zip(where, await self._submitter.submit_many(raws, reading_only=True),
                               strict=True):
            if isinstance(admitted, SignedTx):
                results[i] = [0, admitted.id]
            else:
                results[i] = [admitted.code, str(admitted)]
                refusals += 1
        if refusals and refused is not None:
            code, message = next(r for r in results if r[0])
            refused.transactions(None, refusals, len(results), RpcError(code, message))
        return codec.encode([request_id, results])
