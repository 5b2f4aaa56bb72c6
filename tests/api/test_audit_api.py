"""A patient's records, the audit trail and the public answers through a real node's API (one
authority, LevelDB in tmp_path, the memory network, a virtual clock): the patient and a live
grantee read, everyone else is refused and every call is in the log; get_audit_log gives every
leaf and only the caller's records; get_audit_anchors gives each anchor with a receipt that
verifies; and get_block and get_receipt never carry a sidecar.

S and T are streams with an admitted device each; X is a key the ledger does not know.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio

from iomtnode.api.access import NO_CONSENT
from iomtnode.api.auth import FORBIDDEN
from iomtnode.api.jsonrpc import INVALID_PARAMS
from iomtnode.api.records import NOT_FOUND
from iomtnode.audit.record import AUDIT_ANCHOR_S, decode_record, leaf
from iomtnode.client import ApiClient, ApiError
from iomtnode.core.crypto import SigningKey
from iomtnode.core.payload import wrap_hash, wraps_hash
from iomtnode.core.receipt import verify_receipt
from iomtnode.core.tx import (
    FORWARD,
    AuditAnchor,
    Grant,
    RevokeGrant,
    SignedTx,
    decode_tx,
    sign_tx,
)
from tests.core.sealkit import EPOCH_PUBLIC, NO_WRAPS, admit, announce, sealed_reading
from tests.node.harness import Net, Running, wait_for

pytestmark = pytest.mark.timeout(120)


@dataclass
class Chain:
    net: Net
    node: Running
    stream: SigningKey
    other: SigningKey
    device: SigningKey

    @asynccontextmanager
    async def client(self, *keys: SigningKey) -> AsyncIterator[ApiClient]:
        """A client that proved ``keys``."""
        async with self.net.client(0) as client:
            for key in keys:
                await client.authenticate(key)
            yield client

    async def commit(self, tx: SignedTx) -> None:
        async with self.client() as client:
            await client.call("submit_tx", tx=tx.raw.hex())
        await wait_for(lambda: self.node.chain.receipt(tx.id) is not None,
                       f"{tx.kind_name} committed")


@asynccontextmanager
async def one_node(tmp_path, nursery) -> AsyncIterator[Chain]:
    net = Net(tmp_path, 1)
    node = await net.start(nursery, 0)
    chain = Chain(net, node, SigningKey.generate(), SigningKey.generate(), SigningKey.generate())
    authority = net.keys[0]
    await chain.commit(admit(authority, chain.device.public, chain.stream.public, net.chain_id))
    await chain.commit(admit(authority, SigningKey.generate().public, chain.other.public,
                             net.chain_id))
    yield chain


async def audited(chain: Chain, *streams: bytes) -> None:
    for stream in streams:
        await chain.node.services.audit.record(
            callers=frozenset({b"\x07" * 32}), stream=stream, grant_tx=b"",
            method="get_patient_records", code=NO_CONSENT, tx_ids=())


async def test_the_log_gives_every_leaf_and_only_the_callers_records(tmp_path, nursery,
                                                                    autojump_clock):
    async with one_node(tmp_path, nursery) as chain:
        s, t = chain.stream.public, chain.other.public
        await audited(chain, s, t, s)
        node = chain.node.key.public.hex()
        async with chain.client(chain.stream) as client:
            answer = await client.call("get_audit_log", node=node, first=0, count=3)
        assert len(answer["leaves"]) == 3
        assert sorted(answer["records"]) == ["0", "2"]
        for index, raw in answer["records"].items():
            record = decode_record(bytes.fromhex(raw))
            assert record.stream == s and record.index == int(index)
            assert leaf(record).hex() == answer["leaves"][int(index)]
        async with chain.client(chain.stream, chain.other) as client:
            both = await client.call("get_audit_log", node=node, first=1, count=2)
        assert sorted(both["records"]) == ["1", "2"] and both["leaves"] == answer["leaves"][1:]


async def test_the_log_answers_a_stream_or_an_authority_and_nobody_else(tmp_path, nursery,
                                                                        autojump_clock):
    async with one_node(tmp_path, nursery) as chain:
        await audited(chain, chain.stream.public)
        node = chain.node.key.public.hex()
        for keys in ((), (SigningKey.generate(),), (chain.device,)):
            async with chain.client(*keys) as client:
                with pytest.raises(ApiError) as refused:
                    await client.call("get_audit_log", node=node, first=0, count=1)
                assert refused.value.code == FORBIDDEN
        async with chain.client(chain.net.keys[0]) as client:  # an authority: leaves only
            answer = await client.call("get_audit_log", node=node, first=0, count=1)
            assert len(answer["leaves"]) == 1 and answer["records"] == {}
            to_end = await client.call("get_audit_log", node=node, first=0, count=2)
            assert to_end["leaves"] == answer["leaves"]  # a range past the end stops there
            at_end = await client.call("get_audit_log", node=node, first=1, count=1)
            assert at_end == {"leaves": [], "records": {}}
            with pytest.raises(ApiError) as past:
                await client.call("get_audit_log", node=node, first=2, count=1)
            assert past.value.code == INVALID_PARAMS
            with pytest.raises(ApiError) as elsewhere:
                await client.call("get_audit_log", node=(b"\x01" * 32).hex(), first=0, count=1)
            assert elsewhere.value.code == NOT_FOUND


async def test_anchors_are_public_with_receipts_that_verify(tmp_path, nursery, autojump_clock):
    async with one_node(tmp_path, nursery) as chain:
        me = chain.node.key.public
        await audited(chain, chain.stream.public, chain.other.public)
        await wait_for(lambda: chain.node.chain.audit_anchor_next(me) == 2, "anchored",
                       AUDIT_ANCHOR_S + 15)
        async with chain.client() as client:
            [anchor] = await client.call("get_audit_anchors", node=me.hex())
            assert await client.call("get_audit_anchors", node=me.hex(), first=2) == []
        assert (anchor["first"], anchor["count"]) == (0, 2)
        tx, header = verify_receipt(anchor["receipt"], chain.net.genesis)
        assert tx.id.hex() == anchor["tx_id"] and header.height == anchor["height"]
        assert tx.body == AuditAnchor(me, me, 0, 2, bytes.fromhex(anchor["root"]))


async def test_blocks_and_receipts_carry_no_sidecar(tmp_path, nursery, autojump_clock):
    async with one_node(tmp_path, nursery) as chain:
        await chain.commit(announce(chain.stream, chain.net.chain_id))
        reading = sealed_reading(chain.device, 1, chain.net.now_ms(), chain.net.chain_id)
        await chain.commit(reading)
        height = chain.node.chain.receipt(reading.id)["height"]
        assert reading.sidecar in chain.node.chain.block_at(height).encode()  # the node has it
        async with chain.client() as client:
            block = json.dumps(await client.call("get_block", height=height))
            receipt = json.dumps(await client.call("get_receipt", id=reading.id.hex()))
        for answer in (block, receipt):
            assert reading.leaf_bytes.hex() in answer  # the signed reading is there ...
            assert reading.sidecar.hex() not in answer  # ... its sealed payload is not
        assert decode_tx(reading.leaf_bytes).sidecar == b""


def grant(stream: SigningKey, grantee: bytes, epoch: int, expires_ms: int, chain_id: str,
          mode: int = FORWARD) -> SignedTx:
    wrap = b"wrap for " + grantee[:4] + epoch.to_bytes(8, "big")
    body = Grant(stream.public, grantee, b"\x42" * 32, expires_ms, epoch, mode,
                 wrap_hash(wrap), epoch)
    return sign_tx(body, stream, chain_id, wrap)


def revoke(stream: SigningKey, grantee: bytes, epoch: int, chain_id: str) -> SignedTx:
    body = RevokeGrant(stream.public, grantee, 1, epoch, EPOCH_PUBLIC, [], wraps_hash(NO_WRAPS))
    return sign_tx(body, stream, chain_id, NO_WRAPS)


async def records(chain: Chain, *keys: SigningKey) -> dict:
    async with chain.client(*keys) as client:
        return await client.call("get_patient_records", stream=chain.stream.public.hex())


async def test_the_patient_and_a_live_grantee_read_and_nobody_else(tmp_path, nursery,
                                                                  autojump_clock):
    async with one_node(tmp_path, nursery) as chain:
        net, s = chain.net, chain.stream
        grantee, late = SigningKey.generate(), SigningKey.generate()
        await chain.commit(announce(s, net.chain_id, 1))
        first = sealed_reading(chain.device, 1, net.now_ms(), net.chain_id, epoch=1)
        await chain.commit(first)
        await chain.commit(announce(s, net.chain_id, 2))
        granted = grant(s, grantee.public, 2, net.now_ms() + 3_600_000, net.chain_id)
        short = grant(s, late.public, 2, net.now_ms() + 5_000, net.chain_id)
        await chain.commit(granted)
        await chain.commit(short)
        second = sealed_reading(chain.device, 2, net.now_ms(), net.chain_id, epoch=2)
        await chain.commit(second)

        own = await records(chain, s)
        assert [(r["tx"], r["sidecar"]) for r in own["readings"]] == [
            (first.leaf_bytes.hex(), first.sidecar.hex()),
            (second.leaf_bytes.hex(), second.sidecar.hex())]
        assert own["wraps"] == []
        mine = await records(chain, grantee)  # forward from epoch 2: the second only
        assert [r["tx"] for r in mine["readings"]] == [second.leaf_bytes.hex()]
        assert [(w["epoch"], w["tx_id"]) for w in mine["wraps"]] == [(2, granted.id.hex())]

        await trio.sleep(6)  # the short grant expires (the node's clock is the virtual one)
        await chain.commit(revoke(s, grantee.public, 3, net.chain_id))
        for keys in ((grantee,), (late,), (SigningKey.generate(),), (), (net.keys[0],)):
            async with chain.client(*keys) as client:
                with pytest.raises(ApiError) as refused:
                    await client.call("get_patient_records", stream=s.public.hex())
            assert (refused.value.code, refused.value.message) == (
                NO_CONSENT, "no consent for this stream")

        log = chain.node.services.audit
        leaves, found = await log.log_range(0, log.next_index, frozenset({s.public}))
        calls = [decode_record(raw) for raw in found.values()]
        assert [(c.callers, c.grant_tx, c.code, c.tx_ids) for c in calls] == [
            ((s.public,), b"", 0, (first.id, second.id)),
            ((grantee.public,), granted.id, 0, (second.id,)),
            ((grantee.public,), b"", NO_CONSENT, ()),
            ((late.public,), b"", NO_CONSENT, ()),
            (calls[4].callers, b"", NO_CONSENT, ()),
            ((), b"", NO_CONSENT, ()),
            ((net.keys[0].public,), b"", NO_CONSENT, ()),
        ]
        assert len(leaves) == len(calls)


async def test_a_refused_read_on_a_node_is_in_its_audit_log(tmp_path, nursery, autojump_clock):
    async with one_node(tmp_path, nursery) as chain:
        stranger = SigningKey.generate()
        async with chain.client(stranger) as client:
            with pytest.raises(ApiError) as refused:
                await client.call("get_patient_records", stream=chain.stream.public.hex())
        assert refused.value.code == NO_CONSENT
        async with chain.client(chain.stream) as client:
            answer = await client.call("get_audit_log", node=chain.node.key.public.hex(),
                                       first=0, count=1)
        [record] = [decode_record(bytes.fromhex(r)) for r in answer["records"].values()]
        assert (record.callers, record.stream, record.code, record.method) == (
            (stranger.public,), chain.stream.public, NO_CONSENT, "get_patient_records")


async def test_a_device_checks_the_epoch_it_is_given_by_the_streams_signature(
        tmp_path, nursery, autojump_clock):
    async with one_node(tmp_path, nursery) as chain:
        net, s = chain.net, chain.stream
        async with chain.client() as client:
            with pytest.raises(ApiError) as none_yet:
                await client.call("get_stream_epoch", stream=s.public.hex())
            assert none_yet.value.code == NOT_FOUND
        await chain.commit(announce(s, net.chain_id, 1))
        async with chain.client() as client:
            epoch = await client.call("get_stream_epoch", stream=s.public.hex())
            stream = await client.call("get_stream", stream=s.public.hex())
        tx = decode_tx(bytes.fromhex(epoch["announcement"]))
        tx.verify(net.chain_id)  # signed by the stream's key: a node cannot forge it
        assert (tx.body.stream, tx.body.epoch, epoch["epoch"]) == (s.public, 1, 1)
        assert (stream["epoch"], stream["grants"], stream["erased"]) == (1, [], False)
