"""The client API against a real node: every bad input gets its precise error, and the
connection and the node keep working after it."""

from __future__ import annotations

import json
import time

import pytest
import trio
from trio_websocket import open_websocket_url

from iomtnode.api.connection import MAX_SUBSCRIPTIONS
from iomtnode.api.jsonrpc import NESTED_TOO_DEEP, TOO_MANY_SUBSCRIPTIONS
from iomtnode.client import ApiClient, ApiError, open_client
from iomtnode.core import codec
from iomtnode.core.crypto import SigningKey
from iomtnode.core.receipt import verify_receipt
from iomtnode.core.tx import RevokeDevice, decode_tx, sign_tx, stripped

from ..core import sealkit as kit
from ..core.helpers import longer_form
from .test_client_api import STATUS_KEYS

pytestmark = pytest.mark.timeout(60)


def now_ms() -> int:
    return int(time.time() * 1000)


async def admit(client: ApiClient, rn, device: SigningKey, stream: SigningKey, *,
                epoch: bool = True) -> None:
    """Admit ``device`` to ``stream`` and wait until it is active (as the authority:
    get_device needs a party's key), then (with ``epoch``) announce the stream's epoch 1 and
    wait until it is committed: a stream's readings are refused until it has one."""
    await client.authenticate(rn.authority)
    tx = kit.admit(rn.authority, device.public, stream.public, rn.chain_id)
    await client.call("submit_tx", tx=tx.raw.hex())
    await wait_device(client, device)
    if epoch:
        announcement = kit.announce(stream, rn.chain_id)
        await client.call("submit_tx", tx=announcement.raw.hex())
        await wait_committed(client, announcement.id.hex())


async def wait_committed(client: ApiClient, tx_id: str) -> None:
    with trio.fail_after(10):
        while True:
            if (await client.call("get_tx_status", id=tx_id))["state"] == "committed":
                return
            await trio.sleep(0.02)


async def wait_device(client: ApiClient, device: SigningKey, status: str = "active") -> dict:
    with trio.fail_after(10):
        while True:
            try:
                info = await client.call("get_device", id=device.public.hex())
                if info["status"] == status:
                    return info
            except ApiError as exc:
                assert exc.code == 1030
            await trio.sleep(0.02)


def reading(rn, device: SigningKey, seq: int, ts: int | None = None, *, chain_id=None,
            epoch: int = 1) -> str:
    return kit.sealed_reading(device, seq, ts if ts is not None else now_ms(),
                              chain_id or rn.chain_id, epoch=epoch).raw.hex()


async def expect_error(client: ApiClient, code: int, method: str, **params) -> str:
    with pytest.raises(ApiError) as info:
        await client.call(method, **params)
    assert info.value.code == code, info.value.message
    status = await client.call("status")  # the same connection still answers
    assert status["chain_id"] == "iomt-test"
    return info.value.message


async def test_status_has_the_documented_keys(running_node):
    async with open_client(running_node.url) as client:
        status = await client.call("status")
    for key in ("chain_id", "height", "head_hash", "finalized_height", "authorities",
                "mempool_size", "peers"):
        assert key in status
    assert status["authorities"] == [running_node.authority.public.hex()]
    assert status["finalized_height"] == status["height"]
    assert list(status) == STATUS_KEYS  # every key, in order: scripts and tools read them
    assert (status["round"], status["peers"], status["sync_target"], status["catch_ups"],
            status["evidence_seen"], status["authorities_with_evidence"]) == (0, [], 0, [], [], [])
    assert status["p2p_address"].startswith("127.0.0.1:")


async def test_status_says_when_the_latest_commit_was(running_node):
    rn = running_node
    device, stream = SigningKey.generate(), SigningKey.generate()
    async with open_client(rn.url) as client:
        started = now_ms()
        await admit(client, rn, device, stream)  # waits until the admission is committed
        status = await client.call("status")
    last = status["last_commit"]
    assert last["committed_txs"] == status["committed_txs"] >= 1
    assert started <= last["time_ms"] <= now_ms()


