"""The client API against small fakes of its narrow interfaces (api/interfaces.py): every
method answers with nothing but what those interfaces give, so the API needs nothing else
of a node."""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from iomtnode.admission.service import AdmissionStats
from iomtnode.api.interfaces import Admitted, NodeStatus
from iomtnode.api.jsonrpc import INVALID_PARAMS, RpcError
from iomtnode.api.methods import NOT_FOUND, TX_DROPPED, ClientApi
from iomtnode.chain.chain import ChainStats
from iomtnode.consensus.settings import ConsensusStats
from iomtnode.core import codec
from iomtnode.core.block import Commit
from iomtnode.core.crypto import SigningKey
from iomtnode.core.errors import RuleError, UnknownDeviceError
from iomtnode.core.ledger import Device
from iomtnode.core.tx import Reading, SignedTx, decode_tx
from iomtnode.metrics import LatencyWindow, NodeStats
from iomtnode.p2p.peer import Traffic
from iomtnode.p2p.records import PeerRecord
from iomtnode.p2p.stats import P2PStats, PeerStats
from iomtnode.p2p.transport import ListenError
from iomtnode.sync.progress import SyncStats

from ..core.sealkit import PROFILE, sealed_reading

DEVICE = SigningKey.generate()
KNOWN = b"\x01" * 32
PEER = b"\x02" * 32
EMPTY = {"p50": None, "p99": None, "max": None, "samples": 0}
# every key of ``status``: scripts, the benchmark and localnet read them
STATUS_KEYS = [
    "chain_id", "genesis_hash", "node_id", "version", "height", "head_hash", "head_time_ms",
    "finalized_height", "authorities", "round", "authorities_with_evidence", "mempool_size",
    "dropped_txs", "committed_txs", "received_txs", "rejected_txs", "last_commit",
    "signatures_verified", "peers", "p2p_address", "sync_target", "catch_ups",
    "gossip_delay_ms", "commit_delay_ms", "delivery_delay_ms", "evidence_seen",
]


def reading(seq: int) -> SignedTx:
    return sealed_reading(DEVICE, seq, int(time.time() * 1000), "iomt-test")


class FakeSubmitter:
    """Admits a reading with an even sequence number; refuses odd ones."""

    def __init__(self) -> None:
        self.kept: list[SignedTx] = []

    async def submit(self, raw: bytes, *, reading_only: bool = False) -> SignedTx:
        return self.admit(raw)

    def admit(self, raw: bytes) -> SignedTx:
        tx = decode_tx(raw)
        assert isinstance(tx.body, Reading)
        if tx.body.seq % 2:
            raise UnknownDeviceError("device is not registered")
        self.kept.append(tx)
        return tx

    async def submit_many(self, raws: Sequence[bytes], *, reading_only: bool = False
                          ) -> list[Admitted]:
        results: list[Admitted] = []
        for raw in raws:
            try:
                results.append(self.admit(raw))
            except RuleError as exc:
                results.append(exc)
        return results


class FakeChain:
    chain_id = "iomt-test"

    def authorities(self) -> tuple[bytes, ...]:
        return (PEER,)

    def block_parts_at(self, height: int) -> tuple[bytes, list[bytes]]:
        raise KeyError(f"no block at height {height}")

    def height_of(self, block_hash: bytes) -> int:
        raise KeyError(f"no block with hash {block_hash.hex()}")

    def commit_at(self, height: int) -> Commit | None:
        return None

    def receipt(self, tx_id: bytes) -> dict[str, Any] | None:
        return {"tx_id": tx_id.hex()} if tx_id == KNOWN else None

    def device(self, key: bytes) -> tuple[Device, int] | None:
        if key != DEVICE.public:
            return None
        return Device(key, b"\x03" * 32, PROFILE, "active", 4, b""), 7

    def participant(self, key: bytes) -> bool:
        return key in (PEER, DEVICE.public, b"\x03" * 32)

    def authority_report(self) -> dict[str, Any]:
        return {"authorities": [], "scheduled": [], "pending_votes": []}

    def evidence(self) -> list[dict[str, Any]]:
        return [{"authority": PEER.hex(), "height": 3}]


