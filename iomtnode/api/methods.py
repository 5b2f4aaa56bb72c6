"""The client API's methods: what each JSON-RPC method and binary frame does on a node.

Transactions travel as the hex of their canonical wire bytes (JSON) or as raw bytes
(msgpack binary frames, for devices). Chain-rule refusals are JSON-RPC errors whose
code is the rule's code (see :mod:`iomtnode.core.errors`), with the rule's message.

Binary frames (devices and gateways): ``[request_id, [tx, tx, ...]]`` in canonical
msgpack; the reply is ``[request_id, [[0, tx_id] | [code, message], ...]]``, one entry per
transaction in order. A frame that is not of this form gets ``[request_id or 0,
[[-32600, reason]]]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from .. import __version__
from ..chain.feed import SUBSCRIBER_QUEUE_BLOCKS
from ..core import codec
from ..core.block import Block
from ..core.errors import RuleError
from ..core.tx import SignedTx, tx_to_json
from .jsonrpc import INVALID_PARAMS, INVALID_REQUEST, RpcError

if TYPE_CHECKING:
    from ..node import Node
    from .server import Connection

MAX_BATCH_TXS = 10_000  # transactions in one submit_readings call or binary frame
MAX_STATUS_IDS = 10_000  # ids in one get_tx_status call (two store reads each)
STATUS_CHUNK = 256  # ... looked up per step, so a large call never holds the trio thread long
NOT_FOUND = 1030  # no such block / transaction / device
TX_DROPPED = 1031  # get_receipt of a transaction this node accepted and dropped


def _hex_param(name: str, value: Any, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise RpcError(INVALID_PARAMS, f"{name} must be a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise RpcError(INVALID_PARAMS, f"{name} is not valid hex") from None
    if size is not None and len(raw) != size:
        raise RpcError(INVALID_PARAMS, f"{name} must be {size} bytes ({2 * size} hex digits)")
    return raw


def block_to_json(block: Block, *, full: bool = True) -> dict[str, Any]:
    h = block.header
    view: dict[str, Any] = {
        "height": h.height,
        "hash": block.hash.hex(),
        "time_ms": h.time_ms,
        "parent": h.parent.hex(),
        "proposer": h.proposer.hex(),
        "tx_root": h.tx_root.hex(),
        "tx_count": h.tx_count,
        "authorities_hash": h.authorities_hash.hex(),
        "next_authorities_hash": h.next_authorities_hash.hex(),
        "last_commit_hash": h.last_commit_hash.hex(),
    }
    if full:
        view["txs"] = [tx_to_json(tx) for tx in block.txs]
        view["header_raw"] = block.header_bytes.hex()
    else:
        view["tx_ids"] = [tx.id.hex() for tx in block.txs]
    return view


class ClientApi:
    """Binds the JSON-RPC method names to a running :class:`~iomtnode.node.Node`."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def methods(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return {
            "submit_reading": self.submit_reading,
            "submit_readings": self.submit_readings,
            "submit_tx": self.submit_tx,
            "get_block": self.get_block,
            "get_receipt": self.get_receipt,
            "get_tx_status": self.get_tx_status,
            "get_device": self.get_device,
            "get_evidence": self.get_evidence,
            "get_authorities": self.get_authorities,
            "status": self.status,
            "subscribe_blocks": self.subscribe_blocks,
        }

    def admin_methods(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        """Methods that need the node's admin token (``params.token``)."""
        return {
            "admin_peers": self.admin_peers,
            "admin_disconnect_peer": self.admin_disconnect_peer,
            "admin_ban_peer": self.admin_ban_peer,
            "admin_refuse_peers": self.admin_refuse_peers,
            "admin_set_listen": self.admin_set_listen,
        }

    def _p2p(self) -> Any:
        if self.node.p2p is None:
            raise RpcError(INVALID_REQUEST, "node is starting")
        return self.node.p2p

    def _peers(self) -> list[dict[str, Any]]:
        if self.node.p2p is None:
            return []
        return [{"node_id": p.node_id.hex(), "address": p.remote, "outbound": p.outbound}
                for p in self.node.p2p.host.peers()]

    async def admin_peers(self) -> dict[str, Any]:
        """Connected peers, refused node ids, the address book and traffic counters."""
        p2p = self._p2p()
        return {
            "peers": self._peers(),
            "refused": sorted(n.hex() for n in p2p.host.refused),
            "observed_addresses": sorted({p.observed_address for p in p2p.host.peers()}),
            "address_book": {n.hex(): {"addresses": list(r.addresses), "seq": r.seq}
                             for n, r in p2p.book.records.items()},
            "counters": {kind: dataclasses.asdict(t)
                         for kind, t in p2p.host.counters().items()},
        }

    async def admin_disconnect_peer(self, node_id: str) -> dict[str, Any]:
        """Close the connection to a peer (it may reconnect)."""
        connected = self._p2p().host.disconnect(_hex_param("node_id", node_id, 32),
                                                "disconnected by admin")
        return {"disconnected": bool(connected)}

    async def admin_ban_peer(self, node_id: str, seconds: float) -> dict[str, Any]:
        """Disconnect a peer and refuse it for ``seconds``."""
        if not 0 <= seconds <= 30 * 86400:
            raise RpcError(INVALID_PARAMS, "seconds must be between 0 and 30 days")
        self._p2p().host.ban(_hex_param("node_id", node_id, 32), seconds, "banned by admin")
        return {"banned": node_id, "seconds": seconds}

    async def admin_refuse_peers(self, node_ids: list[str]) -> dict[str, Any]:
        """Replace the set of refused node ids: disconnect them and refuse them until
        changed (an empty list heals)."""
        refused = {_hex_param(f"node_ids[{i}]", n, 32) for i, n in enumerate(node_ids)}
        self._p2p().host.set_refused(refused)
        return {"refused": sorted(n.hex() for n in refused)}

    async def admin_set_listen(self, address: str) -> dict[str, Any]:
        """Move the p2p listener to ``address`` (HOST:PORT, port 0 for any): the node
        re-announces its record and its peers re-dial it there."""
        from ..config import ConfigError, parse_hostport

        try:
            parse_hostport(address, "address")
        except ConfigError as exc:
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        try:
            bound = await self._p2p().move(address)
        except OSError as exc:
            raise RpcError(INVALID_PARAMS, f"cannot listen on {address}: {exc}") from None
        return {"p2p_address": bound}

    def _submit(self, raw_hex: Any, name: str, *, reading_only: bool) -> SignedTx:
        raw = _hex_param(name, raw_hex)
        try:
            return self.node.submit(raw, reading_only=reading_only)
        except RuleError as exc:
            raise RpcError(exc.code, str(exc)) from None

    async def submit_reading(self, tx: str) -> dict[str, Any]:
        """Submit one signed reading (hex of its wire bytes). Returns its id."""
        return {"id": self._submit(tx, "tx", reading_only=True).id.hex()}

    async def submit_tx(self, tx: str) -> dict[str, Any]:
        """Submit any signed transaction (admission, revocation, grant, vote, ...)."""
        signed = self._submit(tx, "tx", reading_only=False)
        return {"id": signed.id.hex(), "type": signed.kind_name}

    async def submit_readings(self, txs: list[str]) -> dict[str, Any]:
        """Submit a batch of readings; each is admitted or refused on its own."""
        if not isinstance(txs, list) or not txs:
            raise RpcError(INVALID_PARAMS, "txs must be a non-empty array of hex strings")
        if len(txs) > MAX_BATCH_TXS:
            raise RpcError(INVALID_PARAMS, f"at most {MAX_BATCH_TXS} readings per call")
        results: list[dict[str, Any]] = []
        raws: list[bytes] = []
        where: list[int] = []
        for i, item in enumerate(txs):
            try:
                raws.append(_hex_param(f"txs[{i}]", item))
            except RpcError as exc:
                results.append({"error": {"code": exc.code, "message": exc.message}})
            else:
                where.append(len(results))
                results.append({})
        for i, admitted in zip(where, await self.node.submit_many(raws, reading_only=True),
                               strict=True):
            results[i] = ({"id": admitted.id.hex()} if isinstance(admitted, SignedTx)
                          else {"error": {"code": admitted.code, "message": str(admitted)}})
        accepted = sum(1 for r in results if "id" in r)
        return {"accepted": accepted, "rejected": len(txs) - accepted, "results": results}

    async def get_block(self, height: int | None = None, hash: str | None = None
                        ) -> dict[str, Any]:
        """A block by ``height`` or by ``hash`` (exactly one), with its commit certificate."""
        chain = self._chain()
        if (height is None) == (hash is None):
            raise RpcError(INVALID_PARAMS, "give exactly one of height and hash")
        try:
            if height is not None:
                if type(height) is not int or height < 0:
                    raise RpcError(INVALID_PARAMS, "height must be a non-negative integer")
                block = chain.block_at(height)
            else:
                block = chain.block_by_hash(_hex_param("hash", hash, 32))
        except KeyError as exc:
            raise RpcError(NOT_FOUND, str(exc.args[0])) from None
        view = block_to_json(block)
        commit = chain.commit_at(block.height)
        view["commit"] = commit.encode().hex() if commit else None
        return view

    async def get_receipt(self, id: str) -> dict[str, Any]:
        """The receipt of a committed transaction, to check offline with ``iomtnode verify``."""
        tx_id = _hex_param("id", id, 32)
        receipt = self._chain().receipt(tx_id)
        if receipt is None:
            status = self._mempool().tx_status(tx_id)
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
        mempool = self._mempool()
        if id is not None:
            return mempool.tx_status(_hex_param("id", id, 32))
        if not isinstance(ids, list) or len(ids) > MAX_STATUS_IDS:
            raise RpcError(INVALID_PARAMS, f"ids must be an array of at most {MAX_STATUS_IDS} "
                           "hex ids")
        tx_ids = [_hex_param(f"ids[{i}]", item, 32) for i, item in enumerate(ids)]
        found: list[dict[str, Any]] = []
        for start in range(0, len(tx_ids), STATUS_CHUNK):  # other tasks run between chunks
            await trio.lowlevel.checkpoint()
            found += [mempool.tx_status(t) for t in tx_ids[start:start + STATUS_CHUNK]]
        return found

    async def get_device(self, id: str) -> dict[str, Any]:
        """A device's registration and the sequence number of its last committed reading."""
        found = self._chain().device(_hex_param("id", id, 32))
        if found is None:
            raise RpcError(NOT_FOUND, "no device with this key is registered")
        device, last_seq = found
        return {
            "id": device.key.hex(), "patient": device.patient.hex(),
            "device_class": device.device_class, "manufacturer": device.manufacturer,
            "status": device.status, "admitted_height": device.admitted_height,
            "successor": device.successor.hex() or None, "last_seq": last_seq,
        }

    async def get_authorities(self) -> dict[str, Any]:
        """The authorities (when each last certified a block, whether it counts as online
        for governance, whether it has evidence against it), the scheduled changes and the
        votes that have not passed yet."""
        return self._chain().authority_report()

    async def get_evidence(self) -> list[dict[str, Any]]:
        """Every equivocation on the ledger: the authority, the height, round and vote type
        it signed twice, the reporter and the height the evidence was included at."""
        return self._chain().evidence()

    async def status(self) -> dict[str, Any]:
        """Chain id, height, head hash, finalized height, authorities, mempool size, peers."""
        chain = self._chain()
        return {
            "chain_id": chain.chain_id,
            "genesis_hash": chain.genesis.hash.hex(),
            "node_id": self.node.node_id.hex(),
            "version": __version__,
            "height": chain.height,
            "head_hash": chain.head.hash.hex(),
            "head_time_ms": chain.head.header.time_ms,
            "finalized_height": chain.height,  # a block is committed only with its certificate
            "authorities": [a.hex() for a in chain.authorities()],
            # the round being decided at height + 1 (its proposer: authorities[(height + 1 +
            # round) mod N]); 0 on a node that only follows
            "round": self._round(chain.height + 1),
            "authorities_with_evidence": sorted({e["authority"] for e in chain.evidence()}),
            "mempool_size": len(self.node.mempool or ()),
            # accepted transactions dropped, ever (each with its reason: get_tx_status)
            "dropped_txs": self.node.mempool.dropped_total
            if self.node.mempool is not None else 0,
            "committed_txs": chain.committed_txs,
            # its committed transactions and the wall-clock ms just after its latest commit
            # (None before its first since it started): an exact point of its progress
            "last_commit": self._last_commit(),
            # transaction signatures this node has checked: about one per transaction
            # (a bench checks this against the readings it finalized)
            "signatures_verified": self.node.mempool.verifier.verified_count
            if self.node.mempool is not None else 0,
            "peers": self._peers(),
            "p2p_address": self.node.p2p.address if self.node.p2p else None,
            "sync_target": self.node.sync.target if self.node.sync else None,
            "catch_ups": list(self.node.sync.catch_ups) if self.node.sync else [],
            # from a reading's own timestamp (its device's clock) to this node
            "gossip_delay_ms": self.node.gossip_delay.summary(),
            "commit_delay_ms": self.node.commit_delay.summary(),
            # equivocations this node saw in consensus (on the ledger: get_evidence)
            "evidence_seen": self.node.consensus.evidence
            if self.node.consensus is not None else [],
        }

    def _round(self, height: int) -> int:
        machine = self.node.consensus.machine if self.node.consensus is not None else None
        return machine.round if machine is not None and machine.height == height else 0

    def _last_commit(self) -> dict[str, int] | None:
        if self.node.last_commit is None:
            return None
        committed_txs, time_ms = self.node.last_commit
        return {"committed_txs": committed_txs, "time_ms": time_ms}

    async def subscribe_blocks(self, conn: Connection) -> str:
        """Push a ``block`` notification (header fields and tx ids) for each committed block;
        a subscriber that falls behind gets ``subscription_ended`` and no more blocks."""
        feed = self.node.feed
        if feed is None:
            raise RpcError(INVALID_REQUEST, "node is starting")
        blocks = feed.subscribe()

        async def forward() -> None:
            with blocks:
                async for block in blocks:
                    if not await conn.notify("block", block_to_json(block, full=False)):
                        return
            # the feed dropped this subscriber: it fell a queue's worth of blocks behind
            await conn.notify("subscription_ended", {
                "subscription": "blocks",
                "reason": f"more than {SUBSCRIBER_QUEUE_BLOCKS} blocks behind; subscribe "
                          "again, and ask get_tx_status for what may have been missed"})

        conn.start_soon(forward)
        return "blocks"

    def _mempool(self) -> Any:
        if self.node.mempool is None:
            raise RpcError(INVALID_REQUEST, "node is starting")
        return self.node.mempool

    def _chain(self) -> Any:
        if self.node.chain is None:
            raise RpcError(INVALID_REQUEST, "node is starting")
        return self.node.chain

    async def handle_binary(self, frame: bytes) -> bytes:
        """Answer a msgpack binary frame of transactions (see the module docstring)."""
        try:
            value = codec.decode(frame)
            if (type(value) is not list or len(value) != 2 or type(value[0]) is not int
                    or type(value[1]) is not list):
                raise codec.DecodeError("frame must be [request_id, [tx, ...]]")
            if len(value[1]) > MAX_BATCH_TXS:
                raise codec.DecodeError(f"at most {MAX_BATCH_TXS} transactions per frame")
        except codec.DecodeError as exc:
            return codec.encode([0, [[INVALID_REQUEST, str(exc)]]])
        request_id, items = value
        results: list[list[Any]] = []
        raws: list[bytes] = []
        where: list[int] = []
        for raw in items:
            if type(raw) is not bytes:
                results.append([INVALID_REQUEST, "each transaction must be a byte string"])
            else:
                where.append(len(results))
                results.append([])
                raws.append(raw)
        for i, admitted in zip(where, await self.node.submit_many(raws, reading_only=True),
                               strict=True):
            results[i] = ([0, admitted.id] if isinstance(admitted, SignedTx)
                          else [admitted.code, str(admitted)])
        return codec.encode([request_id, results])