async def epoch_and_payload_refusals(client, rn, device, stream) -> None:
    """An admitted ``device`` of a ``stream`` with no epoch yet: its readings are refused
    until the stream announces one (announced here), then for an epoch not announced and a
    sealed payload left out, cut short or not the one the body commits to."""
    # the stream has announced no epoch: there is no key its readings could be sealed to
    msg = await expect_error(client, 1025, "submit_reading", tx=reading(rn, device, 1))
    assert "no epoch" in msg
    announcement = kit.announce(stream, rn.chain_id)
    await client.call("submit_tx", tx=announcement.raw.hex())
    await wait_committed(client, announcement.id.hex())
    # an epoch the stream has not announced
    msg = await expect_error(client, 1025, "submit_reading",
                             tx=reading(rn, device, 1, epoch=2))
    assert "not announced" in msg
    # the sealed payload left out, cut short, or not the one the body commits to
    whole = kit.sealed_reading(device, 1, now_ms(), rn.chain_id)
    msg = await expect_error(client, 1026, "submit_reading", tx=stripped(whole).raw.hex())
    assert "none was sent" in msg
    short = codec.encode([whole.body_bytes, whole.signature, whole.sidecar[:-1]])
    await expect_error(client, 1026, "submit_reading", tx=short.hex())
    other = kit.sidecar_for(device.public, 99)
    swapped = codec.encode([whole.body_bytes, whole.signature, other])
    msg = await expect_error(client, 1027, "submit_reading", tx=swapped.hex())
    assert "commitment" in msg


async def test_chain_rule_errors_have_codes_and_reasons(running_node):
    rn = running_node
    device, stream, stranger = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    async with open_client(rn.url) as client:
        msg = await expect_error(client, 1002, "submit_reading", tx=reading(rn, device, 1))
        assert "not admitted" in msg
        await admit(client, rn, device, stream, epoch=False)
        await epoch_and_payload_refusals(client, rn, device, stream)
        first_ms = now_ms()
        accepted = await client.call("submit_reading", tx=reading(rn, device, 1, first_ms))
        assert len(accepted["id"]) == 64
        # the same sequence number again (pending) in another reading: a later timestamp,
        # else within the same millisecond it is the same transaction ("already pending")
        msg = await expect_error(client, 1022, "submit_reading",
                                 tx=reading(rn, device, 1, first_ms + 1))
        assert "already used" in msg
        # a signature made for another chain does not verify here
        msg = await expect_error(client, 1001, "submit_reading",
                                 tx=reading(rn, device, 2, chain_id="other-chain"))
        assert "signature" in msg
        # a timestamp an hour ahead
        msg = await expect_error(client, 1005, "submit_reading",
                                 tx=reading(rn, device, 2, now_ms() + 3_600_000))
        assert "ahead" in msg
        # garbage bytes and bad hex
        await expect_error(client, 1021, "submit_reading", tx="deadbeef")
        await expect_error(client, -32602, "submit_reading", tx="not hex")
        # not a reading through submit_reading
        admission = kit.admit(rn.authority, stranger.public, stream.public, rn.chain_id)
        await expect_error(client, 1021, "submit_reading", tx=admission.raw.hex())
        # a stranger cannot admit
        fake = kit.admit(stranger, SigningKey.generate().public, stream.public, rn.chain_id)
        await expect_error(client, 1006, "submit_tx", tx=fake.raw.hex())
        # revoke, then readings are refused as revoked
        revoke = sign_tx(RevokeDevice(rn.authority.public, device.public, "lost", 1),
                         rn.authority, rn.chain_id)
        await client.call("submit_tx", tx=revoke.raw.hex())
        await wait_device(client, device, "revoked")
        msg = await expect_error(client, 1003, "submit_reading", tx=reading(rn, device, 5))
        assert "revoked" in msg


async def test_batch_reports_each_reading(running_node):
    rn = running_node
    device, stream = SigningKey.generate(), SigningKey.generate()
    async with open_client(rn.url) as client:
        await admit(client, rn, device, stream, epoch=False)
        await epoch_and_payload_refusals(client, rn, device, stream)
        second = reading(rn, device, 2, 1000)
        txs = [reading(rn, device, 1), second, second, reading(rn, device, 2, 2000), "zz"]
        result = await client.call("submit_readings", txs=txs)
        assert result["accepted"] == 2 and result["rejected"] == 3
        # an exact copy is a duplicate; another reading with a used number is a replay
        assert [r.get("error", {}).get("code") for r in result["results"]] == [
            None, None, 1008, 1022, -32602]
        await expect_error(client, -32602, "submit_readings", txs=[])


async def test_protocol_errors_keep_the_connection(running_node):
    async with open_websocket_url(running_node.url) as ws:
        async def ask(text: str) -> dict:
            await ws.send_message(text)
            with trio.fail_after(5):
                return json.loads(await ws.get_message())

        assert (await ask("{not json"))["error"]["code"] == -32700
        assert (await ask('{"jsonrpc":"2.0","id":1,"method":"nope"}'))["error"]["code"] == -32601
        bad = await ask('{"jsonrpc":"2.0","id":2,"method":"get_block","params":{"x":1}}')
        assert bad["error"]["code"] == -32602
        assert (await ask('{"jsonrpc":"1.0","id":3,"method":"status"}'))["error"]["code"] == -32600
        big = json.dumps({"jsonrpc": "2.0", "id": 4, "method": "submit_reading",
                          "params": {"tx": "00" * 600_000}})
        reply = await ask(big)
        assert reply["error"]["code"] == -32001 and "1048576" in reply["error"]["message"]
        ok = await ask('{"jsonrpc":"2.0","id":5,"method":"status"}')
        assert ok["result"]["chain_id"] == "iomt-test"