class FakeTxs:
    def tx_status(self, tx_id: bytes) -> dict[str, Any]:
        if tx_id == b"\x04" * 32:
            return {"id": tx_id.hex(), "state": "dropped", "height": 9, "code": 1022,
                    "reason": "stale"}
        return {"id": tx_id.hex(), "state": "unknown"}


class FakePeers:
    def __init__(self) -> None:
        self.refused: frozenset[bytes] = frozenset()
        self.banned: list[tuple[bytes, float]] = []

    def stats(self) -> P2PStats:
        return P2PStats("127.0.0.1:7000", (PeerStats(PEER, "10.0.0.2:7000", True, "10.0.0.1"),),
                        self.refused, {"status": Traffic(1, 10, 2, 20)}, 0, 0, 0, {})

    def address_book(self) -> Mapping[bytes, PeerRecord]:
        return {PEER: PeerRecord(PEER, ("10.0.0.2:7000",), 5, 0, b"")}

    def disconnect(self, node_id: bytes, reason: str) -> bool:
        return node_id == PEER

    def ban(self, node_id: bytes, seconds: float, reason: str) -> None:
        self.banned.append((node_id, seconds))

    def set_refused(self, node_ids: set[bytes]) -> None:
        self.refused = frozenset(node_ids)

    async def move(self, address: str) -> str:
        if address.endswith(":1"):
            raise OSError("address in use")
        if address.endswith(":2"):  # as the TCP transport says it
            raise ListenError(98, f"cannot listen on {address}: Address already in use")
        return address


class FakeStatus:
    def __init__(self, deciding: tuple[int, int] | None = None) -> None:
        self.deciding = deciding

    def status(self) -> NodeStatus:
        return NodeStatus(
            b"\x05" * 32, "1.2.3",
            ChainStats("iomt-test", b"\x06" * 32, 10, b"\x07" * 32, 1234, (KNOWN,), (KNOWN,),
                       42),
            AdmissionStats(3, 1, 50, 0, 0, 100, {"client": 7, "peer": 2},
                           {"stale_sequence": 1}, {}),
            FakePeers().stats(),
            SyncStats(12, ({"from": 1, "to": 12, "txs": 5, "seconds": 0.5},), 11, 5),
            ConsensusStats(self.deciding, ({"authority": KNOWN.hex()},), 0, 0),
            NodeStats(EMPTY, EMPTY, EMPTY, (42, 99), 0.0, LatencyWindow().histogram(),
                      LatencyWindow().histogram()))


def make_api(**overrides: Any) -> ClientApi:
    parts: dict[str, Any] = dict(submitter=FakeSubmitter(), chain=FakeChain(), txs=FakeTxs(),
                                 peers=FakePeers(), status=FakeStatus())
    return ClientApi(**(parts | overrides))


def test_the_api_is_given_only_its_narrow_interfaces():
    assert list(inspect.signature(ClientApi).parameters) == [
        "submitter", "chain", "txs", "peers", "status", "groups", "now_ms"]  # and a clock


async def test_submitting_returns_ids_and_the_rule_that_refused():
    api = make_api()
    ok, refused = reading(2), reading(3)
    assert await api.submit_reading(ok.raw.hex()) == {"id": ok.id.hex()}
    assert await api.submit_tx(ok.raw.hex()) == {"id": ok.id.hex(), "type": "reading"}
    batch = await api.submit_readings([ok.raw.hex(), refused.raw.hex(), "zz"])
    assert batch["accepted"] == 1 and batch["rejected"] == 2
    assert batch["results"][1]["error"]["code"] == UnknownDeviceError.code
    assert batch["results"][2]["error"]["code"] == INVALID_PARAMS
    reply = codec.decode(await api.handle_binary(codec.encode([7, [ok.raw, refused.raw]])))
    assert reply == [7, [[0, ok.id], [UnknownDeviceError.code, "device is not registered"]]]


async def test_queries_answer_from_the_chain_and_tx_status():
    api = make_api()
    device = await api.get_device(DEVICE.public.hex())
    assert (device["status"], device["last_seq"], device["successor"]) == ("active", 7, None)
    assert (device["stream"], device["profile_hash"]) == ((b"\x03" * 32).hex(), PROFILE.hex())
    assert "patient" not in device and "device_class" not in device  # nothing in clear
    assert await api.get_receipt(KNOWN.hex()) == {"tx_id": KNOWN.hex()}
    assert (await api.get_tx_status(id=PEER.hex()))["state"] == "unknown"
    assert [s["state"] for s in await api.get_tx_status(ids=[PEER.hex(), KNOWN.hex()])] == [
        "unknown", "unknown"]
    assert (await api.get_evidence())[0]["height"] == 3
    assert "pending_votes" in await api.get_authorities()
    for call, code in [(api.get_block(height=5), NOT_FOUND),
                       (api.get_device(PEER.hex()), NOT_FOUND),
                       (api.get_receipt((b"\x04" * 32).hex()), TX_DROPPED)]:
        with pytest.raises(RpcError) as info:
            await call
        assert info.value.code == code


async def test_status_is_composed_of_the_service_records():
    status = await make_api().status()
    assert list(status) == STATUS_KEYS
    assert status["last_commit"] == {"committed_txs": 42, "time_ms": 99}
    assert status["peers"] == [{"node_id": PEER.hex(), "address": "10.0.0.2:7000",
                                "outbound": True}]
    assert (status["mempool_size"], status["dropped_txs"], status["signatures_verified"]) == (
        3, 1, 50)
    assert (status["received_txs"], status["rejected_txs"]) == (9, 1)
    assert (status["sync_target"], status["p2p_address"]) == (12, "127.0.0.1:7000")
    assert status["authorities_with_evidence"] == [KNOWN.hex()]
    assert status["evidence_seen"] == [{"authority": KNOWN.hex()}]


@pytest.mark.parametrize(("deciding", "round_"), [
    ((11, 3), 3),  # the round being decided at height + 1
    ((10, 5), 0),  # a round of another height: not this one
    (None, 0),  # following only
])
async def test_status_reports_the_round_being_decided_at_the_next_height(deciding, round_):
    """A script (the chaos runner's kill-proposer) tells the proposer from it:
    authorities[(height + 1 + round) mod N]."""
    assert (await make_api(status=FakeStatus(deciding)).status())["round"] == round_


async def test_admin_methods_work_through_peer_admin():
    peers = FakePeers()
    admin = make_api(peers=peers).admin_methods()
    listed = await admin["admin_peers"]()
    assert listed["address_book"] == {PEER.hex(): {"addresses": ["10.0.0.2:7000"], "seq": 5}}
    assert listed["counters"]["status"]["bytes_out"] == 20
    assert listed["observed_addresses"] == ["10.0.0.1"]
    assert await admin["admin_disconnect_peer"](PEER.hex()) == {"disconnected": True}
    await admin["admin_ban_peer"](PEER.hex(), 60)
    assert peers.banned == [(PEER, 60)]
    await admin["admin_refuse_peers"]([PEER.hex()])
    assert (await admin["admin_peers"]())["refused"] == [PEER.hex()]
    assert await admin["admin_set_listen"]("0.0.0.0:7001") == {"p2p_address": "0.0.0.0:7001"}
    with pytest.raises(RpcError) as info:
        await admin["admin_set_listen"]("0.0.0.0:1")
    assert info.value.code == INVALID_PARAMS
    with pytest.raises(RpcError) as info:
        await admin["admin_set_listen"]("0.0.0.0:2")
    assert info.value.message == "cannot listen on 0.0.0.0:2: Address already in use"