async def test_binary_frames_for_devices(running_node):
    rn = running_node
    device, stream = SigningKey.generate(), SigningKey.generate()
    async with open_client(rn.url) as client:
        await admit(client, rn, device, stream, epoch=False)
        await epoch_and_payload_refusals(client, rn, device, stream)
        raws = [bytes.fromhex(reading(rn, device, s, 1000 + i)) for i, s in enumerate((1, 2, 2))]
        results = await client.submit_binary([*raws, b"junk"])
        assert [r[0] for r in results] == [0, 0, 1022, 1021]
        assert results[0][1] == decode_tx(raws[0]).id
    async with open_websocket_url(rn.url) as ws:
        await ws.send_message(b"\xc1garbage")
        with trio.fail_after(5):
            reply = codec.decode(await ws.get_message())
        assert reply[0] == 0 and reply[1][0][0] == -32600
        # nothing hashes a frame, so its own form is not checked; each transaction's is
        ok = bytes.fromhex(reading(rn, device, 3, 2000))
        loose = longer_form(bytes.fromhex(reading(rn, device, 4, 2001)))
        await ws.send_message(longer_form(codec.encode([7, [ok, loose]])))
        with trio.fail_after(5):
            reply = codec.decode(await ws.get_message())
        assert reply[0] == 7 and reply[1][0] == [0, decode_tx(ok).id]
        assert reply[1][1][0] == 1021 and "not canonical" in reply[1][1][1]


async def test_receipt_block_and_device_queries(running_node):
    rn = running_node
    device, stream = SigningKey.generate(), SigningKey.generate()
    async with open_client(rn.url) as client:
        await admit(client, rn, device, stream, epoch=False)
        await epoch_and_payload_refusals(client, rn, device, stream)
        sent_raw = reading(rn, device, 1)
        tx_id = (await client.call("submit_reading", tx=sent_raw))["id"]
        with trio.fail_after(10):
            while True:
                try:
                    receipt = await client.call("get_receipt", id=tx_id)
                    break
                except ApiError as exc:
                    assert exc.code == 1030
                    await trio.sleep(0.02)
        proven, header = verify_receipt(receipt, rn.node.genesis)
        assert header.height == receipt["height"]
        assert proven.id.hex() == tx_id
        block = await client.call("get_block", height=receipt["height"])
        assert tx_id in [t["id"] for t in block["txs"]]
        same = await client.call("get_block", hash=block["hash"])
        assert same["height"] == block["height"]
        info = await client.call("get_device", id=device.public.hex())
        assert info["last_seq"] == 1 and info["stream"] == stream.public.hex()
        assert info["profile_hash"] == kit.PROFILE.hex()
        # the block and the receipt carry the signed body, never the sealed payload beside it
        sent = decode_tx(bytes.fromhex(sent_raw))
        assert sent.sidecar.hex() not in json.dumps([block, receipt])
        assert [t["raw"] for t in block["txs"] if t["id"] == tx_id] == [sent.leaf_bytes.hex()]
        await expect_error(client, 1030, "get_block", height=10**9)
        await expect_error(client, 1030, "get_receipt", id="00" * 32)
        await expect_error(client, -32602, "get_block", height=1, hash="00" * 32)


async def test_block_subscriptions_per_connection_are_capped(running_node):
    rn = running_node
    async with open_client(rn.url) as client:
        for _ in range(MAX_SUBSCRIPTIONS):
            assert await client.call("subscribe_blocks") == "blocks"
        held = len(rn.services.feed._subscribers)
        message = await expect_error(client, TOO_MANY_SUBSCRIPTIONS, "subscribe_blocks")
        assert message == (f"this connection holds {MAX_SUBSCRIPTIONS} subscriptions, the limit; "
                           "use another connection")
        assert len(rn.services.feed._subscribers) == held  # the refused one holds no queue
    async with open_client(rn.url) as other:  # the limit is per connection
        assert await other.call("subscribe_blocks") == "blocks"


async def test_a_binary_frame_of_nested_arrays_is_refused_by_its_depth(running_node):
    async with open_websocket_url(running_node.url) as ws:
        await ws.send_message(codec.encode([9, [[[]] * 400] * 1000]))
        with trio.fail_after(5):
            reply = codec.decode(await ws.get_message())
        assert reply == [9, [[NESTED_TOO_DEEP, "frame nests arrays deeper than the limit of 2: "
                              "it must be [request_id, [tx, ...]], each tx a byte string"]]]
